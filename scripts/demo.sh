#!/usr/bin/env bash
# The demo: builds if needed, starts a supervisor with the example pool, sends good and crashing
# jobs, prints every outcome with its evidence, and stops the supervisor.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh"
exec /usr/bin/python3 "$root/scripts/demo.py" "$@"
