#!/usr/bin/env bash
# The policy core and the frame codec stay pure (docs/design.md, "Layers"): standard library only, no OS,
# socket, thread or Asio headers, no clock reads, no environment, no streams. The core takes `now`
# as a parameter; the shell owns the clock and the OS. Comments are ignored (they may name what
# is forbidden). Usage: check-layers.sh [ROOT]  (default: this repository; tests pass a copy).
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}

# Forbidden #includes: OS headers, Asio/Boost, threads and their primitives, file and console I/O.
headers='<(sys/|linux/|unistd\.h|fcntl\.h|poll\.h|signal\.h|csignal|netinet/|arpa/|netdb\.h|'
headers+='pthread\.h|time\.h|ctime|thread>|mutex>|shared_mutex>|condition_variable>|future>|'
headers+='semaphore>|stop_token>|fstream>|iostream>|random>)|[<"](boost/|asio)'
# Forbidden code: reading a clock, the environment, sockets, threads, sleeping.
calls='(\bnow|\bclock_gettime|\bgettimeofday|\bgetenv|\bsecure_getenv|\bsocket|\bsleep|'
calls+='\busleep|\bnanosleep)[[:space:]]*\(|std::(this_)?thread\b|\bsystem_clock\b|'
calls+='\bsteady_clock[[:space:]]*::[[:space:]]*now|std::(cout|cerr|clog)\b'

cd "$root"
files=$(find src/core src/proto -type f \( -name '*.h' -o -name '*.cc' \) 2>/dev/null | sort || true)
[[ -n "$files" ]] || exit 0
# Every line as file:number:code, with // comments and one-line /* */ comments dropped.
# shellcheck disable=SC2086
code=$(grep -nH '' $files | sed -E 's://.*$::; s:/\*.*\*/::g')
where='^[^:]+:[0-9]+:'

status=0
bad=$(grep -E "$where[[:space:]]*#[[:space:]]*include[[:space:]]*($headers)" <<<"$code" || true)
if [[ -n "$bad" ]]; then
  echo "layer check: src/core and src/proto must not include OS, thread, I/O or Asio headers:" >&2
  echo "$bad" >&2
  status=1
fi
bad=$(grep -E "$calls" <<<"$code" | grep -vE "$where[[:space:]]*#" || true)
if [[ -n "$bad" ]]; then
  echo "layer check: src/core and src/proto must not read a clock or the environment, open" \
    "sockets or start threads (the shell does, and passes \`now\` in):" >&2
  echo "$bad" >&2
  status=1
fi
exit $status
