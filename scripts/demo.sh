#!/usr/bin/env bash
# The main job: build berth, start berthd, attach and run the bundled example service, show its
# status and logs. Run as root on Debian 12. berthd keeps running afterwards (see the last lines).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "berth: the demo needs root (it starts berthd, which starts berth-helper)" >&2; exit 1; }
scripts/setup-debian.sh
cargo build --workspace --quiet
bin="$PWD/target/debug"
runtime=/run/berth state=/var/lib/berth
export BERTH_SOCKET="$runtime/io.berth.Manager"
if ! "$bin/berth" list >/dev/null 2>&1; then
  mkdir -p "$state"
  nohup "$bin/berthd" --runtime-dir "$runtime" --state-dir "$state" >/var/log/berthd.log 2>&1 &
  for _ in $(seq 100); do "$bin/berth" list >/dev/null 2>&1 && break; sleep 0.1; done
fi
# A re-run replaces the example: stop and detach the old one before rebuilding its image.
"$bin/berth" detach --now hello >/dev/null 2>&1 || true
scripts/build-example-image.sh "$state/images/hello"
set -x
"$bin/berth" image list
"$bin/berth" attach hello
"$bin/berth" start hello
sleep 1
"$bin/berth" status hello
"$bin/berth" logs hello -n 5
"$bin/berth" --json list
set +x
echo
echo "berthd is running (log: /var/log/berthd.log). Try: $bin/berth logs -f hello"
echo "Stop it all with: $bin/berth stop hello; kill \$(pidof berthd)"
