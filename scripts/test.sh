#!/usr/bin/env bash
# Installs what the tests need (when missing) and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# xvfb (and xauth, which xvfb-run needs): the layer smoke test presents frames to an X11 window.
# gfxreconstruct, vulkan-tools (vkcube): tests/gfxr.rs captures and replays with both layers;
# tests/report_cli.rs reports a vkcube trace.
for pkg in libvulkan1 mesa-vulkan-drivers vulkan-validationlayers xvfb xauth gfxreconstruct vulkan-tools; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# Formatting and lints first: they fail in seconds where the tests take minutes.
if command -v rustup >/dev/null; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
    done
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

# The end-to-end tests load the built layer and run the workload binary: build them first.
cargo build --workspace --bins --lib
# The validation layer was installed above: a test that runs under it fails rather than skips
# where it is not found (tests/common/run.rs, need_validation).
VKDIRTY_REQUIRE_LAYERS=1 cargo test --workspace "$@"
# Fault injection, last step: the trace reader under libFuzzer for 60 s, the gfxreconstruct
# capture reader for 20 s (longer runs: scripts/fuzz.sh SECONDS).
VKDIRTY_FUZZ_OPTIONAL=1 bash scripts/fuzz.sh "${VKDIRTY_FUZZ_SECONDS:-60}"
VKDIRTY_FUZZ_OPTIONAL=1 VKDIRTY_FUZZ_TARGET=gfxr bash scripts/fuzz.sh "${VKDIRTY_FUZZ_GFXR_SECONDS:-20}"
