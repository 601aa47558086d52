#!/usr/bin/env bash
# Soak run: tests/soak.sh [SECONDS]  (default 600). Three simulated hosts under mixed traffic,
# one peer SIGKILLed and restarted half way; prints RSS start/end and drops by reason.
# Needs root. CI runs the same test for a few seconds as part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
cargo build --workspace --release
DNET_SWITCH_BIN="$PWD/target/release/dnet-switch" DNET_SOAK_SECS="$secs" \
  cargo test --release -p dnet-e2e --test soak -- --nocapture
