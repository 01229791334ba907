#!/usr/bin/env bash
# Builds bulkhead into build/ (or $BUILD_DIR). Nothing is written outside the checkout: the
# scripts and tests put python/ on PYTHONPATH themselves, and an install (docs/install.md) puts
# the package where /usr/bin/python3 finds it.
set -euo pipefail
source "$(dirname "$0")/progress.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -G Ninja ${CMAKE_ARGS:-} >/dev/null
# Quiet when it works; the compiler's own messages when it does not.
log=$(mktemp)
if ! ninja -C "$build" 2>&1 | PROGRESS_LOG=$log show_progress "bulkhead: building" '^\['; then
  grep -E -A12 'error:|FAILED:' "$log" | head -150 >&2 || tail -n 100 "$log" >&2
  rm -f "$log"
  echo "bulkhead: the build failed (above: ninja's first errors)" >&2
  exit 1
fi
rm -f "$log"
# Earlier builds wrote a machine-wide .pth pointing at the checkout that built last: remove it.
for pth in /usr/local/lib/python3*/dist-packages/bulkhead.pth; do
  [[ -f "$pth" && "$(cat "$pth")" == "$root/python" ]] && rm -f "$pth"
done
exit 0
