#!/usr/bin/env bash
# Captures the built-in workload on Mesa lavapipe and prints the trace summary.
# Installs the Vulkan runtime and lavapipe first when missing (Debian/Ubuntu; root or sudo).
#   scripts/demo.sh [--backend B] [-o FILE] [-- WORKLOAD ARGS...]
# PROFILE=dev builds the debug profile instead of release.
set -euo pipefail
cd "$(dirname "$0")/.."

backend="auto"
out="vkdirty-demo.vkd"
workload_args=()
while (($#)); do
    case "$1" in
        --backend) backend="$2"; shift 2 ;;
        -o) out="$2"; shift 2 ;;
        --) shift; workload_args=("$@"); break ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

need=()
for pkg in libvulkan1 mesa-vulkan-drivers; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
command -v cc >/dev/null || need+=(gcc libc6-dev)
if ((${#need[@]})); then
    echo "demo.sh: installing ${need[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "demo.sh: need root or sudo to install ${need[*]}" >&2; exit 1; }
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "demo.sh: cargo not found: install Rust 1.80 or newer (rustup), then run this again" >&2
    exit 1
fi

profile="${PROFILE:-release}"
dir="target/$profile"
[ "$profile" = dev ] && dir="target/debug"
echo "demo.sh: building ($profile profile)"
cargo build --profile "$profile" --workspace --bins --lib

if "$dir/vkdirty" --help 2>/dev/null | grep -qw capture; then
    exec "$dir/vkdirty" capture -o "$out" --backend "$backend" -- "$dir/vkdirty-workload" "${workload_args[@]}"
fi
# A CLI without `capture`: the same through the loader's variables.
VK_ADD_LAYER_PATH="$PWD/$dir" VK_INSTANCE_LAYERS=VK_LAYER_VKDIRTY_capture \
    VKDIRTY_TRACE_FILE="$out" VKDIRTY_BACKEND="$backend" \
    "$dir/vkdirty-workload" "${workload_args[@]}"
[ -f "$out" ] || { echo "demo.sh: no trace $out was written: the layer was not loaded" >&2; exit 1; }
exec "$dir/vkdirty" info "$out"
