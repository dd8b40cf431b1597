// Exact brute-force k-nearest-neighbour search under the Euclidean distance, structured after faiss's flat L2 index
// (IndexFlatL2 / exhaustive_L2sqr_blas in faiss/utils/distances.cpp): bank norms computed once per index, the
// distance matrix from a tiled matrix product as ||x||^2 + ||y||^2 - 2<x, y>, a fused running-minimum path for
// k = 1, per-query heaps for small k and partial selection (nth_element) for large k.
//
// Unlike faiss the product is not a BLAS sgemm writing a distance block to memory: the bank is packed once into
// panels of kPanelRows rows and a register-tiled AVX-512 (or AVX2, or portable) micro-kernel computes a tile of dot
// products for a few queries against one panel, after which the tile is compared in registers against each query's
// running threshold, so the distance matrix is never written. The norm formula has rounding error, so every row
// that could belong to the true top k (within a proven error bound of the k-th candidate) is re-ranked with the
// exact direct-difference distance; the result is therefore identical to exactSquaredDistance() on every pair
// followed by a sort on (distance, index), which is also what knnSearchPlain() does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "control.h"

namespace imiad {

// Bank rows per packed panel: the micro-kernel's width (two 16-lane AVX-512 vectors, four 8-lane AVX2 vectors).
constexpr size_t kKnnPanelRows = 32;
// Queries per work chunk: their packed rows stay in L2 while a panel of the bank is reused across all of them.
constexpr size_t kKnnQueryBlock = 96;
// Bank rows per work chunk: a chunk is (query block, bank slice), so even a few queries split over both cores.
constexpr size_t kKnnBankSlice = 8192;
// Queries searched together; bounds the per-query selection state of one search call.
constexpr size_t kKnnSearchBatch = 3072;
// Bytes of candidate lists a batch may hold; a large k gets smaller batches (never under one query block).
constexpr size_t kKnnSelectionBudget = size_t(256) << 20;
// Up to this k the per-query threshold is kept by a max-heap; above it, by periodic partial selection.
constexpr size_t kKnnHeapMaxK = 64;
// Queries per chunk in the final exact re-ranking and in the plain loop.
constexpr size_t kKnnRerankBlock = 8;

// Which micro-kernel runs the product; Auto picks the best the CPU supports (tests force each one).
enum class KnnIsa { Auto, Avx512, Avx2, Portable };

// The best kernel this CPU runs (never Auto).
KnnIsa knnBestIsa();
const char* knnIsaName(KnnIsa isa);

// The exact squared distance both the fast path's re-ranking and the plain reference use: float inputs widened to
// double, differences squared and summed in index order, no fused multiply-add. The TypeScript test reference
// computes the same expression, so all three agree bit for bit.
double exactSquaredDistance(const float* a, const float* b, size_t dims);

// An index over a row-major [rows, dims] bank that the caller keeps alive and unmodified while the index exists.
// Packing (and the finiteness check of the bank) happens on the first search, on the searching thread, so that
// creating an index never blocks.
class KnnFlatIndex {
 public:
  KnnFlatIndex(const float* bank, size_t rows, size_t dims, KnnIsa isa = KnnIsa::Auto);

  size_t rows() const { return rows_; }
  size_t dims() const { return dims_; }
  KnnIsa isa() const { return isa_; }
  // Bytes the index holds once prepared: the packed panels and the norms (the bank itself belongs to the caller).
  size_t stateBytes() const;

  // Writes, for each of the nq queries, the k nearest rows (ascending distance, ties to the smaller index) to
  // indices[nq * k] and their Euclidean distances to distances[nq * k]. Throws InvalidArgument for k outside
  // [1, rows] or non-finite values, Cancelled when control's flag is set. Safe to call concurrently.
  void search(const float* queries, size_t nq, size_t k, int32_t* indices, float* distances,
              const RunControl& control) const;

 private:
  struct Prepared;
  std::shared_ptr<const Prepared> prepare(const RunControl& control) const;
  void searchBatch(const Prepared& prepared, const float* queries, size_t nq, size_t k, const double* queryNorm,
                   int32_t* indices, float* distances, const RunControl& control) const;

  const float* bank_;
  size_t rows_;
  size_t dims_;
  KnnIsa isa_;
  size_t panels_;

  // Guards the one-time packing (a mutex rather than std::call_once, which does not reliably let a throwing
  // initialiser be retried with every libstdc++).
  mutable std::mutex prepareMutex_;
  mutable std::shared_ptr<const Prepared> prepared_;
};

// The plain reference: exactSquaredDistance for every (query, row) pair, then a sort on (distance, index).
void knnSearchPlain(const float* bank, size_t rows, const float* queries, size_t nq, size_t dims, size_t k,
                    int32_t* indices, float* distances, const RunControl& control);

}  // namespace imiad
