// Top-k selection in shared memory, shared by the k-NN kernels: a running per-query list of the best `listSize`
// (key, row) pairs, merged with the rows of a new chunk. Keys order ascending; equal keys order by the smaller
// row, the project's tie rule. Rows arrive in increasing order, which is what lets the filter use a strict `<`.
#pragma once

#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

namespace imiad {
namespace cuda {

// The row of an empty slot; sorts after every real row at the same (infinite) key.
constexpr uint32_t kNoRow = 0xffffffffu;

template <typename Key>
__device__ __forceinline__ Key infiniteKey();
template <>
__device__ __forceinline__ float infiniteKey<float>() {
  return CUDART_INF_F;
}
template <>
__device__ __forceinline__ double infiniteKey<double>() {
  return CUDART_INF;
}

template <typename Key>
__device__ __forceinline__ bool precedes(Key ka, uint32_t ia, Key kb, uint32_t ib) {
  return ka < kb || (ka == kb && ia < ib);
}

// Sorts the first n pairs ascending by (key, row), all threads of the block taking part; pads to a power of two
// with empty slots, so the arrays must hold that many. Starts and ends with a barrier.
template <typename Key>
__device__ void bitonicSort(Key* keys, uint32_t* ids, int n) {
  int p = 1;
  while (p < n) p <<= 1;
  for (int i = n + threadIdx.x; i < p; i += blockDim.x) {
    keys[i] = infiniteKey<Key>();
    ids[i] = kNoRow;
  }
  __syncthreads();
  for (int size = 2; size <= p; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < p; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const bool ascending = (i & size) == 0;
          const bool swap = ascending ? precedes(keys[j], ids[j], keys[i], ids[i])
                                      : precedes(keys[i], ids[i], keys[j], ids[j]);
          if (swap) {
            const Key tk = keys[i];
            keys[i] = keys[j];
            keys[j] = tk;
            const uint32_t ti = ids[i];
            ids[i] = ids[j];
            ids[j] = ti;
          }
        }
      }
      __syncthreads();
    }
  }
}

// Values each thread examines per round (between two barriers); a round covers blockDim.x * this many rows.
constexpr int kSelectItemsPerThread = 4;

// One block per list (blockIdx.x): merges values[blockIdx.x * ldValues + j], j < count, standing for rows
// firstRow + j, into the sorted list listKeys/listIds[blockIdx.x * listSize ...] (created empty when firstChunk).
// Values below the list's current worst pass a filter into shared memory; when the buffer could overflow, buffer
// and list are sorted together and cut back to listSize. Requires listSize + blockDim.x * kSelectItemsPerThread
// <= kCap.
template <typename Key, int kCap>
__global__ void __launch_bounds__(256)
    selectKernel(const Key* __restrict__ values, size_t ldValues, int count, uint32_t firstRow, Key* listKeys,
                 uint32_t* listIds, int listSize, int firstChunk) {
  __shared__ Key keys[kCap];
  __shared__ uint32_t ids[kCap];
  __shared__ int filled;
  __shared__ Key threshold;

  const Key* row = values + static_cast<size_t>(blockIdx.x) * ldValues;
  Key* lk = listKeys + static_cast<size_t>(blockIdx.x) * listSize;
  uint32_t* li = listIds + static_cast<size_t>(blockIdx.x) * listSize;
  for (int i = threadIdx.x; i < listSize; i += blockDim.x) {
    keys[i] = firstChunk ? infiniteKey<Key>() : lk[i];
    ids[i] = firstChunk ? kNoRow : li[i];
  }
  if (threadIdx.x == 0) filled = listSize;
  __syncthreads();
  if (threadIdx.x == 0) threshold = keys[listSize - 1];
  __syncthreads();

  const int perRound = static_cast<int>(blockDim.x) * kSelectItemsPerThread;
  for (int base = 0; base < count; base += perRound) {
    // Every thread reads the count before any thread appends again (a warp leaving the previous barrier early
    // must not change it under a slower warp's feet), so all take the same decision.
    const int current = filled;
    __syncthreads();
    if (current + perRound > kCap) {
      bitonicSort<Key>(keys, ids, current);
      if (threadIdx.x == 0) {
        filled = listSize;
        threshold = keys[listSize - 1];
      }
      __syncthreads();
    }
    // Rows of one round all come after the list's rows, so a value equal to the threshold loses its tie.
    for (int item = 0; item < kSelectItemsPerThread; ++item) {
      const int j = base + item * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x);
      if (j < count) {
        const Key v = row[j];
        if (v < threshold) {
          const int slot = atomicAdd(&filled, 1);
          keys[slot] = v;
          ids[slot] = firstRow + static_cast<uint32_t>(j);
        }
      }
    }
    __syncthreads();
  }
  if (filled > listSize) bitonicSort<Key>(keys, ids, filled);
  for (int i = threadIdx.x; i < listSize; i += blockDim.x) {
    lk[i] = keys[i];
    li[i] = ids[i];
  }
}

}  // namespace cuda
}  // namespace imiad
