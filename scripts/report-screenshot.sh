#!/usr/bin/env bash
# Renders a `vkdirty report` HTML page to a PNG in headless Chromium (Debian's chromium package).
#   scripts/report-screenshot.sh REPORT.html OUT.png [WIDTH] [HEIGHT]
# The page is self-contained, so Chromium runs with networking off.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTH] [HEIGHT]" >&2
    exit 2
fi
html=$(realpath "$1")
out=$(realpath -m "$2")
width=${3:-1360}
height=${4:-1800}
browser=""
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null; then browser=$b; break; fi
done
if [ -z "$browser" ]; then
    echo "$0: no chromium found (apt-get install chromium)" >&2
    exit 1
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: Chromium refuses to run its sandbox as root (CI runs as root).
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --proxy-server="127.0.0.1:9" --window-size="$width,$height" --screenshot="$out" \
    "file://$html" >/dev/null 2>"$profile/log" || { cat "$profile/log" >&2; exit 1; }
[ -s "$out" ] || { echo "$0: chromium wrote no screenshot" >&2; cat "$profile/log" >&2; exit 1; }
echo "wrote $out"
