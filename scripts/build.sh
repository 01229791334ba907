#!/usr/bin/env bash
# Builds bulkhead into build/ (or $BUILD_DIR) and makes the Python package importable by Debian's
# /usr/bin/python3 (a .pth file pointing at python/ in this checkout).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -G Ninja ${CMAKE_ARGS:-} >/dev/null
# Quiet when it works; the compiler's own messages when it does not.
log=$(mktemp)
if ! ninja -C "$build" >"$log" 2>&1; then
  grep -E -A12 'error:|FAILED:' "$log" | head -150 >&2 || tail -n 100 "$log" >&2
  rm -f "$log"
  echo "bulkhead: the build failed (above: ninja's first errors)" >&2
  exit 1
fi
rm -f "$log"
site=$(/usr/bin/python3 -c 'import site, sys; print([p for p in site.getsitepackages() if p.startswith("/usr/local")][0])')
mkdir -p "$site"
echo "$root/python" > "$site/bulkhead.pth"
