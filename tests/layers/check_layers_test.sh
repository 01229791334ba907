#!/usr/bin/env bash
# The layer check must pass on this tree and fail on a copy of it with one forbidden thing
# planted in src/core or src/proto: each plant below must be caught on its own, and a forbidden
# word inside a comment must not be.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
check="$repo/scripts/check-layers.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fresh_copy() {
  rm -rf "$tmp/tree"
  mkdir -p "$tmp/tree/src"
  cp -r "$repo/src/core" "$repo/src/proto" "$tmp/tree/src/"
}

fresh_copy
bash "$check" "$tmp/tree" || { echo "FAIL: the unmodified tree is rejected"; exit 1; }

expect_rejected() {  # file, planted line
  fresh_copy
  printf '%s\n' "$2" >>"$tmp/tree/$1"
  if bash "$check" "$tmp/tree" 2>"$tmp/err"; then
    echo "FAIL: not rejected in $1: $2"
    exit 1
  fi
  grep -q "$1" "$tmp/err" || { echo "FAIL: the message does not name $1"; cat "$tmp/err"; exit 1; }
}
expect_accepted() {
  fresh_copy
  printf '%s\n' "$2" >>"$tmp/tree/$1"
  bash "$check" "$tmp/tree" || { echo "FAIL: rejected in $1: $2"; exit 1; }
}

expect_rejected src/core/pool.cc 'auto t = std::chrono::steady_clock::now();'
expect_rejected src/core/pool.cc 'static auto t0 = Clock::now();'
expect_rejected src/core/breaker.h 'inline auto wall() { return std::chrono::system_clock::to_time_t({}); }'
expect_rejected src/proto/frame.cc 'const char* home = getenv("HOME");'
expect_rejected src/proto/frame.cc 'int fd = socket(1, 2, 0);'
expect_rejected src/core/pool.cc 'std::thread worker([] {});'
expect_rejected src/core/pool.cc '#include <unistd.h>'
expect_rejected src/core/pool.cc '#include <sys/socket.h>'
expect_rejected src/core/pool.cc '#include <csignal>'
expect_rejected src/core/pool.cc '#include <signal.h>'
expect_rejected src/core/pool.h '#include <thread>'
expect_rejected src/core/pool.h '#include <mutex>'
expect_rejected src/core/pool.h '#include <condition_variable>'
expect_rejected src/core/pool.h '#include <future>'
expect_rejected src/core/pool.h '#include <fstream>'
expect_rejected src/core/pool.h '#include <iostream>'
expect_rejected src/proto/frame.h '#include <boost/asio.hpp>'
expect_rejected src/proto/frame.h '#include <poll.h>'
expect_rejected src/proto/frame.h '#include <netinet/in.h>'
expect_accepted src/core/pool.cc '// the shell calls steady_clock::now(), never the core'
expect_accepted src/core/pool.cc 'void onTime(Time now);'
echo "layer check: every plant caught"
