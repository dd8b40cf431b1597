#!/usr/bin/env bash
# Runs the CUDA kernels' GPU-vs-CPU check (test/cuda/check.cu) without a GPU: native/*.cu are compiled as plain C++
# against test/cuda/emu/cuda_runtime.h, a CPU emulation of the CUDA features they use (each thread a fiber, barriers
# and warp shuffles as fiber barriers), on smaller shapes. It checks the kernels' logic — indexing, barriers,
# selection, tie rules, the exact re-rank and its fallback, the host orchestration — against the CPU kernels, bit
# for bit; not their speed, nor what only real hardware shows (races the emulation's scheduling hides).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build-cuda-emulation"
make -s -f "$root/test/cuda/emulation.mk" -j "${IMIAD_JOBS:-$(nproc 2>/dev/null || echo 2)}" check
IMIAD_CUDA_CHECK_SMALL=1 "$out/imiad_cuda_check_emulated"
