#!/usr/bin/env bash
# Runs every fuzz target for SECONDS_PER_TARGET seconds (default 20), one after another,
# starting from the committed seeds in fuzz/corpus-seed/<target>/. Exits non-zero if any target
# crashes (or fails to build). Prints the number of executions per target.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]
#
# Environment:
#   FUZZ_TARGETS     space-separated subset of targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER   address (default) | none | leak ... (passed to `cargo fuzz --sanitizer`)
#   FUZZ_ARGS        extra libFuzzer flags, e.g. "-max_len=2048"
#
# Works on stable Rust: cargo-fuzz passes nightly-only -Z flags (-Zsanitizer=address and
# friends) to rustc, which stable accepts when RUSTC_BOOTSTRAP=1 (see fuzz/README.md).
set -euo pipefail

SECS="${1:-20}"
case "$SECS" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
CARGO_FUZZ_VERSION=0.13.2
SANITIZER="${FUZZ_SANITIZER:-address}"
read -r -a EXTRA <<<"${FUZZ_ARGS:-}"

export RUSTC_BOOTSTRAP=1
# The fuzz project is its own workspace with its own target dir (fuzz/target): never build
# into the main workspace's target/ that other builds use.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
cargo fuzz --version

cd "$ROOT"
FUZZ=(cargo fuzz)
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <("${FUZZ[@]}" list --fuzz-dir "$FUZZ_DIR")
fi

echo "== building ${TARGETS[*]} (sanitizer: $SANITIZER)"
if [ -n "${FUZZ_TARGETS:-}" ]; then
    for t in "${TARGETS[@]}"; do
        "${FUZZ[@]}" build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" "$t"
    done
else
    "${FUZZ[@]}" build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" # all in one cargo call
fi

# Run the binaries just built rather than `cargo fuzz run`, which would rebuild each target
# against whatever the source tree holds by then (others may be editing ../dataplane).
BIN_DIR="$FUZZ_DIR/target/$(rustc -vV | sed -n 's/^host: //p')/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0" # as cargo fuzz run
LOGS="$FUZZ_DIR/target/fuzz-logs"
mkdir -p "$LOGS"
passed=0
failed=0
summary=()
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$t"
    mkdir -p "$corpus"
    if [ -d "$FUZZ_DIR/corpus-seed/$t" ]; then
        cp -n "$FUZZ_DIR/corpus-seed/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    log="$LOGS/$t.log"
    echo "== fuzzing $t for ${SECS}s (corpus: fuzz/corpus/$t, $(ls "$corpus" | wc -l) inputs; log: $log)"
    rc=0
    mkdir -p "$FUZZ_DIR/artifacts/$t"
    "$BIN_DIR/$t" -artifact_prefix="$FUZZ_DIR/artifacts/$t/" \
        -max_total_time="$SECS" -timeout=10 -print_final_stats=1 "${EXTRA[@]}" "$corpus" \
        >"$log" 2>&1 || rc=$?
    # libFuzzer ends with "Done N runs in S second(s)"; a crash ends it early, with the count
    # only in "stat::number_of_executed_units: N" (from -print_final_stats).
    runs="$(sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$log" | tail -n1 || true)"
    [ -n "$runs" ] || [ "$rc" -eq 0 ] ||
        runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1 || true)"
    cov="$(sed -n 's/^#[0-9]*[[:space:]]*DONE .*\(cov: [0-9]*\).*\(corp: [^ ]*\).*/\1 \2/p' "$log" | tail -n1 || true)"
    if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
        passed=$((passed + 1))
        line="$(printf '%-9s ok     %12s runs  %s' "$t" "$runs" "$cov")"
    else
        failed=$((failed + 1))
        line="$(printf '%-9s FAILED %12s runs  (exit %s)' "$t" "${runs:-?}" "$rc")"
        echo "---- $t failed (exit $rc); end of $log:"
        grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -n 60
        echo "----"
    fi
    echo "$line"
    summary+=("$line")
done

echo "== fuzz summary (${SECS}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "crash inputs are in fuzz/artifacts/<target>/; reproduce with:"
    echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>"
    ls -l "$FUZZ_DIR"/artifacts/*/ 2>/dev/null || true
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
