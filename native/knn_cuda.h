// Exact brute-force k-NN on a CUDA GPU, with the same results as the CPU kernel (native/knn.h): per query the k
// nearest bank rows by Euclidean distance, ascending, ties to the smaller row index.
//
// Structure (after faiss's GPU flat index, without cuBLAS): the bank and its squared norms live on the device for
// the lifetime of the index; queries are processed in tiles sized from a memory budget; for each (query tile,
// bank chunk) a register-blocked SGEMM-style kernel computes ||q||^2 + ||b||^2 - 2 q.b into a scratch tile, and a
// per-query selection kernel merges the tile into a running candidate list of k' = k + margin rows (the full
// distance matrix never exists). The candidates are then re-ranked on the CPU kernel's exactSquaredDistance()
// (direct differences in double, index order, no fused multiply-add), and a query whose (k'+1)-th approximate distance does not clear its k-th exact distance
// by the float error bound of the norm expansion is recomputed exactly against the whole bank, so the ranking is
// exactly that of the direct-difference distance, never an artefact of cancellation in the expansion.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "control.h"
#include "cuda_device.h"

namespace imiad {
namespace cuda {

class KnnBank {
 public:
  // The largest k served on the GPU; the TypeScript wrapper sends larger k to the CPU kernel.
  static constexpr size_t kMaxK = 1024;

  // Reserves device memory for a [rows, dims] bank (throws DeviceOutOfMemory naming the bytes it needs); the
  // bank itself is uploaded by the first search, on a worker thread, so the constructor stays cheap.
  KnnBank(size_t rows, size_t dims);
  ~KnnBank();
  KnnBank(const KnnBank&) = delete;
  KnnBank& operator=(const KnnBank&) = delete;

  // Writes [queryRows, k] indices and distances. `bank` is the same host matrix the index was made for (read
  // only by the first call). Searches on one bank run one at a time.
  void search(const float* bank, const float* queries, size_t queryRows, size_t k, int32_t* indices,
              float* distances, const RunControl& control);

  size_t rows() const;
  size_t dims() const;
  // Device memory held by the index between searches: the bank and its norms.
  uint64_t deviceBytes() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Bytes a [rows, dims] bank needs on the device (bank plus norms).
uint64_t knnBankDeviceBytes(size_t rows, size_t dims);

}  // namespace cuda
}  // namespace imiad
