#!/usr/bin/env bash
# The test command: setup, format and lint checks, then every test (root required).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "berth: the tests need root (namespaces, mounts, the berth user)" >&2; exit 1; }
scripts/setup-debian.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet
cargo test --workspace
