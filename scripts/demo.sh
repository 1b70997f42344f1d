#!/usr/bin/env bash
# The main job: build berth, start berthd, attach and run the bundled example service, show its
# status and logs. Run as root on Debian 12. berthd keeps running afterwards; a re-run reuses it
# and replaces the example. `scripts/demo.sh stop` stops the example, detaches it and ends berthd.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "berth: the demo needs root (it starts berthd, which starts berth-helper)" >&2; exit 1; }
bin="$PWD/target/debug"
runtime=/run/berth state=/var/lib/berth
# Root's own file, outside the directories berthd's user owns.
pidfile=/run/berth-demo.pid
export BERTH_SOCKET="$runtime/io.berth.Manager"

if [ "${1:-}" = stop ]; then
  "$bin/berth" detach --now hello 2>/dev/null || true
  if [ -s "$pidfile" ] && pid=$(cat "$pidfile") && kill "$pid" 2>/dev/null; then
    # berth-helper exits with berthd; wait for both so a re-run finds the lock free.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "berthd ($pid) stopped"
  else
    echo "no demo berthd running"
  fi
  rm -f "$pidfile"
  exit 0
fi

scripts/setup-debian.sh
cargo build --workspace --quiet
if ! "$bin/berth" list >/dev/null 2>&1; then
  mkdir -p "$state"
  nohup "$bin/berthd" --runtime-dir "$runtime" --state-dir "$state" >/var/log/berthd.log 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 100); do "$bin/berth" list >/dev/null 2>&1 && break; sleep 0.1; done
fi
# A re-run replaces the example: stop and detach the old one before rebuilding its image.
"$bin/berth" detach --now hello >/dev/null 2>&1 || true
scripts/build-example-image.sh "$state/images/hello"
set -x
"$bin/berth" image list
"$bin/berth" attach hello
"$bin/berth" start hello
{ set +x; } 2>/dev/null
# `status` exits 3 while the unit is not active: give it a moment to print its first lines.
for _ in $(seq 50); do "$bin/berth" is-active --quiet hello && break; sleep 0.1; done
sleep 0.5
set -x
"$bin/berth" status hello
"$bin/berth" logs hello -n 5
"$bin/berth" --json list
{ set +x; } 2>/dev/null
echo
echo "berthd is running (log: /var/log/berthd.log). Try: $bin/berth logs -f hello"
echo "Stop the example and berthd with: scripts/demo.sh stop"
