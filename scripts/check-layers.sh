#!/usr/bin/env bash
# The policy core and the frame codec stay pure: no OS, socket or Asio headers (STYLE.md point 1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bad=$(grep -nE '#include <(sys/|unistd|fcntl|poll|boost/|netinet|arpa/|pthread)' \
  "$root"/src/core/* "$root"/src/proto/* || true)
if [[ -n "$bad" ]]; then
  echo "layer check: src/core and src/proto must not include OS or Asio headers:" >&2
  echo "$bad" >&2
  exit 1
fi
