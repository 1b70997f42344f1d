#!/usr/bin/env bash
# Release build of the workspace, with the `berth` CLI linked statically.
#
# Every `berth` command is a new process, so its start-up is part of every command's latency.
# A static glibc binary skips the dynamic loader and libgcc_s: on the 2-core development VM,
# `berth --version` takes 0.40 ms of CPU instead of 0.73 ms. Cargo has no stable per-binary
# rustflags, and crt-static set workspace-wide breaks proc-macro crates, so the CLI is relinked
# here with `cargo rustc`. The CLI resolves no user or host names, so static glibc (no NSS) is
# safe for it. berthd and berth-helper stay dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
cargo rustc --release --quiet -p berth-cli --bin berth -- -C target-feature=+crt-static
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cli="$target_dir/release/berth"
if ! file -L "$cli" | grep -q 'static'; then
  echo "berth: $cli is not statically linked: $(file -L "$cli")" >&2
  exit 1
fi
"$cli" --version >/dev/null
echo "release binaries in $target_dir/release (berth linked statically)"
