#!/usr/bin/env bash
# Fuzzes the trace reader for a given time (default 60 s): scripts/fuzz.sh [SECONDS] [extra libFuzzer args]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi
# Seed the corpus with real traces (small ones written by the tests, when present).
corpus=fuzz/corpus/reader
mkdir -p "$corpus"
if compgen -G "target/tmp/trace-tests/*cli.vkd" >/dev/null; then
    for f in target/tmp/trace-tests/*cli.vkd; do
        [ "$(stat -c %s "$f")" -le 65536 ] && cp -n "$f" "$corpus/" || true
    done
fi
exec cargo +nightly fuzz run reader "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 "$@"
