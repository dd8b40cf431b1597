// GPU form of the greedy k-center coreset (native/coreset_cuda.h). The distance is native/coreset.h's
// squaredDistance(), reproduced bit for bit: element j of a row is accumulated in lane j % 16 (here: lane j % 16 of
// a half-warp), in double on the float inputs, each difference, square and sum rounded separately (no fused
// multiply-add), then the lanes are added pairwise (j += j+8, j += j+4, j += j+2, j += j+1). The running minima are
// doubles updated with the CPU's `d < m2`, selected rows are marked -1 like the CPU's, and the arg-max breaks ties
// to the smaller row — so the selection is the CPU's, row for row.
#include "coreset_cuda.h"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <string>

#include "coreset.h"
#include "cuda_check.cuh"

namespace imiad {
namespace cuda {

namespace {

static_assert(kDistanceLanes == 16, "the half-warp distance below assumes coreset.h's 16 lanes");

constexpr int kUpdateThreads = 256;
constexpr int kPickThreads = 1024;
constexpr int kWarpsPerUpdateBlock = kUpdateThreads / 32;
// Iterations queued between two waits of the host (cancel flag, progress).
constexpr size_t kIterationsPerPoll = 256;

// A selected row's running minimum (coreset.cc's kSelected): below every real distance, so it never wins again.
constexpr double kSelectedMark = -1.0;

__device__ __forceinline__ bool farther(double va, uint32_t ia, double vb, uint32_t ib) {
  return va > vb || (va == vb && ia < ib);
}

// squaredDistance(a, b) in lane 0 of each half-warp (lane16 = lane % 16). Every lane of the warp must call it.
__device__ __forceinline__ double halfWarpSquaredDistance(const float* __restrict__ a, const float* __restrict__ b,
                                                          int dims, int lane16, bool active) {
  double acc = 0.0;
  if (active) {
    for (int d = lane16; d < dims; d += 16) {
      const double diff = __dsub_rn(static_cast<double>(a[d]), static_cast<double>(b[d]));
      acc = __dadd_rn(acc, __dmul_rn(diff, diff));
    }
  }
  for (int width = 8; width >= 1; width >>= 1) acc = __dadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, width, 16));
  return acc;
}

// Lowers every row's running minimum by its distance to the row selected last, and leaves each block's farthest
// row (ties to the smaller row) in partialValue/partialRow[blockIdx.x]. Each warp takes two rows at a time, one
// per half-warp.
__global__ void __launch_bounds__(kUpdateThreads)
    updateKernel(const float* __restrict__ features, long long rows, int dims, const uint32_t* __restrict__ selected,
                 int iteration, double* __restrict__ minDistance, double* __restrict__ partialValue,
                 uint32_t* __restrict__ partialRow) {
  __shared__ double warpValue[kWarpsPerUpdateBlock];
  __shared__ uint32_t warpRow[kWarpsPerUpdateBlock];
  const int lane = threadIdx.x & 31;
  const int lane16 = lane & 15;
  const int half = lane >> 4;
  const int warp = threadIdx.x >> 5;
  const float* center = features + static_cast<long long>(selected[iteration - 1]) * dims;
  double bestValue = -CUDART_INF;
  uint32_t bestRow = 0xffffffffu;
  const long long warpsTotal = static_cast<long long>(gridDim.x) * kWarpsPerUpdateBlock;
  for (long long pair = static_cast<long long>(blockIdx.x) * kWarpsPerUpdateBlock + warp; pair * 2 < rows;
       pair += warpsTotal) {
    const long long r = pair * 2 + half;
    const double current = r < rows ? minDistance[r] : kSelectedMark;
    const bool active = current != kSelectedMark;
    const double d = halfWarpSquaredDistance(features + (r < rows ? r : 0) * dims, center, dims, lane16, active);
    if (lane16 == 0 && active) {
      double updated = current;
      if (d < current) {
        updated = d;
        minDistance[r] = d;
      }
      // Each half-warp visits its rows in increasing order, so a strict `>` keeps the smaller row on ties.
      if (updated > bestValue) {
        bestValue = updated;
        bestRow = static_cast<uint32_t>(r);
      }
    }
  }
  // Combine the two half-warps' leaders (lanes 0 and 16).
  const double otherValue = __shfl_down_sync(0xffffffffu, bestValue, 16);
  const uint32_t otherRow = __shfl_down_sync(0xffffffffu, bestRow, 16);
  if (lane == 0) {
    if (farther(otherValue, otherRow, bestValue, bestRow)) {
      bestValue = otherValue;
      bestRow = otherRow;
    }
    warpValue[warp] = bestValue;
    warpRow[warp] = bestRow;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double v = warpValue[0];
    uint32_t row = warpRow[0];
    for (int w = 1; w < kWarpsPerUpdateBlock; ++w) {
      if (farther(warpValue[w], warpRow[w], v, row)) {
        v = warpValue[w];
        row = warpRow[w];
      }
    }
    partialValue[blockIdx.x] = v;
    partialRow[blockIdx.x] = row;
  }
}

// One block: the farthest row over all blocks' candidates becomes selected[iteration] and is marked.
__global__ void __launch_bounds__(kPickThreads)
    pickKernel(const double* __restrict__ partialValue, const uint32_t* __restrict__ partialRow, int partials,
               uint32_t* __restrict__ selected, int iteration, double* __restrict__ minDistance) {
  __shared__ double value[kPickThreads];
  __shared__ uint32_t row[kPickThreads];
  double v = -CUDART_INF;
  uint32_t r = 0xffffffffu;
  for (int i = threadIdx.x; i < partials; i += blockDim.x) {
    if (farther(partialValue[i], partialRow[i], v, r)) {
      v = partialValue[i];
      r = partialRow[i];
    }
  }
  value[threadIdx.x] = v;
  row[threadIdx.x] = r;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride && farther(value[threadIdx.x + stride], row[threadIdx.x + stride], value[threadIdx.x],
                                        row[threadIdx.x])) {
      value[threadIdx.x] = value[threadIdx.x + stride];
      row[threadIdx.x] = row[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    selected[iteration] = row[0];
    minDistance[row[0]] = kSelectedMark;
  }
}

__global__ void initKernel(double* __restrict__ minDistance, long long rows, uint32_t startIndex,
                           uint32_t* __restrict__ selected) {
  for (long long r = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<long long>(gridDim.x) * blockDim.x) {
    minDistance[r] = r == startIndex ? kSelectedMark : CUDART_INF;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) selected[0] = startIndex;
}

}  // namespace

void greedyCoresetCuda(const float* features, size_t rows, size_t dims, size_t count, size_t startIndex,
                       uint32_t* selected, const RunControl& control) {
  if (rows == 0 || dims == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "Expected a non-empty feature matrix");
  if (count < 1 || count > rows) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected count between 1 and " + std::to_string(rows) +
                                                 " but received " + std::to_string(count));
  }
  if (startIndex >= rows) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected startIndex between 0 and " + std::to_string(rows - 1) +
                                                 " but received " + std::to_string(startIndex));
  }
  if (rows > 0xfffffffeu || dims > 0x7fffffffu) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at most 4294967294 rows on the GPU");
  }
  const size_t freeBytes = useDevice();
  int device = 0, multiprocessors = 0;
  IMIAD_CUDA_CHECK(cudaGetDevice(&device));
  IMIAD_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  const long long warpsNeeded = static_cast<long long>((rows + 1) / 2);
  const int blocks = static_cast<int>(std::max<long long>(
      1, std::min<long long>((warpsNeeded + kWarpsPerUpdateBlock - 1) / kWarpsPerUpdateBlock,
                             static_cast<long long>(multiprocessors) * 8)));
  const uint64_t needed = static_cast<uint64_t>(rows) * dims * sizeof(float) + rows * sizeof(double) +
                          blocks * (sizeof(double) + sizeof(uint32_t)) + count * sizeof(uint32_t);
  if (needed > freeBytes) {
    throw DeviceOutOfMemory("A coreset of " + std::to_string(rows) + " rows x " + std::to_string(dims) + " dims",
                            needed, freeBytes);
  }

  Stream stream;
  DeviceBuffer<float> dFeatures(rows * dims);
  DeviceBuffer<double> dMinDistance(rows), dPartialValue(blocks);
  DeviceBuffer<uint32_t> dPartialRow(blocks), dSelected(count);
  IMIAD_CUDA_CHECK(cudaMemcpyAsync(dFeatures.get(), features, rows * dims * sizeof(float), cudaMemcpyHostToDevice,
                                   stream.get()));
  IMIAD_LAUNCH(std::min<long long>((rows + 255) / 256, 65535), 256, stream.get(), initKernel)(
      dMinDistance.get(), static_cast<long long>(rows), static_cast<uint32_t>(startIndex), dSelected.get());
  IMIAD_CUDA_CHECK(cudaGetLastError());
  for (size_t it = 1; it < count; ++it) {
    IMIAD_LAUNCH(blocks, kUpdateThreads, stream.get(), updateKernel)(dFeatures.get(), static_cast<long long>(rows),
                                                             static_cast<int>(dims), dSelected.get(),
                                                             static_cast<int>(it), dMinDistance.get(),
                                                             dPartialValue.get(), dPartialRow.get());
    IMIAD_LAUNCH(1, kPickThreads, stream.get(), pickKernel)(dPartialValue.get(), dPartialRow.get(), blocks, dSelected.get(),
                                                     static_cast<int>(it), dMinDistance.get());
    if (it % kIterationsPerPoll == 0) {
      IMIAD_CUDA_CHECK(cudaGetLastError());
      stream.sync();
      control.throwIfCancelled();
      control.report(it, count);
    }
  }
  IMIAD_CUDA_CHECK(cudaGetLastError());
  IMIAD_CUDA_CHECK(cudaMemcpyAsync(selected, dSelected.get(), count * sizeof(uint32_t), cudaMemcpyDeviceToHost,
                                   stream.get()));
  stream.sync();
  control.report(count, count);
}

}  // namespace cuda
}  // namespace imiad
