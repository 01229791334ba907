#!/usr/bin/env bash
# Every test: C++ unit, simulation and OS tests (ctest), the Python SDK's own tests, and the
# integration suite against a real daemon with real crashing workers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/deps.sh" --tests
"$root/scripts/build.sh"
"$root/scripts/check-layers.sh"
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300
cd "$root"
# The checkout's package for every Python process the tests start (no install needed).
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
# Two suites with their own conftest.py: run them apart so their module names never collide.
/usr/bin/python3 -m pytest -q -p no:cacheprovider python/tests
BULKHEAD_BIN="$build/bulkhead" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/python
