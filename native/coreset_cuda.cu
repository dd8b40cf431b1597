// GPU form of the greedy k-center coreset (native/coreset_cuda.h). Distances are squared Euclidean distances on
// the direct differences, accumulated in double; the comparison is on squared distances, which orders rows
// exactly as the Euclidean distance does.
#include "coreset_cuda.h"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <string>

#include "cuda_check.cuh"

namespace imiad {
namespace cuda {

namespace {

constexpr int kUpdateThreads = 256;
constexpr int kPickThreads = 1024;
constexpr int kWarpsPerUpdateBlock = kUpdateThreads / 32;
// Iterations queued between two waits of the host (cancel flag, progress).
constexpr size_t kIterationsPerPoll = 256;

// A row's running minimum distance once it is selected: below every real distance, so it is never picked again
// (this matters only when fewer distinct rows than `count` exist and every remaining distance is 0).
constexpr double kSelectedMark = -1.0;

__device__ __forceinline__ bool farther(double va, uint32_t ia, double vb, uint32_t ib) {
  return va > vb || (va == vb && ia < ib);
}

// Lowers every row's running minimum by its distance to the row selected last, and leaves each block's farthest
// row (ties to the smaller row) in partialValue/partialRow[blockIdx.x].
__global__ void __launch_bounds__(kUpdateThreads)
    updateKernel(const float* __restrict__ features, long long rows, int dims, const uint32_t* __restrict__ selected,
                 int iteration, double* __restrict__ minDistance, double* __restrict__ partialValue,
                 uint32_t* __restrict__ partialRow) {
  __shared__ double warpValue[kWarpsPerUpdateBlock];
  __shared__ uint32_t warpRow[kWarpsPerUpdateBlock];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const float* center = features + static_cast<long long>(selected[iteration - 1]) * dims;
  double bestValue = -CUDART_INF;
  uint32_t bestRow = 0xffffffffu;
  const long long warpsTotal = static_cast<long long>(gridDim.x) * kWarpsPerUpdateBlock;
  for (long long r = static_cast<long long>(blockIdx.x) * kWarpsPerUpdateBlock + warp; r < rows; r += warpsTotal) {
    const double current = minDistance[r];  // the same value in every lane
    if (current == kSelectedMark) continue;
    const double d = warpExactSquaredDistance(features + r * dims, center, dims, lane);
    const double updated = d < current ? d : current;
    if (lane == 0 && updated != current) minDistance[r] = updated;
    // Rows visited in increasing order, so a strict `>` keeps the smaller row on ties.
    if (updated > bestValue) {
      bestValue = updated;
      bestRow = static_cast<uint32_t>(r);
    }
  }
  if (lane == 0) {
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
  const long long warpsNeeded = static_cast<long long>(rows);
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
  initKernel<<<std::min<long long>((rows + 255) / 256, 65535), 256, 0, stream.get()>>>(
      dMinDistance.get(), static_cast<long long>(rows), static_cast<uint32_t>(startIndex), dSelected.get());
  IMIAD_CUDA_CHECK(cudaGetLastError());
  for (size_t it = 1; it < count; ++it) {
    updateKernel<<<blocks, kUpdateThreads, 0, stream.get()>>>(dFeatures.get(), static_cast<long long>(rows),
                                                             static_cast<int>(dims), dSelected.get(),
                                                             static_cast<int>(it), dMinDistance.get(),
                                                             dPartialValue.get(), dPartialRow.get());
    pickKernel<<<1, kPickThreads, 0, stream.get()>>>(dPartialValue.get(), dPartialRow.get(), blocks, dSelected.get(),
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
