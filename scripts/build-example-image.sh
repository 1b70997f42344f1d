#!/usr/bin/env bash
# Builds the example portable service image (a directory) from busybox-static.
# Usage: build-example-image.sh DEST_DIR
set -euo pipefail
src="$(cd "$(dirname "$0")/../examples/hello" && pwd)"
dest="$1"
rm -rf "$dest"
mkdir -p "$dest"/{bin,usr/bin,etc,usr/lib/systemd/system,tmp,proc,dev,run,sys,var/tmp}
cp /bin/busybox "$dest/bin/busybox"
for applet in sh echo cat sleep id pwd touch ls env; do ln -sf busybox "$dest/bin/$applet"; done
install -m 0644 "$src/os-release" "$dest/etc/os-release"
install -m 0755 "$src/hello" "$dest/usr/bin/hello"
install -m 0644 "$src/hello.service" "$dest/usr/lib/systemd/system/hello.service"
chmod 1777 "$dest/tmp" "$dest/var/tmp"
chmod -R a+rX "$dest"
