#!/usr/bin/env bash
# Runs the workload under each backend on whatever Vulkan driver is installed, checks every
# trace against the workload's ground truth with `vkdirty check-sidecar`, and prints one
# markdown row per backend for docs/platforms.md.
#
# Usage: scripts/platform-check.sh [--prebuilt DIR] [--out DIR] [--frames N] [--size S]
#                                  [--backends "auto shadow-wp shadow full"] [-- WORKLOAD ARGS]
# DIR holds vkdirty, vkdirty-workload, libVkLayer_vkdirty.so and VkLayer_vkdirty.json (default:
# target/release after a build). Works with only those files carried to a machine: no cargo.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/target/release"; out="$(mktemp -d)"; frames=120; size=4M
backends="auto async-wp host-import shadow-wp shadow full"
extra=()
while (($#)); do
    case "$1" in
        --prebuilt) bin="$(cd "$2" && pwd)"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --frames) frames="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --backends) backends="$2"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ ! -x "$bin/vkdirty-workload" ]; then
    (cd "$here" && cargo build --release --workspace --bins --lib)
fi
mkdir -p "$out"
wl=("$bin/vkdirty-workload" --frames "$frames" --size "$size" --host-types spread --memory-only "${extra[@]}")

now() { date +%s.%N; }
# Baseline: no layer.
t0=$(now); "${wl[@]}" > "$out/none.log" 2>&1 || { cat "$out/none.log"; echo "workload fails without the layer" >&2; exit 1; }
t1=$(now); base=$(python3 -c "print($t1 - $t0)")
echo "no layer: ${base}s for $frames frames ($(tail -1 "$out/none.log"))" >&2

printf '| backend asked | backends used (mappings) | exact | app check | ms/frame over no layer | trace bytes | dirty bytes / pages written |\n'
printf '|---|---|---|---|---|---|---|\n'
fail=0
for b in $backends; do
    trace="$out/$b.vkd"; sc="$out/$b.sidecar"; rm -f "$trace" "$sc"
    t0=$(now)
    app=pass
    VK_ADD_LAYER_PATH="$bin" VK_INSTANCE_LAYERS=VK_LAYER_VKDIRTY_capture VKDIRTY_BACKEND="$b" \
        VKDIRTY_TRACE_FILE="$trace" "${wl[@]}" --sidecar "$sc" > "$out/$b.log" 2>&1 || app=FAIL
    t1=$(now)
    cost=$(python3 -c "print(($t1 - $t0 - $base) * 1000 / $frames)")
    check=$("$bin/vkdirty" check-sidecar --json "$trace" "$sc" 2> "$out/$b.check.err") && exact=yes || exact=NO
    echo "$check" > "$out/$b.check.json"
    used=$(echo "$check" | python3 -c 'import json,sys
try: d=json.load(sys.stdin)
except Exception: print("?"); sys.exit()
b=d.get("backends",{}); print(", ".join(f"{k} ({v})" for k,v in sorted(b.items())) if isinstance(b,dict) else b)')
ratio=$(echo "$check" | python3 -c 'import json,sys
try: d=json.load(sys.stdin)
except Exception: print("?"); sys.exit()
r=d.get("dirty_ratio"); print(f"{r:.3f}" if isinstance(r,(int,float)) else r)')
    bytes=$(stat -c %s "$trace" 2>/dev/null || echo 0)
    printf '| %s | %s | %s | %s | %.3f | %s | %s |\n' "$b" "$used" "$exact" "$app" "$cost" "$bytes" "$ratio"
    [ "$exact" = yes ] && [ "$app" = pass ] || fail=1
done
echo "logs and traces in $out" >&2
exit $fail
