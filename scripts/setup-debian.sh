#!/usr/bin/env bash
# Installs what berth's build, demo and tests need on Debian 12, and creates the berth user.
# Idempotent; run as root.
set -euo pipefail
# systemd: systemd-analyze (the security oracle), systemd-creds (encrypted credentials),
# systemd-journald and journalctl (log forwarding), systemd-socket-activate (berthd.socket).
# debootstrap: the test kit's images of stock Debian services (tests/src/debian_images.rs).
packages=(busybox-static squashfs-tools erofs-utils e2fsprogs bubblewrap util-linux fdisk gcc libc6-dev file python3 tar gzip zstd systemd debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import varlink' 2>/dev/null || python3 -m pip install -q --break-system-packages varlink 2>/dev/null \
  || python3 -m pip install -q varlink
getent passwd berth >/dev/null || useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin berth
