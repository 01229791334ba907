#!/usr/bin/env bash
# The demo: builds if needed, starts a supervisor with the example pool, sends good and crashing
# jobs, prints every outcome with its evidence, and stops the supervisor.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -x "$root/build/bulkhead" ]]; then
  echo "bulkhead demo: first run: installing Debian packages and compiling (a few minutes)" >&2
fi
"$root/scripts/build.sh"
exec /usr/bin/python3 "$root/scripts/demo.py" "$@"
