#!/usr/bin/env bash
# Installs what bulkhead needs to build and test, from Debian 12 packages only. Idempotent: does
# nothing when everything is present. `--tests` adds what only the tests use (a browser for the
# dashboard's test), so the demo does not download it.
set -euo pipefail
source "$(dirname "$0")/progress.sh"
packages=(
  g++ cmake ninja-build pkg-config
  libboost-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev libgtest-dev libgmock-dev libsqlite3-dev
  libhiredis-dev
  python3 python3-numpy python3-torch python3-pytest python3-prometheus-client
  python3-joblib python3-sklearn
  python3-fastapi python3-uvicorn python3-multipart python3-django
  python3-celery python3-redis redis-server
  clang-format curl procps
  tmux  # tests/python/test_top.py: bulkhead top in a real terminal
  man-db groff-base
)
if [[ "${1:-}" == "--tests" ]]; then
  packages+=(chromium)  # tests/python/test_dashboard.py: the dashboard in a real headless browser
  packages+=(python3-pytest-xdist)  # .ci/run: the sanitized integration suite on two workers
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bulkhead: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  echo "bulkhead: apt-get update, then ${#missing[@]} package(s) (a few minutes on a fresh machine)" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1 |
    show_progress "bulkhead: apt" '^(Unpacking|Setting up) '

fi
