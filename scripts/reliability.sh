#!/usr/bin/env bash
# Repeats the fault-injection tests to give the figures of docs/reliability.md:
#   scripts/reliability.sh [RUNS]        (default 20; the random-damage test runs RUNS x 100)
# Each line: the test, runs, failures. Needs root for the tmpfs disk-full case (as in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
cargo build --quiet --workspace --bins --lib || exit 1
bin() { cargo test --quiet -p vkdirty --test "$1" --no-run --message-format=json 2>/dev/null |
    grep '"kind":\["test"\]' | grep "\"name\":\"$1\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1; }
total_fail=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
repeat() { # test-binary name filter
    local exe fail=0
    exe="$(bin "$1")"
    for _ in $(seq "$runs"); do
        "$exe" --quiet --exact "$2" >"$log" 2>&1 || { fail=$((fail + 1)); tail -20 "$log" >&2; }
    done
    printf '%-60s runs %4d  failures %d\n' "$1::$2" "$runs" "$fail"
    total_fail=$((total_fail + fail))
}
repeat reliability two_processes_on_one_name_each_get_their_own_trace
repeat reliability symlink_fifo_and_refuse_at_the_trace_name
repeat reliability disk_full_mid_block_on_tmpfs
repeat trace_file racing_writers_never_share_a_file
repeat trace_file a_fifo_never_blocks_and_is_never_written
repeat trace_writer dev_full_reports_one_error_and_stops_blocking
repeat trace_salvage damaged_block_corpus
repeat reliability forked_child_writes_mapped_memory_on_every_backend
repeat reliability application_imported_host_memory_is_tracked
repeat reliability memory_is_given_back_after_the_application_frees_it
exe="$(bin trace_salvage)"
VKDIRTY_STRESS_RUNS=$((runs * 100)) "$exe" --exact random_damage_loses_only_damaged_blocks --nocapture 2>&1 |
    grep -E "^random damage" || total_fail=$((total_fail + 1))
exit $((total_fail > 0))
