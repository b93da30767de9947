#!/usr/bin/env bash
# Fuzzes a reader for a given time:
#   scripts/fuzz.sh [SECONDS] [extra libFuzzer args]          (default 60 s)
# VKDIRTY_FUZZ_TARGET picks the target: `reader` (default: the trace reader, strict and salvaging,
# checker, replay and summary) or `gfxr` (the gfxreconstruct capture reader and its memory events,
# with the dictionary fuzz/gfxr.dict and the seeds in fuzz/seeds/gfxr).
# Needs a nightly toolchain; uses cargo-fuzz when installed, else builds the libFuzzer target
# with the same instrumentation flags itself. scripts/test.sh runs both with
# VKDIRTY_FUZZ_OPTIONAL=1 (skipped, with a line saying so, where no nightly toolchain exists).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
    if [ "${VKDIRTY_FUZZ_OPTIONAL:-0}" = 1 ]; then
        echo "fuzz: skipped (no nightly toolchain: rustup toolchain install nightly)"
        exit 0
    fi
    echo "fuzz: needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
fuzz_target="${VKDIRTY_FUZZ_TARGET:-reader}"
corpus=fuzz/corpus/$fuzz_target
mkdir -p "$corpus"
extra=()
case "$fuzz_target" in
reader)
    # Seed the corpus with real traces (small ones written by the tests, when present).
    for f in target/tmp/trace-tests/*cli.vkd; do
        [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] && cp -n "$f" "$corpus/" || true
    done
    ;;
gfxr)
    # Seeds: blocks encoded as gfxreconstruct encodes them (src/gfxr/tests.rs), and small
    # captures tests/gfxr.rs wrote, when present.
    cp -n fuzz/seeds/gfxr/* "$corpus/"
    for f in target/tmp/gfxr-*.gfxr; do
        [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 262144 ] && cp -n "$f" "$corpus/" || true
    done
    extra=(-dict=fuzz/gfxr.dict)
    ;;
*)
    echo "fuzz: unknown target $fuzz_target (reader, gfxr)" >&2
    exit 2
    ;;
esac
if cargo fuzz --version >/dev/null 2>&1; then
    exec cargo +nightly fuzz run "$fuzz_target" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        "${extra[@]}" "$@"
fi
# What cargo-fuzz passes (sanitizer coverage for libFuzzer; fuzzing cfg; checks on).
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
(cd fuzz && cargo +nightly build --quiet --release --bin "$fuzz_target" --target "$triple" --target-dir ../target/fuzz)
mkdir -p target/fuzz/artifacts
exec target/fuzz/"$triple"/release/"$fuzz_target" "$corpus" -artifact_prefix=target/fuzz/artifacts/ \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" "$@"
