#!/usr/bin/env bash
# Builds and runs the kernels' C++ test target (no Node) under AddressSanitizer and UndefinedBehaviorSanitizer:
# every test/native/test_*.cc is linked with every native/*.cc and run; any sanitizer report fails the run.
# Each kernel is compiled once (not once per test), and the compilations run in parallel ($IMIAD_JOBS, default: the
# number of cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build/native-tests"
mkdir -p "$out/obj"
export CXX="${CXX:-g++}"
export IMIAD_SAN_FLAGS="-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -pthread -I$root/native"
export IMIAD_OBJ_DIR="$out/obj"
jobs="${IMIAD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
mapfile -t kernels < <(find "$root/native" -maxdepth 1 -name '*.cc' | sort)
tests=("$root"/test/native/test_*.cc)
[ -e "${tests[0]}" ] || { echo "no test/native/test_*.cc"; exit 1; }
# Kernel objects are k_<name>.o, test objects t_<name>.o. xargs stops at the first failed compilation (exit 255).
{ for k in "${kernels[@]}"; do echo "k $k"; done; for t in "${tests[@]}"; do echo "t $t"; done; } |
  xargs -P "$jobs" -L 1 bash -c '
    obj="$IMIAD_OBJ_DIR/$0_$(basename "$1" .cc).o"
    $CXX $IMIAD_SAN_FLAGS -c "$1" -o "$obj" || { echo "compile failed: $1" >&2; exit 255; }'
kernel_objs=()
for k in "${kernels[@]}"; do kernel_objs+=("$out/obj/k_$(basename "$k" .cc).o"); done
status=0
for t in "${tests[@]}"; do
  name="$(basename "$t" .cc)"
  echo "== $name"
  $CXX $IMIAD_SAN_FLAGS "$out/obj/t_$name.o" "${kernel_objs[@]}" -o "$out/$name"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$out/$name"; then
    echo "FAILED: $name"
    status=1
  fi
done
exit $status
