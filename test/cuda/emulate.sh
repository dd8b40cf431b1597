#!/usr/bin/env bash
# Runs the CUDA kernels' GPU-vs-CPU check (test/cuda/check.cu) without a GPU: native/*.cu are compiled as plain C++
# against test/cuda/emu/cuda_runtime.h, a CPU emulation of the CUDA features they use (each thread a fiber, barriers
# and warp shuffles as fiber barriers), on smaller shapes. It checks the kernels' logic — indexing, barriers,
# selection, tie rules, the exact re-rank and its fallback, the host orchestration — against the CPU kernels, bit
# for bit; not their speed, nor what only real hardware shows (races the emulation's scheduling hides).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build/cuda-emulation"
mkdir -p "$out"
cxx="${CXX:-g++}"
sources=()
for f in "$root"/native/*.cu "$root"/test/cuda/check.cu; do sources+=(-x c++ "$f"); done
mapfile -t kernels < <(find "$root/native" -maxdepth 1 -name '*.cc' | sort)
"$cxx" -std=c++17 -O2 -g -ffp-contract=off -pthread -DIMIAD_CUDA_EMULATION -I"$root/test/cuda/emu" -I"$root/native" \
  "${sources[@]}" -x none "${kernels[@]}" -o "$out/imiad_cuda_check_emulated"
IMIAD_CUDA_CHECK_SMALL=1 "$out/imiad_cuda_check_emulated"
