#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, with ASan+UBSan) and runs each for SECONDS (default 30).
# CI runs the short version; `SECONDS_PER_TARGET=600 scripts/fuzz.sh` is the long one.
# Usage: fuzz.sh [build|run]  (default: both). The targets compile in parallel (each is one
# or a few small files: only what it fuzzes, not the daemon). FUZZ_PARALLEL=N runs N targets at a
# time, each for the full SECONDS_PER_TARGET; use at most one per free core (CI: 2 on 2 cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_DIR:-$root/build-fuzz}
seconds=${SECONDS_PER_TARGET:-30}
parallel=${FUZZ_PARALLEL:-1}
step=${1:-all}
targets=(frame worker_connection config job_entry)

build() {
  command -v clang++ >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; }
  mkdir -p "$out"
  local flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
               -I"$root/src")
  local pids=()
  clang++ "${flags[@]}" "$root/tests/fuzz/frame_fuzz.cc" "$root/src/proto/frame.cc" \
    -o "$out/frame_fuzz" & pids+=($!)
  clang++ "${flags[@]}" "$root/tests/fuzz/worker_connection_fuzz.cc" "$root/src/proto/frame.cc" \
    "$root/src/proto/worker_connection.cc" -o "$out/worker_connection_fuzz" & pids+=($!)
  clang++ "${flags[@]}" -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1 "$root/tests/fuzz/config_fuzz.cc" \
    "$root/src/config/config.cc" "$root/src/config/key_reader.cc" "$root/src/config/units.cc" \
    "$root/src/config/known_keys.cc" "$root/src/config/redis_address.cc" \
    -ltomlplusplus -o "$out/config_fuzz" & pids+=($!)
  clang++ "${flags[@]}" "$root/tests/fuzz/job_entry_fuzz.cc" "$root/src/cluster/job_entry.cc" \
    -o "$out/job_entry_fuzz" & pids+=($!)
  local status=0 pid
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  return $status
}

# Runs one target; its output stays in $out/TARGET.log until the target has finished.
run_one() {
  local target=$1
  mkdir -p "$out/corpus-$target"
  cp -n "$root/tests/fuzz/corpus/$target/"* "$out/corpus-$target/" 2>/dev/null || true
  (cd "$out" && "./${target}_fuzz" -max_total_time="$seconds" -max_len=4096 \
      -print_final_stats=1 "corpus-$target" > "$target.log" 2>&1)
}

report() {
  local target=$1 status=$2
  echo "fuzzed $target for ${seconds}s"
  if ((status != 0)); then
    grep -v '^#[0-9]' "$out/$target.log" | tail -60
    echo "fuzz target $target failed; the input is in $out/crash-* (or leak-*, timeout-*)" >&2
    return 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$out/$target.log" || true
}

run() {
  local i=0 status=0
  while ((i < ${#targets[@]})); do
    local batch=("${targets[@]:i:parallel}") pids=() t
    echo "fuzzing ${batch[*]} for ${seconds}s"
    for t in "${batch[@]}"; do run_one "$t" & pids+=($!); done
    local j
    for j in "${!batch[@]}"; do
      local s=0
      wait "${pids[j]}" || s=$?
      report "${batch[j]}" "$s" || status=1
    done
    ((status == 0)) || return 1
    i=$((i + parallel))
  done
}

case $step in
  build) build ;;
  run) run ;;
  all) build && run ;;
  *) echo "usage: fuzz.sh [build|run]" >&2; exit 2 ;;
esac
