// Greedy k-center coreset (PatchCore, Algorithm 1) on a CUDA GPU, selecting exactly the rows the CPU kernel
// (native/coreset.h) selects in exact mode: the first row is startIndex; each next row is the one whose Euclidean
// distance to its nearest selected row is largest, ties to the smaller row index. The running minimum distances
// stay on the device; each iteration is one distance-and-update kernel (with a per-block arg-max) and one
// single-block arg-max over the blocks, so the host only waits every few hundred iterations (cancellation,
// progress). Random projection (projectionDims > 0) is done on the host by the CPU kernel's own projectFeatures
// before the call, so both devices select from identical projected features.
#pragma once

#include <cstddef>
#include <cstdint>

#include "control.h"
#include "cuda_device.h"

namespace imiad {
namespace cuda {

// Writes `count` row indices of the [rows, dims] matrix, in selection order. Throws DeviceOutOfMemory when the
// matrix does not fit the device.
void greedyCoresetCuda(const float* features, size_t rows, size_t dims, size_t count, size_t startIndex,
                       uint32_t* selected, const RunControl& control);

}  // namespace cuda
}  // namespace imiad
