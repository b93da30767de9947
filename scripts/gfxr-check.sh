#!/usr/bin/env bash
# Replayable captures with gfxreconstruct, checked on vkcube under Xvfb:
#  1. a plain gfxreconstruct page_guard capture of N frames, replayed with --screenshot-all, is the
#     reference;
#  2. `vkdirty capture --gfxr` (gfxreconstruct assisted below vkdirty, which flushes the dirty
#     pages) on every backend auto can pick with gfxreconstruct below: every screenshot identical;
#  3. a page_guard capture taken below vkdirty with every VKDIRTY_BACKEND (auto included): replays
#     without error, every screenshot identical (vkdirty is transparent to the layer below);
#  4. control: assisted mode without vkdirty must NOT match (vkcube never flushes its coherent
#     memory), so the comparison can fail.
# Usage: scripts/gfxr-check.sh [FRAMES]   (default 300; needs gfxreconstruct, vulkan-tools, xvfb)
# VKDIRTY_BIN_DIR: where vkdirty and the layer are [default: target/debug, built if missing].
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
BIN=${VKDIRTY_BIN_DIR:-$PWD/target/debug}
if [ -z "${VKDIRTY_BIN_DIR:-}" ]; then cargo build -q -p vkdirty -p vkdirty-layer; fi
for t in gfxrecon-replay vkcube xvfb-run; do
    command -v "$t" >/dev/null || { echo "gfxr-check: $t is missing (apt-get install gfxreconstruct vulkan-tools xvfb)" >&2; exit 2; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gfxr-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
X=(xvfb-run -a -s "-screen 0 640x480x24")
# Only this script's variables reach the application.
for v in $(env | grep -o '^\(VKDIRTY\|GFXRECON\)_[A-Z_]*' || true); do unset "$v"; done
unset VK_INSTANCE_LAYERS VK_LOADER_DEBUG
export GFXRECON_CAPTURE_FILE_TIMESTAMP=false GFXRECON_LOG_LEVEL=warning

fail=0
# replay NAME: replays $WORK/NAME.gfxr, leaves the screenshots' hashes in $WORK/NAME.md5.
replay() {
    local name=$1 dir="$WORK/$1.shots"
    mkdir -p "$dir"
    if ! "${X[@]}" gfxrecon-replay --screenshot-all --screenshot-dir "$dir" "$WORK/$name.gfxr" >"$WORK/$name.replay.log" 2>&1; then
        echo "FAIL $name: gfxrecon-replay failed:"; tail -5 "$WORK/$name.replay.log"; return 1
    fi
    if grep -q "ERROR" "$WORK/$name.replay.log"; then
        echo "FAIL $name: gfxrecon-replay reported errors:"; grep ERROR "$WORK/$name.replay.log" | head -5; return 1
    fi
    (cd "$dir" && md5sum -- * | sort -k2) >"$WORK/$name.md5"
    rm -rf "$dir"
}
# same NAME: compares NAME's screenshots with the reference's.
same() {
    local got want identical
    got=$(wc -l <"$WORK/$1.md5"); want=$(wc -l <"$WORK/ref.md5")
    identical=$(join -j 2 -o 1.1,2.1 "$WORK/ref.md5" "$WORK/$1.md5" | awk '$1 == $2' | wc -l)
    if [ "$got" -eq "$want" ] && [ "$identical" -eq "$want" ]; then
        echo "PASS $1: $identical/$want frames identical"
    else
        echo "FAIL $1: $identical/$want frames identical ($got screenshots)"; return 1
    fi
}
size() { stat -c %s "$WORK/$1.gfxr"; }

# 1. Reference.
GFXRECON_CAPTURE_FILE="$WORK/ref.gfxr" VK_INSTANCE_LAYERS=VK_LAYER_LUNARG_gfxreconstruct \
    "${X[@]}" vkcube --c "$N" >"$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; exit 1; }
replay ref || exit 1
echo "reference: gfxreconstruct page_guard, $N frames, $(wc -l <"$WORK/ref.md5") screenshots, $(size ref) bytes"
[ "$(wc -l <"$WORK/ref.md5")" -eq "$N" ] || { echo "FAIL: expected $N screenshots"; exit 1; }

# 2. vkdirty capture --gfxr, every backend auto can pick with gfxreconstruct below (host-import
# is off there).
for b in auto async-wp shadow-wp shadow full; do
    name="vkdirty-gfxr-$b"
    if ! "${X[@]}" "$BIN/vkdirty" capture --layer-dir "$BIN" --backend "$b" --no-trace --gfxr "$WORK/$name.gfxr" \
        -- vkcube --c "$N" >"$WORK/$name.log" 2>&1; then
        echo "FAIL $name: capture failed:"; tail -5 "$WORK/$name.log"; fail=1; continue
    fi
    { replay "$name" && same "$name" && echo "     $(grep -o '[0-9]* fill-memory commands holding [0-9]* bytes' "$WORK/$name.log"), $(size "$name") bytes"; } || fail=1
done

# 3. page_guard below vkdirty with every backend.
for b in auto async-wp shadow-wp shadow full assisted host-import; do
    name="page-guard-below-$b"
    if ! GFXRECON_CAPTURE_FILE="$WORK/$name.gfxr" VK_ADD_LAYER_PATH="$BIN" \
        VK_INSTANCE_LAYERS=VK_LAYER_VKDIRTY_capture:VK_LAYER_LUNARG_gfxreconstruct \
        VKDIRTY_BACKEND="$b" VKDIRTY_TRACE_FILE="$WORK/$name.vkd" \
        "${X[@]}" vkcube --c "$N" >"$WORK/$name.log" 2>&1; then
        echo "FAIL $name: vkcube failed:"; tail -5 "$WORK/$name.log"; fail=1; continue
    fi
    grep -q "capture layer VK_LAYER_LUNARG_gfxreconstruct" "$WORK/$name.log" || [ "$b" != auto ] ||
        { echo "FAIL $name: no log line naming gfxreconstruct below"; fail=1; }
    { replay "$name" && same "$name"; } || fail=1
done

# 4. Control: assisted without vkdirty's flushes must differ.
GFXRECON_CAPTURE_FILE="$WORK/control.gfxr" GFXRECON_MEMORY_TRACKING_MODE=assisted \
    VK_INSTANCE_LAYERS=VK_LAYER_LUNARG_gfxreconstruct "${X[@]}" vkcube --c "$N" >"$WORK/control.log" 2>&1
if replay control && same control >/dev/null; then
    echo "FAIL control: assisted without vkdirty replays identical; the comparison proves nothing"; fail=1
else
    echo "PASS control: assisted without vkdirty differs ($(join -j 2 -o 1.1,2.1 "$WORK/ref.md5" "$WORK/control.md5" 2>/dev/null | awk '$1 == $2' | wc -l)/$N identical)"
fi
exit $fail
