// GPU form of the exact k-NN (native/knn_cuda.h describes the structure). The definition it must reproduce is the
// CPU kernel's (native/knn.h): rows ranked by exactSquaredDistance() (double, index order, no fused multiply-add),
// ascending, ties to the smaller bank row; distances are float(sqrt(that)). The GPU evaluates the same expression
// in the same order for every row it ranks, so indices and distances are identical to the CPU's. Nothing here
// uses cuBLAS (only the CUDA runtime is required): the distance tiles come from our own register-blocked kernel.
#include "knn_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_check.cuh"
#include "cuda_select.cuh"

namespace imiad {
namespace cuda {

namespace {

// The distance tile: a 128 x 128 block of (query, bank row) pairs per CTA, 8 x 8 per thread, k-steps of 8 staged
// through double-buffered shared memory (one barrier per k-step), the classic SIMT SGEMM layout. Tunable.
constexpr int kTileM = 128;
constexpr int kTileN = 128;
constexpr int kTileK = 8;
constexpr int kTileThreads = 256;
constexpr int kSharedPad = 4;  // keeps the transposed shared-memory stores free of bank conflicts

// Candidate selection: the running list plus incoming candidates are sorted in shared memory in pieces of at most
// kSelectCap (approximate, float) or kExactCap (exact, double) entries.
constexpr int kSelectThreads = 256;
constexpr int kSelectCap = 4096;
constexpr int kExactCap = 2048;
constexpr int kRerankCap = 2048;  // >= the largest candidate list (k' <= 1152)

// Bank rows per chunk and the scratch budget for a query tile (distance tile, queries, candidate lists).
constexpr size_t kChunkRows = 32768;
constexpr size_t kMaxQueryTile = 16384;
constexpr size_t kMaxScratchBytes = size_t(4) << 30;
constexpr size_t kReserveBytes = size_t(256) << 20;  // left free for the runtime and other work on the device

template <bool kVec4>
__device__ __forceinline__ float4 loadRowSlice(const float* __restrict__ m, int rows, int dims, int row, int col) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
  if (row >= rows) return v;
  const float* p = m + static_cast<size_t>(row) * dims;
  if (kVec4) {
    // dims % 4 == 0 and col % 4 == 0, so the four values are in the row together and 16-byte aligned.
    if (col < dims) v = __ldg(reinterpret_cast<const float4*>(p + col));
  } else {
    if (col + 0 < dims) v.x = __ldg(p + col + 0);
    if (col + 1 < dims) v.y = __ldg(p + col + 1);
    if (col + 2 < dims) v.z = __ldg(p + col + 2);
    if (col + 3 < dims) v.w = __ldg(p + col + 3);
  }
  return v;
}

// out[r][c] = ||q_r||^2 + ||b_c||^2 - 2 q_r . b_c for a tile of queries and a chunk of bank rows (both row-major
// with `dims` columns), clamped below +inf so the selection's sentinels always sort last.
template <bool kVec4>
__global__ void __launch_bounds__(kTileThreads, 2)
    distanceTileKernel(const float* __restrict__ queries, int queryRows, const float* __restrict__ bank, int bankRows,
                       int dims, const float* __restrict__ queryNormsSq, const float* __restrict__ bankNormsSq,
                       float* __restrict__ out, size_t ldOut) {
  __shared__ __align__(16) float qs[2][kTileK][kTileM + kSharedPad];
  __shared__ __align__(16) float bs[2][kTileK][kTileN + kSharedPad];

  const int tid = threadIdx.x;
  const int rowBase = blockIdx.y * kTileM;
  const int colBase = blockIdx.x * kTileN;
  // Loading: two threads per row, four consecutive k each (one 32-byte sector per row and k-step).
  const int loadRow = tid >> 1;
  const int loadK = (tid & 1) * 4;
  // Computing: a 16 x 16 grid of threads, each owning rows {ty*4..+3, 64+ty*4..+3} and the same for columns.
  const int tx = tid & 15;
  const int ty = tid >> 4;

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  float4 qNext = loadRowSlice<kVec4>(queries, queryRows, dims, rowBase + loadRow, loadK);
  float4 bNext = loadRowSlice<kVec4>(bank, bankRows, dims, colBase + loadRow, loadK);
  qs[0][loadK + 0][loadRow] = qNext.x;
  qs[0][loadK + 1][loadRow] = qNext.y;
  qs[0][loadK + 2][loadRow] = qNext.z;
  qs[0][loadK + 3][loadRow] = qNext.w;
  bs[0][loadK + 0][loadRow] = bNext.x;
  bs[0][loadK + 1][loadRow] = bNext.y;
  bs[0][loadK + 2][loadRow] = bNext.z;
  bs[0][loadK + 3][loadRow] = bNext.w;
  __syncthreads();

  const int kSteps = (dims + kTileK - 1) / kTileK;
  int cur = 0;
  for (int step = 0; step < kSteps; ++step) {
    const bool more = step + 1 < kSteps;
    if (more) {
      // Issued before the arithmetic so the global loads overlap it.
      const int k0 = (step + 1) * kTileK + loadK;
      qNext = loadRowSlice<kVec4>(queries, queryRows, dims, rowBase + loadRow, k0);
      bNext = loadRowSlice<kVec4>(bank, bankRows, dims, colBase + loadRow, k0);
    }
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      const float4 a0 = *reinterpret_cast<const float4*>(&qs[cur][kk][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&qs[cur][kk][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&bs[cur][kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&bs[cur][kk][64 + tx * 4]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (more) {
      // The other buffer was last read before the previous barrier, so it is free to overwrite.
      const int nxt = cur ^ 1;
      qs[nxt][loadK + 0][loadRow] = qNext.x;
      qs[nxt][loadK + 1][loadRow] = qNext.y;
      qs[nxt][loadK + 2][loadRow] = qNext.z;
      qs[nxt][loadK + 3][loadRow] = qNext.w;
      bs[nxt][loadK + 0][loadRow] = bNext.x;
      bs[nxt][loadK + 1][loadRow] = bNext.y;
      bs[nxt][loadK + 2][loadRow] = bNext.z;
      bs[nxt][loadK + 3][loadRow] = bNext.w;
    }
    __syncthreads();
    cur ^= 1;
  }

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = rowBase + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    if (r >= queryRows) continue;
    const float qn = queryNormsSq[r];
    float* o = out + static_cast<size_t>(r) * ldOut;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int c = colBase + h * 64 + tx * 4;
      float v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[j] = c + j < bankRows ? fminf(qn + bankNormsSq[c + j] - 2.f * acc[i][h * 4 + j], FLT_MAX) : FLT_MAX;
      }
      if (c + 3 < bankRows) {
        *reinterpret_cast<float4*>(o + c) = make_float4(v[0], v[1], v[2], v[3]);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (c + j < bankRows) o[c + j] = v[j];
      }
    }
  }
}

// Squared norms of rows, exact in double then rounded once to float.
__global__ void rowNormsKernel(const float* __restrict__ m, long long rows, int dims, float* __restrict__ normsSq) {
  const int lane = threadIdx.x & 31;
  const long long warpsTotal = static_cast<long long>(gridDim.x) * (blockDim.x >> 5);
  for (long long r = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < rows;
       r += warpsTotal) {
    const float* row = m + r * dims;
    double sum = 0.0;
    for (int d = lane; d < dims; d += 32) sum = __fma_rn(static_cast<double>(row[d]), static_cast<double>(row[d]), sum);
    for (int offset = 16; offset > 0; offset >>= 1) sum = __dadd_rn(sum, __shfl_xor_sync(0xffffffffu, sum, offset));
    if (lane == 0) normsSq[r] = static_cast<float>(sum);
  }
}

// Re-ranks each query's candidate list on the exact distance and writes the k best. Flags a query when an
// excluded bank row could still beat its k-th exact distance: every excluded row's approximate distance is at
// least the list's largest kept one, and the expansion's error is at most errorFactor * (|q| + max |b|)^2.
__global__ void __launch_bounds__(kSelectThreads)
    rerankKernel(const float* __restrict__ queries, const float* __restrict__ bank, int dims,
                 const float* __restrict__ queryNormsSq, const float* __restrict__ listKeys,
                 const uint32_t* __restrict__ listIds, int listSize, int k, int checkExcluded, double errorFactor,
                 double maxBankNorm, int32_t* __restrict__ outIndices, float* __restrict__ outDistances,
                 int* __restrict__ needsExact) {
  __shared__ double exact[kRerankCap];
  __shared__ uint32_t ids[kRerankCap];
  const int q = blockIdx.x;
  const float* queryRow = queries + static_cast<size_t>(q) * dims;
  const size_t listBase = static_cast<size_t>(q) * listSize;
  for (int c = threadIdx.x; c < listSize; c += blockDim.x) {
    const uint32_t id = listIds[listBase + c];
    exact[c] = id == kNoRow ? CUDART_INF : exactSquaredDistance(queryRow, bank + static_cast<size_t>(id) * dims, dims);
    ids[c] = id;
  }
  __syncthreads();
  bitonicSort<double>(exact, ids, listSize);
  const size_t outBase = static_cast<size_t>(q) * k;
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    outIndices[outBase + i] = static_cast<int32_t>(ids[i]);
    outDistances[outBase + i] = static_cast<float>(sqrt(exact[i]));
  }
  if (threadIdx.x == 0) {
    int flag = 0;
    if (checkExcluded) {
      const double boundary = static_cast<double>(listKeys[listBase + listSize - 1]);
      const double queryNorm = sqrt(static_cast<double>(queryNormsSq[q])) * (1.0 + 1e-6);
      const double reach = queryNorm + maxBankNorm;
      flag = !(boundary - errorFactor * reach * reach > exact[k - 1]);
    }
    needsExact[q] = flag;
  }
}

// Exact squared distances of one query to every bank row (the fallback for a flagged query).
__global__ void exactDistancesKernel(const float* __restrict__ query, const float* __restrict__ bank, long long rows,
                                     int dims, double* __restrict__ out) {
  for (long long r = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<long long>(gridDim.x) * blockDim.x) {
    out[r] = exactSquaredDistance(query, bank + r * dims, dims);
  }
}

__global__ void writeExactKernel(const double* __restrict__ keys, const uint32_t* __restrict__ ids, int k,
                                 int32_t* __restrict__ outIndices, float* __restrict__ outDistances) {
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    outIndices[i] = static_cast<int32_t>(ids[i]);
    outDistances[i] = static_cast<float>(sqrt(keys[i]));
  }
}

void launchDistanceTile(const float* queries, int queryRows, const float* bank, int bankRows, int dims,
                        const float* queryNormsSq, const float* bankNormsSq, float* out, size_t ldOut,
                        cudaStream_t stream) {
  const dim3 grid((bankRows + kTileN - 1) / kTileN, (queryRows + kTileM - 1) / kTileM);
  if (dims % 4 == 0) {
    IMIAD_LAUNCH(grid, kTileThreads, stream, distanceTileKernel<true>)(queries, queryRows, bank, bankRows, dims,
                                                                queryNormsSq, bankNormsSq, out, ldOut);
  } else {
    IMIAD_LAUNCH(grid, kTileThreads, stream, distanceTileKernel<false>)(queries, queryRows, bank, bankRows, dims,
                                                                 queryNormsSq, bankNormsSq, out, ldOut);
  }
  IMIAD_CUDA_CHECK(cudaGetLastError());
}

int warpBlocks(long long rows, int threads) {
  const long long warpsPerBlock = threads / 32;
  return static_cast<int>(std::min<long long>((rows + warpsPerBlock - 1) / warpsPerBlock, 65535LL * 16));
}

// Candidates kept per query before the exact re-rank: a margin above k so that the exact order of the first k
// is almost never in doubt (a doubtful query is recomputed exactly, so the margin only affects speed).
size_t candidateCount(size_t k, size_t rows) {
  const size_t margin = std::max<size_t>(8, k / 8);
  return std::min(rows, k + margin);
}

}  // namespace

uint64_t knnBankDeviceBytes(size_t rows, size_t dims) {
  return static_cast<uint64_t>(rows) * dims * sizeof(float) + static_cast<uint64_t>(rows) * sizeof(float);
}

struct KnnBank::State {
  size_t rows = 0;
  size_t dims = 0;
  DeviceBuffer<float> bank;
  DeviceBuffer<float> normsSq;
  double maxNorm = 0.0;
  bool uploaded = false;
  std::mutex mutex;
};

KnnBank::KnnBank(size_t rows, size_t dims) : state_(new State) {
  if (rows == 0 || dims == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "Expected a non-empty bank");
  if (rows > static_cast<size_t>(INT32_MAX) || dims > static_cast<size_t>(INT32_MAX)) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected a bank of at most 2147483647 rows and dims on the GPU");
  }
  const size_t freeBytes = useDevice();
  const uint64_t needed = knnBankDeviceBytes(rows, dims);
  if (needed + kReserveBytes > freeBytes) {
    throw DeviceOutOfMemory("A k-NN bank of " + std::to_string(rows) + " rows x " + std::to_string(dims) + " dims",
                            needed + kReserveBytes, freeBytes);
  }
  state_->rows = rows;
  state_->dims = dims;
  state_->bank.allocate(rows * dims);
  state_->normsSq.allocate(rows);
}

KnnBank::~KnnBank() = default;

size_t KnnBank::rows() const { return state_->rows; }
size_t KnnBank::dims() const { return state_->dims; }
uint64_t KnnBank::deviceBytes() const { return knnBankDeviceBytes(state_->rows, state_->dims); }

void KnnBank::search(const float* bankHost, const float* queries, size_t queryRows, size_t k, int32_t* indices,
                     float* distances, const RunControl& control) {
  State& s = *state_;
  if (k < 1 || k > kMaxK || k > s.rows) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected k between 1 and " + std::to_string(std::min(kMaxK, s.rows)) +
                                                 " on the GPU but received " + std::to_string(k));
  }
  if (queryRows == 0) return;
  std::lock_guard<std::mutex> lock(s.mutex);
  size_t freeBytes = useDevice();
  Stream stream;
  const size_t rows = s.rows;
  const int dims = static_cast<int>(s.dims);

  if (!s.uploaded) {
    IMIAD_CUDA_CHECK(cudaMemcpyAsync(s.bank.get(), bankHost, rows * s.dims * sizeof(float), cudaMemcpyHostToDevice,
                                     stream.get()));
    IMIAD_LAUNCH(warpBlocks(static_cast<long long>(rows), 256), 256, stream.get(), rowNormsKernel)(
        s.bank.get(), static_cast<long long>(rows), dims, s.normsSq.get());
    IMIAD_CUDA_CHECK(cudaGetLastError());
    std::vector<float> norms(rows);
    IMIAD_CUDA_CHECK(cudaMemcpyAsync(norms.data(), s.normsSq.get(), rows * sizeof(float), cudaMemcpyDeviceToHost,
                                     stream.get()));
    stream.sync();
    double maxSq = 0.0;
    for (float v : norms) maxSq = std::max(maxSq, static_cast<double>(v));
    s.maxNorm = std::sqrt(maxSq) * (1.0 + 1e-6);
    s.uploaded = true;
    freeBytes = useDevice();
  }

  const size_t listSize = candidateCount(k, rows);
  const size_t chunkRows = std::min(kChunkRows, (rows + kTileN - 1) / kTileN * kTileN);
  const size_t perQueryBytes = s.dims * sizeof(float) + sizeof(float) + chunkRows * sizeof(float) +
                               listSize * (sizeof(float) + sizeof(uint32_t)) + k * (sizeof(int32_t) + sizeof(float)) +
                               sizeof(int);
  const size_t budget = std::min(kMaxScratchBytes, freeBytes > kReserveBytes ? (freeBytes - kReserveBytes) / 2 : 0);
  const size_t tileRows = std::min({queryRows, kMaxQueryTile, std::max<size_t>(1, budget / perQueryBytes)});
  if (tileRows * perQueryBytes > freeBytes) {
    throw DeviceOutOfMemory("A k-NN search's working memory", perQueryBytes, freeBytes);
  }

  DeviceBuffer<float> dQueries(tileRows * s.dims), dQueryNorms(tileRows), dDist(tileRows * chunkRows);
  DeviceBuffer<float> dListKeys(tileRows * listSize);
  DeviceBuffer<uint32_t> dListIds(tileRows * listSize);
  DeviceBuffer<int32_t> dOutIndices(tileRows * k);
  DeviceBuffer<float> dOutDistances(tileRows * k);
  DeviceBuffer<int> dNeedsExact(tileRows);
  DeviceBuffer<double> dExact, dExactKeys;
  DeviceBuffer<uint32_t> dExactIds;
  std::vector<int> needsExact(tileRows);

  const double errorFactor = 1.1 * (2.0 * dims + 8.0) * std::ldexp(1.0, -24);
  const size_t chunks = (rows + chunkRows - 1) / chunkRows;
  const size_t tiles = (queryRows + tileRows - 1) / tileRows;
  for (size_t tile = 0; tile < tiles; ++tile) {
    const size_t q0 = tile * tileRows;
    const int mt = static_cast<int>(std::min(tileRows, queryRows - q0));
    IMIAD_CUDA_CHECK(cudaMemcpyAsync(dQueries.get(), queries + q0 * s.dims, mt * s.dims * sizeof(float),
                                     cudaMemcpyHostToDevice, stream.get()));
    IMIAD_LAUNCH(warpBlocks(mt, 256), 256, stream.get(), rowNormsKernel)(dQueries.get(), mt, dims, dQueryNorms.get());
    IMIAD_CUDA_CHECK(cudaGetLastError());
    for (size_t chunk = 0; chunk < chunks; ++chunk) {
      control.throwIfCancelled();
      const size_t c0 = chunk * chunkRows;
      const int nc = static_cast<int>(std::min(chunkRows, rows - c0));
      launchDistanceTile(dQueries.get(), mt, s.bank.get() + c0 * s.dims, nc, dims, dQueryNorms.get(),
                         s.normsSq.get() + c0, dDist.get(), chunkRows, stream.get());
      IMIAD_LAUNCH(mt, kSelectThreads, stream.get(), selectKernel<float, kSelectCap>)(
          dDist.get(), chunkRows, nc, static_cast<uint32_t>(c0), dListKeys.get(), dListIds.get(),
          static_cast<int>(listSize), chunk == 0 ? 1 : 0);
      IMIAD_CUDA_CHECK(cudaGetLastError());
      // One chunk in flight at a time: the cancel flag is honoured within a chunk's time and errors surface here.
      stream.sync();
    }
    IMIAD_LAUNCH(mt, kSelectThreads, stream.get(), rerankKernel)(
        dQueries.get(), s.bank.get(), dims, dQueryNorms.get(), dListKeys.get(), dListIds.get(),
        static_cast<int>(listSize), static_cast<int>(k), rows > listSize ? 1 : 0, errorFactor, s.maxNorm,
        dOutIndices.get(), dOutDistances.get(), dNeedsExact.get());
    IMIAD_CUDA_CHECK(cudaGetLastError());
    IMIAD_CUDA_CHECK(cudaMemcpyAsync(needsExact.data(), dNeedsExact.get(), mt * sizeof(int), cudaMemcpyDeviceToHost,
                                     stream.get()));
    stream.sync();
    for (int q = 0; q < mt; ++q) {
      if (!needsExact[q]) continue;
      control.throwIfCancelled();
      if (dExact.size() == 0) {
        dExact.allocate(rows);
        dExactKeys.allocate(k);
        dExactIds.allocate(k);
      }
      IMIAD_LAUNCH(static_cast<int>(std::min<size_t>((rows + 255) / 256, 65535)), 256, stream.get(), exactDistancesKernel)(
          dQueries.get() + static_cast<size_t>(q) * s.dims, s.bank.get(), static_cast<long long>(rows), dims,
          dExact.get());
      IMIAD_LAUNCH(1, kSelectThreads, stream.get(), selectKernel<double, kExactCap>)(
          dExact.get(), 0, static_cast<int>(rows), 0u, dExactKeys.get(), dExactIds.get(), static_cast<int>(k), 1);
      IMIAD_LAUNCH(1, kSelectThreads, stream.get(), writeExactKernel)(dExactKeys.get(), dExactIds.get(),
                                                              static_cast<int>(k), dOutIndices.get() + q * k,
                                                              dOutDistances.get() + q * k);
      IMIAD_CUDA_CHECK(cudaGetLastError());
      stream.sync();
    }
    IMIAD_CUDA_CHECK(cudaMemcpyAsync(indices + q0 * k, dOutIndices.get(), mt * k * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, stream.get()));
    IMIAD_CUDA_CHECK(cudaMemcpyAsync(distances + q0 * k, dOutDistances.get(), mt * k * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream.get()));
    stream.sync();
    control.report(tile + 1, tiles);
  }
}

}  // namespace cuda
}  // namespace imiad
