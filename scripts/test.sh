#!/usr/bin/env bash
# The test command: setup, format and lint checks, then every test (root required).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "berth: the tests need root (namespaces, mounts, the berth user)" >&2; exit 1; }
scripts/setup-debian.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The release build as shipped (static CLI) and a short run of each benchmark, so neither rots.
# Their figures are not checked: benchmarks are read by people, not asserted (DESIGN.md §9).
bench_status=0
if [ "$status" = 0 ]; then
  { scripts/build-release.sh &&
    BERTH_BENCH_RUNS=20 cargo bench --quiet -p berth-integration --bench start_latency &&
    cargo bench --quiet -p berth-integration --bench control_plane &&
    BERTH_BENCH_RUNNING=100 cargo bench --quiet -p berth-integration --bench scale &&
    BERTH_BENCH_MB=16 cargo bench --quiet -p berth-integration --bench log_throughput &&
    BERTH_BENCH_SECONDS=2 BERTH_BENCH_HOSTILE=2 BERTH_BENCH_PARTIAL_CONNS=4 \
      cargo bench --quiet -p berth-integration --bench hostile_clients &&
    BERTH_BENCH_RUNS=3 BERTH_BENCH_BIG_MB=100 \
      cargo bench --quiet -p berth-integration --bench attach_cost &&
    BERTH_BENCH_RUNS=20 cargo bench --quiet -p berth-integration --bench restart_latency &&
    BERTH_BENCH_RUNS=5 cargo bench --quiet -p berth-integration --bench redis_start; } ||
    bench_status=$?
fi
# One closing line for the whole run (cargo prints one per test binary, the last often 0 doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$bench_status" = 0 ] || echo "berth: the release build or a benchmark failed (exit $bench_status)" >&2
[ "$status" = 0 ] || exit "$status"
exit "$bench_status"
