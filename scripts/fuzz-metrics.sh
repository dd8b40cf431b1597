#!/usr/bin/env bash
# Fuzzes the labelling and curve kernels for a bounded time (FUZZ_SECONDS, default 30) under ASan/UBSan:
# libFuzzer when clang++ is available, else a deterministic random-input loop built with g++.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/build/fuzz"
mkdir -p "$out/corpus"
seconds="${FUZZ_SECONDS:-30}"
# One kernel thread: thread start-up would dominate these tiny inputs (results do not depend on it).
export IMIAD_THREADS="${IMIAD_THREADS:-1}"
sources=("$root/test/fuzz/fuzz_metrics.cc" "$root/native/components.cc" "$root/native/curves.cc")
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -pthread -I"$root/native")
if command -v clang++ >/dev/null && echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long){return 0;}' |
    clang++ -x c++ -fsanitize=fuzzer - -o "$out/probe" 2>/dev/null; then
  clang++ "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all "${sources[@]}" -o "$out/fuzz_metrics"
  # Crash inputs go to build/fuzz/; test/fuzz/seeds holds inputs that once failed (regression seeds).
  "$out/fuzz_metrics" -max_total_time="$seconds" -max_len=2048 -print_final_stats=1 -artifact_prefix="$out/" \
    "$out/corpus" "$root/test/fuzz/seeds" 2>&1 | tail -n 12
else
  "${CXX:-g++}" "${flags[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all "${sources[@]}" \
    "$root/test/fuzz/random_driver.cc" -o "$out/fuzz_metrics_random"
  "$out/fuzz_metrics_random" "$seconds"
fi
