#!/usr/bin/env bash
# Builds and runs the kernels' C++ test target (no Node) under AddressSanitizer and UndefinedBehaviorSanitizer:
# every test/native/test_*.cc is linked with every native/*.cc and run; any sanitizer report fails the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build/native-tests"
mkdir -p "$out"
cxx="${CXX:-g++}"
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -pthread -I"$root/native")
mapfile -t kernels < <(find "$root/native" -maxdepth 1 -name '*.cc' | sort)
status=0
for t in "$root"/test/native/test_*.cc; do
  [ -e "$t" ] || continue
  name="$(basename "$t" .cc)"
  echo "== $name"
  "$cxx" "${flags[@]}" "$t" "${kernels[@]}" -o "$out/$name"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$out/$name"; then
    echo "FAILED: $name"
    status=1
  fi
done
exit $status
