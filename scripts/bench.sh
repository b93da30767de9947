#!/usr/bin/env bash
# Capture-overhead benchmarks: vkdirty (each backend) against no layer and gfxreconstruct 0.9.18
# (page_guard, unassisted, and assisted below vkdirty, which hands it the dirty pages: "gfxr:
# assisted+vkdirty"; each gfxreconstruct capture of the first repetition is replayed), on four
# workloads: streaming upload (tests/stream-bench), the same mapping and unmapping every frame,
# many mapped allocations (manymaps: N = 1, 100, 1,000, 4,000 persistently mapped 64 KiB
# allocations, 4 of them written per frame), and vkcube under Xvfb; with --workloads twoqueue, one
# and two threads each submitting on its own queue (the "Two queues, two threads" table;
# BENCH_TWOQUEUE_BASELINE=<layer dir>:<label> runs another build of the layer beside this one). Writes the raw runs to
# docs/bench-results/<machine>.jsonl and the "Capture overhead" section of docs/benchmarks.md
# (only the text between its markers; other sections of that file are left alone).
#
# Usage (on a Debian 12 machine; installs gfxreconstruct, vulkan-tools, xvfb when missing):
#   scripts/bench.sh                 # full run, ~10-20 min on 2 cores with lavapipe
#   scripts/bench.sh --quick         # a few minutes
#   scripts/bench.sh --render-only   # rebuild docs/benchmarks.md from docs/bench-results/*.jsonl
# Options: --machine NAME (results file name and table heading; default "dev-lavapipe"),
#   --workloads stream,map,manymaps,vkcube[,twoqueue]  --configs none,vkdirty:async-wp,gfxr:page_guard,... (run in this order)
#   --backends async-wp,shadow,...  --reps N (cases above 16 MiB run once unless --all-reps)
#   --frames N  --manymaps-frames N (default 3000)  --max-size-mib N  --append
#   --cases "256 MiB random 10%,16 MiB ring 1%"
#   --results FILE  --doc FILE  --no-doc  --no-install
#
# On a machine without apt or cargo (the NVIDIA H100 device machine), carry prebuilt files:
#   here:  scripts/bench.sh --pack .bench-pack      # builds release, copies binaries, the vkdirty
#          echo /.bench-pack/ >> .git/info/exclude  # and gfxreconstruct layers with manifests, and
#                                                   # libvulkan/liblz4/... into .bench-pack/
#   there (carry [".bench-pack"]):
#          export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
#          scripts/bench.sh --no-install --prebuilt .bench-pack --machine nvidia-h100 \
#              --workloads stream,manymaps --results $OUT/nvidia-h100.jsonl --no-doc
#   then here: cp <fetched>/nvidia-h100.jsonl docs/bench-results/ && scripts/bench.sh --render-only
#   collection cost by number of regions, kernel scan against bookkeeping (no driver), there:
#          .bench-pack/bin/guard-bench --regions 1,100,1000,4000 > $OUT/guard-many.md
#   gfxreconstruct assisted + vkdirty against page_guard (1-10 % dirty), there:
#          scripts/bench.sh --no-install --prebuilt .bench-pack --machine nvidia-h100-gfxr --workloads stream \
#              --backends host-import,shadow-wp \
#              --configs none,vkdirty:host-import,vkdirty:shadow-wp,gfxr:page_guard,gfxr:assisted+vkdirty \
#              --cases "16 MiB ring 1%,16 MiB ring 10%,16 MiB random 1%,16 MiB random 10%,256 MiB ring 1%,256 MiB random 1%,256 MiB random 10%" \
#              --results $OUT/nvidia-h100-gfxr.jsonl --no-doc
#   (named in --configs only: gfxr:assisted, gfxreconstruct's floor: no vkdirty, the application
#   flushing exactly what it wrote; gfxr:assisted+vkdirty:shadow-wp, ...+predict, ...+trace;
#   BENCH_GFXR_BASELINE=<layer dir>:<label> adds each chosen combination with another build)
# Carried libraries are used only where the machine lacks them (checked with ldconfig).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

quick=0 install=1 prebuilt="" pack="" machine="dev-lavapipe" results="" doc="docs/benchmarks.md"
render_only=0 no_doc=0 append=0
pass=()
while (($#)); do
    case "$1" in
        --quick) quick=1; pass+=(--quick) ;;
        --all-reps) pass+=(--all-reps) ;;
        --no-install) install=0 ;;
        --prebuilt) prebuilt="$(cd "$2" && pwd)"; shift ;;
        --pack) pack="$2"; shift ;;
        --machine) machine="$2"; shift ;;
        --results) results="$2"; shift ;;
        --doc) doc="$2"; shift ;;
        --no-doc) no_doc=1 ;;
        --render-only) render_only=1 ;;
        --append) append=1 ;;
        --workloads|--configs|--backends|--reps|--frames|--manymaps-frames|--max-size-mib|--vkcube-frames|--timeout|--cases)
            pass+=("$1" "$2"); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

render() {
    local files=() f
    for f in docs/bench-results/*.jsonl; do [ -e "$f" ] && files+=("$f"); done
    # A results file kept elsewhere (--results) is rendered too.
    if [ -n "$results" ] && [ -e "$results" ]; then
        case " ${files[*]} " in *" $results "*) ;; *) files+=("$results") ;; esac
    fi
    ((${#files[@]})) || { echo "bench.sh: no results in docs/bench-results/" >&2; exit 1; }
    python3 scripts/bench.py render --doc "$doc" "${files[@]}"
}
if ((render_only)); then render; exit 0; fi

if ((install)); then
    need=()
    for pkg in gfxreconstruct vulkan-tools xvfb xauth libvulkan1 mesa-vulkan-drivers python3; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if ((${#need[@]})); then
        echo "installing: ${need[*]}"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
    fi
fi

build() {
    cargo build --release -p vkdirty-stream-bench -p vkdirty-layer -p vkdirty --bins --lib
}

# Copies a shared library (by soname, as this machine resolves it) into $1.
copy_lib() {
    local path
    # awk reads to the end: an early `exit` would kill ldconfig with SIGPIPE (141 under pipefail).
    path="$(ldconfig -p | awk -v n="$2" '$1 == n && /x86-64/ && !found { print $NF; found = 1 }')"
    if [ -n "$path" ]; then cp -L "$path" "$1/$2"; else echo "pack: $2 not found here, not carried" >&2; fi
}

if [ -n "$pack" ]; then
    build
    rm -rf "$pack"; mkdir -p "$pack"/{bin,layer,gfxr,lib}
    for b in vkdirty-stream-bench vkdirty guard-bench; do
        cp target/release/$b "$pack/bin/" && strip "$pack/bin/$b" 2>/dev/null || true
    done
    cp target/release/libVkLayer_vkdirty.so target/release/VkLayer_vkdirty.json "$pack/layer/"
    strip "$pack/layer/libVkLayer_vkdirty.so" 2>/dev/null || true
    g=/usr/share/vulkan/explicit_layer.d/VkLayer_gfxreconstruct.json
    if [ -f "$g" ]; then
        # The system manifest names the library bare (found by the loader's search path): point it
        # at the copy beside it instead.
        sed 's|"library_path": *"[^"]*"|"library_path": "./libVkLayer_gfxreconstruct.so"|' "$g" > "$pack/gfxr/VkLayer_gfxreconstruct.json"
        cp "$(ldconfig -p | awk '$1 == "libVkLayer_gfxreconstruct.so" && !found { print $NF; found = 1 }')" "$pack/gfxr/" 2>/dev/null \
            || cp /usr/lib/x86_64-linux-gnu/libVkLayer_gfxreconstruct.so "$pack/gfxr/"
        cp /usr/bin/gfxrecon-info "$pack/bin/" 2>/dev/null || true
        # Each gfxreconstruct capture of the run is replayed once, to check it.
        cp /usr/bin/gfxrecon-replay "$pack/bin/" 2>/dev/null || true
    else
        echo "pack: gfxreconstruct not installed here, not carried" >&2
    fi
    for l in libvulkan.so.1 liblz4.so.1 libzstd.so.1 libz.so.1 libGLdispatch.so.0 libGLX.so.0 libEGL.so.1; do
        copy_lib "$pack/lib" "$l"
    done
    # The commit the binaries were built from: the machine that runs them may see another checkout.
    git rev-parse --short HEAD > "$pack/COMMIT" 2>/dev/null || true
    du -sh "$pack"
    echo "packed into $pack; carry it and run: scripts/bench.sh --no-install --prebuilt $pack --machine NAME --workloads stream,manymaps"
    exit 0
fi

args=()
if [ -n "$prebuilt" ]; then
    [ -x "$prebuilt/bin/vkdirty-stream-bench" ] || { echo "bench.sh: $prebuilt/bin/vkdirty-stream-bench missing" >&2; exit 1; }
    args+=(--stream-bench "$prebuilt/bin/vkdirty-stream-bench")
    [ -x "$prebuilt/bin/vkdirty" ] && [ -f "$prebuilt/layer/VkLayer_vkdirty.json" ] \
        && args+=(--vkdirty "$prebuilt/bin/vkdirty" --layer-dir "$prebuilt/layer")
    if [ -f "$prebuilt/gfxr/VkLayer_gfxreconstruct.json" ]; then args+=(--gfxr-layer-dir "$prebuilt/gfxr"); else args+=(--no-gfxr); fi
    [ -x "$prebuilt/bin/gfxrecon-replay" ] && args+=(--gfxr-replay "$prebuilt/bin/gfxrecon-replay")
    [ -s "$prebuilt/COMMIT" ] && export VKDIRTY_BENCH_COMMIT="$(cat "$prebuilt/COMMIT")"
    # Carried libraries only where this machine has none of that name.
    overlay="$(mktemp -d)"; trap 'rm -rf "$overlay"' EXIT
    for l in "$prebuilt"/lib/*; do
        [ -e "$l" ] || continue
        ldconfig -p | awk '{print $1}' | grep -qx "$(basename "$l")" || ln -s "$l" "$overlay/"
    done
    args+=(--lib-dir "$overlay")
else
    command -v cargo >/dev/null || { echo "bench.sh: cargo not found; use --prebuilt DIR (see --help)" >&2; exit 1; }
    build
    args+=(--stream-bench target/release/vkdirty-stream-bench --vkdirty target/release/vkdirty --layer-dir target/release)
    [ -f /usr/share/vulkan/explicit_layer.d/VkLayer_gfxreconstruct.json ] || args+=(--no-gfxr)
fi
command -v vkcube >/dev/null && args+=(--vkcube "$(command -v vkcube)")

mkdir -p docs/bench-results
results="${results:-docs/bench-results/$machine.jsonl}"
((append)) || : > "$results"
cmd=(python3 scripts/bench.py run "${args[@]}" --results "$results" --machine "$machine" "${pass[@]}")
# vkcube needs an X server: the whole run goes under one Xvfb (the stream workloads ignore it).
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
    xvfb-run -a -s "-screen 0 1024x768x24" "${cmd[@]}"
else
    "${cmd[@]}"
fi
echo "results: $results"
((no_doc)) || render
