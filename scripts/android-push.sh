#!/usr/bin/env bash
# Builds the layer for aarch64-linux-android, pushes it to the device and enables it with adb.
#   scripts/android-push.sh [--package PKG] [--set NAME=VALUE]... [--build-only]
#     --package PKG   the debuggable app to capture: copies the layer into its data directory and
#                     sets enable_gpu_debug_layers / gpu_debug_app / gpu_debug_layers
#     --set N=V       adb shell setprop debug.vkdirty.N V (e.g. --set backend=async-wp)
#     --build-only    build, do not touch a device
# Needs: the Rust target (rustup target add aarch64-linux-android), an NDK (ANDROID_NDK_HOME,
# ANDROID_NDK_ROOT, or the newest under $ANDROID_HOME/ndk), and adb for the push.
# ANDROID_API (default 26) picks the NDK's clang. See docs/android.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-linux-android
LAYER=VK_LAYER_VKDIRTY_capture
LIB=libVkLayer_vkdirty.so
API="${ANDROID_API:-26}"
pkg=""
build_only=0
props=()
while (($#)); do
    case "$1" in
        --package) pkg="$2"; shift 2 ;;
        --set) props+=("$2"); shift 2 ;;
        --build-only) build_only=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "android-push.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for p in "${props[@]}"; do
    [[ "$p" =~ ^[a-z_]+=.+$ ]] || { echo "android-push.sh: --set wants NAME=VALUE, got '$p'" >&2; exit 2; }
done

fail() { echo "android-push.sh: $*" >&2; exit 1; }

# The Rust standard library for the target.
sysroot="$(rustc --print sysroot 2>/dev/null)" || fail "rustc not found"
[ -d "$sysroot/lib/rustlib/$TARGET" ] ||
    fail "Rust target $TARGET is not installed (rustup target add $TARGET); nothing built"

# The NDK's clang drives the link.
ndk="${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-${ANDROID_NDK:-}}}"
if [ -z "$ndk" ] && [ -n "${ANDROID_HOME:-}" ] && [ -d "$ANDROID_HOME/ndk" ]; then
    ndk="$(ls -d "$ANDROID_HOME"/ndk/*/ 2>/dev/null | sort -V | tail -1)"
fi
[ -n "$ndk" ] && [ -d "$ndk" ] || fail "no Android NDK found (set ANDROID_NDK_HOME); nothing built"
bin="$ndk/toolchains/llvm/prebuilt/linux-x86_64/bin"
clang="$bin/${TARGET}${API}-clang"
[ -x "$clang" ] || fail "NDK at $ndk has no $clang (check ANDROID_API=$API); nothing built"

echo "android-push.sh: building $LIB for $TARGET (API $API) with $ndk"
export CARGO_TARGET_AARCH64_LINUX_ANDROID_LINKER="$clang"
export CC_aarch64_linux_android="$clang"
export AR_aarch64_linux_android="$bin/llvm-ar"
cargo build --release --target "$TARGET" -p vkdirty-layer
lib="target/$TARGET/release/$LIB"
[ -f "$lib" ] || fail "build finished but $lib is missing"
echo "android-push.sh: built $lib"
((build_only)) && exit 0

command -v adb >/dev/null || fail "adb not found (Android platform-tools)"
[ "$(adb get-state 2>/dev/null)" = device ] || fail "no device attached (adb get-state)"

adb push "$lib" "/data/local/tmp/$LIB"
adb shell chmod 644 "/data/local/tmp/$LIB"
if [ -n "$pkg" ]; then
    # A debuggable app loads debug layers from its own data directory.
    adb shell run-as "$pkg" cp "/data/local/tmp/$LIB" . ||
        fail "run-as $pkg failed: is the app installed and debuggable?"
    adb shell settings put global enable_gpu_debug_layers 1
    adb shell settings put global gpu_debug_app "$pkg"
    adb shell settings put global gpu_debug_layers "$LAYER"
    echo "android-push.sh: $LAYER enabled for $pkg (restart the app)"
fi
# Rooted or userdebug devices: the loader also reads layers named by debug.vulkan.layers from
# /data/local/debug/vulkan.
if adb shell "mkdir -p /data/local/debug/vulkan && cp /data/local/tmp/$LIB /data/local/debug/vulkan/" 2>/dev/null; then
    echo "android-push.sh: copied to /data/local/debug/vulkan"
fi
adb shell setprop debug.vulkan.layers "$LAYER"
for p in "${props[@]}"; do
    adb shell setprop "debug.vkdirty.${p%%=*}" "${p#*=}"
    echo "android-push.sh: debug.vkdirty.${p%%=*} = ${p#*=}"
done
echo "android-push.sh: done; traces land in /sdcard/Android/data/<package>/files/ unless debug.vkdirty.trace_file says otherwise"
