#!/usr/bin/env bash
# Builds the CUDA addon with its kernels compiled as C++ against test/cuda/emu/cuda_runtime.h (the CPU emulation of
# CUDA, see emulate.sh) and runs test/cuda.test.ts against it, so the GPU-path glue (bindings/cuda/*.cc), the
# device resolution and the wrappers' routing run end to end on a machine without a GPU. The file goes to
# build-cuda-emulation/, where no loader looks unless told ($IMIAD_CUDA_ADDON); not under build/, which node-gyp
# (the prebuild that jest's global setup makes when it is stale) deletes and rebuilds. IMIAD_CUDA_EXPECT_DEVICE makes
# test/cuda.test.ts fail, not skip, when the emulated device is not usable.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build-cuda-emulation"
node_include="$(node -p "require('path').join(process.execPath, '..', '..', 'include', 'node')")"
addon_api="$(cd "$root" && node -p "require('path').resolve(require('node-addon-api').include_dir)")"
make -s -f "$root/test/cuda/emulation.mk" -j "${IMIAD_JOBS:-$(nproc 2>/dev/null || echo 2)}" addon \
  NODE_INCLUDE="$node_include" ADDON_API="$addon_api"
cd "$root"
# A 300 MB device, so that test/cuda.test.ts can check the too-large-bank error and the fallback of 'auto'.
IMIAD_CUDA_ADDON="$out/imiad_cuda.node" IMIAD_CUDA_EXPECT_DEVICE=1 IMIAD_CUDA_SKIP_DRIVER_CHECK=1 IMIAD_CUDA_EMULATION_FREE_BYTES=300000000 npx jest test/cuda.test.ts "$@"
