#!/usr/bin/env bash
# The long chaos soak: 10,000 jobs (default), ~10% of them abort, segfault, hang, leak or raise.
# Prints the outcome tally and the supervisor's RSS and fd count before and after.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=${1:-10000}
cd "$root"
BULKHEAD_CHAOS_JOBS=$jobs BULKHEAD_CHAOS_LIMIT_S=3600 \
  /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/python/test_chaos.py
