#!/usr/bin/env bash
# Time and peak memory of the trace readers (`vkdirty report`, `info --by`, `export`,
# `dump --diff`) on ~1 GiB traces, against two baselines measured in the same run on the same
# file: `cat FILE > /dev/null` (reading the bytes) and `vkdirty verify` (the reader's own pass:
# every block read, CRC-checked and decoded). Warm page cache; best of --reps runs.
#   scripts/report-bench.sh [--mib N] [--reps R] [--dir DIR] [--workload]
# Traces: trace-synth (2000 allocations, 8 random pages per submit, a frame every 4 submits:
# many submits and allocations) and, with --workload, the built-in workload captured under the
# layer with async-wp (few, large submits).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=1024 reps=3 dir=${TMPDIR:-/tmp}/vkdirty-report-bench workload=0
while (($#)); do
    case $1 in
        --mib) mib=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --workload) workload=1; shift ;;
        *) echo "usage: $0 [--mib N] [--reps R] [--dir DIR] [--workload]" >&2; exit 2 ;;
    esac
done
command -v /usr/bin/time >/dev/null || { echo "$0: needs /usr/bin/time (Debian package time)" >&2; exit 1; }
cargo build --release -q -p vkdirty --bin vkdirty --bin trace-synth
bin=target/release
mkdir -p "$dir"
rm -f "$dir/synth.vkd" "$dir/workload.vkd"
traces=("$dir/synth.vkd")
"$bin/trace-synth" "$dir/synth.vkd" --mib "$mib" --allocs 2000 --pages-per-submit 8 >/dev/null
if ((workload)); then
    cargo build --release -q --workspace --bins --lib
    # ~3.1 MiB of trace per submit at the default size.
    frames=$((mib * 1024 / 3000 + 1))
    "$bin/vkdirty" capture --backend async-wp -o "$dir/workload.vkd" -- "$bin/vkdirty-workload" --frames "$frames" >/dev/null
    traces+=("$dir/workload.vkd")
fi

# best wall seconds and the RSS of that run
measure() {
    local best="" rss=""
    for ((i = 0; i < reps; i++)); do
        /usr/bin/time -f "%e %M" -o "$dir/time" "$@" >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; exit 1; }
        read -r wall kib <"$dir/time"
        if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall rss=$kib; fi
    done
    echo "$best $rss"
}

echo "| trace | size | command | wall s (best of $reps) | peak RSS MiB | wall / verify |"
echo "| --- | --- | --- | --- | --- | --- |"
for t in "${traces[@]}"; do
    size=$(du -m --apparent-size "$t" | cut -f1)
    name=$(basename "$t" .vkd)
    read -r vwall vrss < <(measure "$bin/vkdirty" verify "$t")
    row() {
        printf '| %s | %s MiB | `%s` | %s | %.1f | %.2f |\n' "$name" "$size" "$1" "$2" \
            "$(echo "$3 / 1024" | bc -l)" "$(echo "$2 / $vwall" | bc -l)"
    }
    read -r w r < <(measure cat "$t"); row "cat TRACE (baseline)" "$w" "$r"
    row "vkdirty verify TRACE (baseline)" "$vwall" "$vrss"
    for cmd in "report $t -o $dir/r.html --png $dir/r.png" "info --json --by submit $t" \
        "export $t --format csv -o $dir/x.csv" "export $t --format perfetto -o $dir/x.json" \
        "dump $t --alloc 9 --diff --at-submit 100 --against 200"; do
        # shellcheck disable=SC2086
        read -r w r < <(measure "$bin/vkdirty" $cmd)
        label="vkdirty ${cmd//$t/TRACE}"
        row "${label//$dir\//}" "$w" "$r"
    done
done
