#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, with ASan+UBSan) and runs each for SECONDS (default 30).
# CI runs the short version; `SECONDS_PER_TARGET=600 scripts/fuzz.sh` is the long one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_DIR:-$root/build-fuzz}
seconds=${SECONDS_PER_TARGET:-30}
command -v clang++ >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; }
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$root/src")
clang++ "${flags[@]}" "$root/tests/fuzz/frame_fuzz.cc" "$root/src/proto/frame.cc" \
  -o "$out/frame_fuzz"
clang++ "${flags[@]}" "$root/tests/fuzz/worker_connection_fuzz.cc" "$root/src/proto/frame.cc" \
  "$root/src/proto/worker_connection.cc" -o "$out/worker_connection_fuzz"
clang++ "${flags[@]}" -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1 "$root/tests/fuzz/config_fuzz.cc" \
  "$root/src/config/config.cc" "$root/src/config/key_reader.cc" "$root/src/config/units.cc" \
  -ltomlplusplus -o "$out/config_fuzz"
for target in frame worker_connection config; do
  mkdir -p "$out/corpus-$target"
  cp -n "$root/tests/fuzz/corpus/$target/"* "$out/corpus-$target/" 2>/dev/null || true
  echo "fuzzing $target for ${seconds}s"
  if ! (cd "$out" && "./${target}_fuzz" -max_total_time="$seconds" -max_len=4096 \
        -print_final_stats=1 "corpus-$target" > "$target.log" 2>&1); then
    grep -v '^#[0-9]' "$out/$target.log" | tail -60
    echo "fuzz target $target failed; the input is in $out/crash-* (or leak-*, timeout-*)" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$out/$target.log" || true
done
