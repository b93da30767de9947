#!/usr/bin/env bash
# Packs what the end-to-end tests run into DIR, for a machine without cargo (the lent GPU
# machine): the e2e test binary, the layer and its manifest, the workload and the CLI (release).
# There: VKDIRTY_E2E_NO_BUILD=1 VKDIRTY_E2E_BIN_DIR=DIR DIR/e2e [TEST NAME] --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:?usage: scripts/pack-e2e.sh DIR}"
cargo build --release -p vkdirty -p vkdirty-layer -p vkdirty-workload --bins --lib
test_bin=$(cargo test --release -p vkdirty --test e2e --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\/e2e-[0-9a-f]*\)".*/\1/p' | tail -1)
[ -x "$test_bin" ] || { echo "pack-e2e.sh: e2e test binary not found" >&2; exit 1; }
mkdir -p "$dir"
cp "$test_bin" "$dir/e2e"
cp target/release/libVkLayer_vkdirty.so target/release/VkLayer_vkdirty.json \
   target/release/vkdirty target/release/vkdirty-workload "$dir/"
# Debug info stays here; the carried copies stay small.
if command -v strip >/dev/null; then
    strip --strip-debug "$dir/e2e" "$dir/libVkLayer_vkdirty.so" "$dir/vkdirty" "$dir/vkdirty-workload"
fi
echo "packed into $dir: $(cd "$dir" && ls | tr '\n' ' ')"
