// Exact k-NN over a flat L2 bank, after faiss's IndexFlatL2 (faiss/utils/distances.cpp): see knn.h for the
// structure and for why every near candidate is re-ranked with the exact direct-difference distance.
#include "knn.h"

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "parallel.h"

namespace imiad {
namespace {

// Queries per micro-kernel call (the register tile's height) for each kernel, chosen so that the accumulators
// fill the register file: 12 x 2 zmm of 32, 6 x 2 ymm of 16 (per 16-row half panel), 4 x 32 floats portable.
constexpr size_t kMrAvx512 = 12;
constexpr size_t kMrAvx2 = 6;
constexpr size_t kMrPortable = 4;
// How many dims ahead the AVX-512 kernel prefetches the panel it streams (each dim is two cache lines).
constexpr size_t kPrefetchDims = 8;
// A norm this large could overflow float scores; such inputs take the exact plain path instead.
constexpr double kMaxSafeNorm2 = 1e36;

static_assert(kKnnQueryBlock % kMrAvx512 == 0 && kKnnQueryBlock % kMrAvx2 == 0 && kKnnQueryBlock % kMrPortable == 0,
              "a query block must hold whole micro-panels");
static_assert(kKnnSearchBatch % kKnnQueryBlock == 0, "a search batch must hold whole query blocks");
static_assert(kKnnBankSlice % kKnnPanelRows == 0, "a bank slice must hold whole panels");
static_assert(kKnnPanelRows == 32, "the micro-kernels are written for 32-row panels (one bit per row in a mask)");

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

AlignedFloats allocateFloats(size_t count) {
  const size_t bytes = std::max<size_t>(64, (count * sizeof(float) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return AlignedFloats(static_cast<float*>(p));
}

size_t microPanelRows(KnnIsa isa) {
  return isa == KnnIsa::Avx512 ? kMrAvx512 : isa == KnnIsa::Avx2 ? kMrAvx2 : kMrPortable;
}

// JavaScript's spelling of a non-finite number, for messages in the project's format.
std::string jsNumber(float v) {
  if (std::isnan(v)) return "NaN";
  return v > 0 ? "Infinity" : "-Infinity";
}

[[noreturn]] void throwNotFinite(const char* name, float value, size_t index) {
  throw InvalidArgument("ERR_IMIAD_NOT_FINITE", std::string("Expected finite numbers in ") + name +
                                                    " but received " + jsNumber(value) +
                                                    " of type number at index " + std::to_string(index));
}

void checkK(size_t k, size_t rows) {
  if (k < 1 || k > rows) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected integer between 1 and " + std::to_string(rows) +
                                                 " for k but received " + std::to_string(k) + " of type number");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Micro-kernels. Each computes, for MR packed queries (element (d, i) at a[d * stride + i]) against one packed panel
// (element (d, j) at panel[d * 32 + j]), the scores s[i][j] = norm[j] - 2 <q_i, b_j> and compares them in registers
// with each query's threshold: masks[i] gets bit j when s[i][j] <= thr[i], and only then is the row of scores
// stored to s[i * 32 ..]. Returns whether any bit is set. Every dot product is accumulated in index order in its
// own lane, so a score depends only on its query and row, never on the tiling or the thread that computed it.
// ---------------------------------------------------------------------------------------------------------------
using TileFn = bool (*)(const float* a, const float* panel, size_t dims, const float* norms, const float* thr,
                        float* s, uint32_t* masks);

template <int MR>
__attribute__((target("avx512f"))) bool tileAvx512(const float* a, const float* panel, size_t dims,
                                                   const float* norms, const float* thr, float* s,
                                                   uint32_t* masks) {
  __m512 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) {
    c0[i] = _mm512_setzero_ps();
    c1[i] = _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (size_t d = 0; d < dims; ++d) {
    const float* bp = panel + d * kKnnPanelRows;
    _mm_prefetch(reinterpret_cast<const char*>(bp + kPrefetchDims * kKnnPanelRows), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bp + kPrefetchDims * kKnnPanelRows + 16), _MM_HINT_T0);
    const __m512 b0 = _mm512_load_ps(bp);
    const __m512 b1 = _mm512_load_ps(bp + 16);
    const float* ap = a + d * kMrAvx512;
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(ap[i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
  }
  const __m512 n0 = _mm512_load_ps(norms);
  const __m512 n1 = _mm512_load_ps(norms + 16);
  bool any = false;
  for (int i = 0; i < MR; ++i) {
    const __m512 s0 = _mm512_sub_ps(n0, _mm512_add_ps(c0[i], c0[i]));
    const __m512 s1 = _mm512_sub_ps(n1, _mm512_add_ps(c1[i], c1[i]));
    const __m512 t = _mm512_set1_ps(thr[i]);
    const uint32_t m = static_cast<uint32_t>(_mm512_cmp_ps_mask(s0, t, _CMP_LE_OQ)) |
                       (static_cast<uint32_t>(_mm512_cmp_ps_mask(s1, t, _CMP_LE_OQ)) << 16);
    masks[i] = m;
    if (m != 0) {
      _mm512_storeu_ps(s + i * kKnnPanelRows, s0);
      _mm512_storeu_ps(s + i * kKnnPanelRows + 16, s1);
      any = true;
    }
  }
  return any;
}

template <int MR>
__attribute__((target("avx2,fma"))) bool tileAvx2(const float* a, const float* panel, size_t dims,
                                                  const float* norms, const float* thr, float* s, uint32_t* masks) {
  for (int i = 0; i < MR; ++i) masks[i] = 0;
  bool any = false;
  // The 32-row panel in two 16-row halves, so that the accumulators fit the 16 ymm registers.
  for (size_t h = 0; h < kKnnPanelRows; h += 16) {
    __m256 c0[MR], c1[MR];
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm256_setzero_ps();
      c1[i] = _mm256_setzero_ps();
    }
#pragma GCC unroll 2
    for (size_t d = 0; d < dims; ++d) {
      const float* bp = panel + d * kKnnPanelRows + h;
      const __m256 b0 = _mm256_load_ps(bp);
      const __m256 b1 = _mm256_load_ps(bp + 8);
      const float* ap = a + d * kMrAvx2;
      for (int i = 0; i < MR; ++i) {
        const __m256 ai = _mm256_broadcast_ss(ap + i);
        c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
        c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
      }
    }
    const __m256 n0 = _mm256_load_ps(norms + h);
    const __m256 n1 = _mm256_load_ps(norms + h + 8);
    for (int i = 0; i < MR; ++i) {
      const __m256 s0 = _mm256_sub_ps(n0, _mm256_add_ps(c0[i], c0[i]));
      const __m256 s1 = _mm256_sub_ps(n1, _mm256_add_ps(c1[i], c1[i]));
      const __m256 t = _mm256_set1_ps(thr[i]);
      const uint32_t m = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(s0, t, _CMP_LE_OQ))) |
                         (static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(s1, t, _CMP_LE_OQ))) << 8);
      if (m != 0) {
        masks[i] |= m << h;
        _mm256_storeu_ps(s + i * kKnnPanelRows + h, s0);
        _mm256_storeu_ps(s + i * kKnnPanelRows + h + 8, s1);
        any = true;
      }
    }
  }
  return any;
}

template <int MR>
bool tilePortable(const float* a, const float* panel, size_t dims, const float* norms, const float* thr, float* s,
                  uint32_t* masks) {
  float c[MR][kKnnPanelRows] = {};
  for (size_t d = 0; d < dims; ++d) {
    const float* bp = panel + d * kKnnPanelRows;
    const float* ap = a + d * kMrPortable;
    for (int i = 0; i < MR; ++i) {
      const float ai = ap[i];
      for (size_t j = 0; j < kKnnPanelRows; ++j) c[i][j] += ai * bp[j];
    }
  }
  bool any = false;
  for (int i = 0; i < MR; ++i) {
    uint32_t m = 0;
    for (size_t j = 0; j < kKnnPanelRows; ++j) {
      const float score = norms[j] - (c[i][j] + c[i][j]);
      s[i * kKnnPanelRows + j] = score;
      if (score <= thr[i]) m |= 1u << j;
    }
    masks[i] = m;
    any = any || m != 0;
  }
  return any;
}

// tiles[isa][r - 1] handles a micro-panel of r valid queries.
const TileFn kTilesAvx512[kMrAvx512] = {tileAvx512<1>, tileAvx512<2>, tileAvx512<3>,  tileAvx512<4>,
                                        tileAvx512<5>, tileAvx512<6>, tileAvx512<7>,  tileAvx512<8>,
                                        tileAvx512<9>, tileAvx512<10>, tileAvx512<11>, tileAvx512<12>};
const TileFn kTilesAvx2[kMrAvx2] = {tileAvx2<1>, tileAvx2<2>, tileAvx2<3>, tileAvx2<4>, tileAvx2<5>, tileAvx2<6>};
const TileFn kTilesPortable[kMrPortable] = {tilePortable<1>, tilePortable<2>, tilePortable<3>, tilePortable<4>};

const TileFn* tilesFor(KnnIsa isa) {
  return isa == KnnIsa::Avx512 ? kTilesAvx512 : isa == KnnIsa::Avx2 ? kTilesAvx2 : kTilesPortable;
}

// ---------------------------------------------------------------------------------------------------------------
// The error bound. With u = 2^-24, a float dot product of n terms accumulated in order (with or without fused
// multiply-add) is within gamma_n * ||q|| * ||b|| of the real one (gamma_n = n u / (1 - n u), Higham, Accuracy and
// Stability of Numerical Algorithms, 3.1); the stored norm, the subtraction and the threshold's own rounding each
// add at most u times |score| <= ||b||^2 + 2 ||q|| ||b||; the double direct difference that defines the ranking is
// within (n + 2) 2^-53 (||q|| + ||b||)^2 of the real squared distance. E bounds the sum of these (generously: x 1.25,
// plus an absolute term for subnormal underflow). If s_k is the k-th smallest computed score, every row of the
// exact top k (ties included) has a computed score <= s_k + 2E, so those rows, and only they, are re-ranked.
// ---------------------------------------------------------------------------------------------------------------
float scoreMargin(double queryNorm, double maxBankNorm, size_t dims) {
  const double u = 0x1p-24;
  const double n = static_cast<double>(dims);
  const double gamma = n * u / (1.0 - n * u);
  const double qb = queryNorm * maxBankNorm;
  const double bb = maxBankNorm * maxBankNorm;
  const double scoreError = 2.0 * gamma * qb + 6.0 * u * (bb + 2.0 * qb);
  const double exactError = (n + 4.0) * 0x1p-52 * (queryNorm + maxBankNorm) * (queryNorm + maxBankNorm);
  const double underflow = (n + 8.0) * 0x1p-140;
  const double e = 1.25 * (scoreError + exactError) + underflow;
  return std::nextafter(static_cast<float>(2.0 * e), std::numeric_limits<float>::infinity());
}

struct Candidate {
  float score;
  int32_t index;
};

// One query's running selection over one bank slice: a threshold (the k-th smallest score so far plus the margin,
// FLT_MAX until k rows were seen) that only decreases, and every row that was within it when seen. k = 1 keeps a
// running minimum, small k a max-heap of the k smallest scores, large k refreshes the threshold by partial
// selection (nth_element) whenever the candidate list has doubled.
class Selector {
 public:
  void init(size_t k, float margin) {
    k_ = k;
    margin_ = margin;
    capacity_ = k <= kKnnHeapMaxK ? k + 64 : 2 * k + 1024;
  }

  float threshold() const { return threshold_; }
  std::vector<Candidate>& candidates() { return candidates_; }

  void offer(float score, int32_t index) {
    if (!(score <= threshold_)) return;
    if (k_ == 1) {
      if (score < best_) {
        best_ = score;
        threshold_ = withMargin(best_);
      }
    } else if (k_ <= kKnnHeapMaxK) {
      if (heap_.size() < k_) {
        heap_.push_back(score);
        std::push_heap(heap_.begin(), heap_.end());
        if (heap_.size() == k_) threshold_ = withMargin(heap_.front());
      } else if (score < heap_.front()) {
        std::pop_heap(heap_.begin(), heap_.end());
        heap_.back() = score;
        std::push_heap(heap_.begin(), heap_.end());
        threshold_ = withMargin(heap_.front());
      }
    }
    if (!(score <= threshold_)) return;
    candidates_.push_back({score, index});
    if (candidates_.size() >= capacity_) compact();
  }

  float withMargin(float score) const { return std::min(score + margin_, FLT_MAX); }

 private:
  void compact() {
    if (k_ > kKnnHeapMaxK && candidates_.size() > k_) {
      std::vector<float> scores(candidates_.size());
      for (size_t i = 0; i < candidates_.size(); ++i) scores[i] = candidates_[i].score;
      std::nth_element(scores.begin(), scores.begin() + static_cast<std::ptrdiff_t>(k_ - 1), scores.end());
      threshold_ = std::min(threshold_, withMargin(scores[k_ - 1]));
    }
    const float t = threshold_;
    candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                     [t](const Candidate& c) { return !(c.score <= t); }),
                      candidates_.end());
    // Many rows within the margin (near-duplicates, or k close to the bank size): grow rather than re-scan.
    capacity_ = std::max(capacity_, 2 * candidates_.size());
  }

  size_t k_ = 1;
  float margin_ = 0;
  float threshold_ = FLT_MAX;
  float best_ = std::numeric_limits<float>::infinity();
  size_t capacity_ = 64;
  std::vector<float> heap_;
  std::vector<Candidate> candidates_;
};

struct Neighbour {
  double distance2;
  int32_t index;
  bool operator<(const Neighbour& o) const {
    return distance2 < o.distance2 || (distance2 == o.distance2 && index < o.index);
  }
};

// Four rows at once (independent accumulators hide the add latency); each sum is still the same ordered chain as
// exactSquaredDistance, so the values are identical. Kept free of contraction like the single-row version.
__attribute__((optimize("fp-contract=off"))) void exactSquaredDistances4(const float* q, const float* b0,
                                                                          const float* b1, const float* b2,
                                                                          const float* b3, size_t dims,
                                                                          double* out) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t d = 0; d < dims; ++d) {
    const double x = q[d];
    const double t0 = x - static_cast<double>(b0[d]);
    const double t1 = x - static_cast<double>(b1[d]);
    const double t2 = x - static_cast<double>(b2[d]);
    const double t3 = x - static_cast<double>(b3[d]);
    s0 += t0 * t0;
    s1 += t1 * t1;
    s2 += t2 * t2;
    s3 += t3 * t3;
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// Exact distances of the candidate rows to one query, then the k smallest by (distance, index) written out.
void rankExactly(const float* bank, size_t dims, const float* query, std::vector<Neighbour>& rows, size_t k,
                 int32_t* indices, float* distances) {
  size_t i = 0;
  for (; i + 4 <= rows.size(); i += 4) {
    double out[4];
    exactSquaredDistances4(query, bank + static_cast<size_t>(rows[i].index) * dims,
                           bank + static_cast<size_t>(rows[i + 1].index) * dims,
                           bank + static_cast<size_t>(rows[i + 2].index) * dims,
                           bank + static_cast<size_t>(rows[i + 3].index) * dims, dims, out);
    for (size_t j = 0; j < 4; ++j) rows[i + j].distance2 = out[j];
  }
  for (; i < rows.size(); ++i) {
    rows[i].distance2 = exactSquaredDistance(query, bank + static_cast<size_t>(rows[i].index) * dims, dims);
  }
  const auto kth = rows.begin() + static_cast<std::ptrdiff_t>(k);
  if (k < rows.size()) std::nth_element(rows.begin(), kth - 1, rows.end());
  std::sort(rows.begin(), kth);
  for (size_t j = 0; j < k; ++j) {
    indices[j] = rows[j].index;
    distances[j] = static_cast<float>(std::sqrt(rows[j].distance2));
  }
}

size_t firstNonFinite(const float* values, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return count;
}

}  // namespace

__attribute__((optimize("fp-contract=off"))) double exactSquaredDistance(const float* a, const float* b,
                                                                          size_t dims) {
  double sum = 0;
  for (size_t d = 0; d < dims; ++d) {
    const double t = static_cast<double>(a[d]) - static_cast<double>(b[d]);
    sum += t * t;
  }
  return sum;
}

KnnIsa knnBestIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return KnnIsa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KnnIsa::Avx2;
  return KnnIsa::Portable;
}

const char* knnIsaName(KnnIsa isa) {
  switch (isa) {
    case KnnIsa::Avx512:
      return "avx512";
    case KnnIsa::Avx2:
      return "avx2";
    case KnnIsa::Portable:
      return "portable";
    default:
      return "auto";
  }
}

struct KnnFlatIndex::Prepared {
  AlignedFloats panels;  // [panels][dims][kKnnPanelRows]; rows past the bank are zero
  AlignedFloats norms;   // [panels * kKnnPanelRows] squared norms; +inf past the bank, so no padding row passes
  double maxNorm = 0;    // the largest row norm (not squared), for the error bound
  bool scoresSafe = true;
};

KnnFlatIndex::KnnFlatIndex(const float* bank, size_t rows, size_t dims, KnnIsa isa)
    : bank_(bank),
      rows_(rows),
      dims_(dims),
      isa_(isa == KnnIsa::Auto ? knnBestIsa() : isa),
      panels_((rows + kKnnPanelRows - 1) / kKnnPanelRows) {
  if (rows == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "Expected at least 1 row(s) in bank");
  if (dims == 0) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected positive integer for dims but received 0");
  if (rows > static_cast<size_t>(INT32_MAX)) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at most 2147483647 rows in bank");
  }
}

size_t KnnFlatIndex::stateBytes() const {
  return panels_ * kKnnPanelRows * (dims_ + 1) * sizeof(float);
}

std::shared_ptr<const KnnFlatIndex::Prepared> KnnFlatIndex::prepare(const RunControl& control) const {
  std::lock_guard<std::mutex> lock(prepareMutex_);
  if (prepared_) return prepared_;
  auto p = std::make_shared<Prepared>();
  p->panels = allocateFloats(panels_ * kKnnPanelRows * dims_);
  p->norms = allocateFloats(panels_ * kKnnPanelRows);
  std::vector<size_t> firstBad(panels_, SIZE_MAX);
  std::vector<double> maxNorm2(panels_, 0.0);
  const size_t dims = dims_;
  parallelChunks(panels_, 64, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    for (size_t panel = begin; panel < end; ++panel) {
      float* out = p->panels.get() + panel * kKnnPanelRows * dims;
      const size_t row0 = panel * kKnnPanelRows;
      const size_t count = std::min(kKnnPanelRows, rows_ - row0);
      for (size_t r = 0; r < count; ++r) {
        const float* row = bank_ + (row0 + r) * dims;
        const size_t bad = firstNonFinite(row, dims);
        if (bad < dims && firstBad[panel] == SIZE_MAX) firstBad[panel] = (row0 + r) * dims + bad;
        double norm2 = 0;
        for (size_t d = 0; d < dims; ++d) norm2 += static_cast<double>(row[d]) * row[d];
        p->norms[row0 + r] = static_cast<float>(norm2);
        maxNorm2[panel] = std::max(maxNorm2[panel], norm2);
      }
      for (size_t r = count; r < kKnnPanelRows; ++r) p->norms[row0 + r] = std::numeric_limits<float>::infinity();
      for (size_t d = 0; d < dims; ++d) {
        float* dst = out + d * kKnnPanelRows;
        for (size_t r = 0; r < count; ++r) dst[r] = bank_[(row0 + r) * dims + d];
        for (size_t r = count; r < kKnnPanelRows; ++r) dst[r] = 0.0f;
      }
    }
  });
  const size_t bad = *std::min_element(firstBad.begin(), firstBad.end());
  if (bad != SIZE_MAX) throwNotFinite("bank", bank_[bad], bad);
  const double max2 = *std::max_element(maxNorm2.begin(), maxNorm2.end());
  p->maxNorm = std::sqrt(max2);
  p->scoresSafe = max2 < kMaxSafeNorm2;
  prepared_ = std::move(p);
  return prepared_;
}

void KnnFlatIndex::search(const float* queries, size_t nq, size_t k, int32_t* indices, float* distances,
                          const RunControl& control) const {
  checkK(k, rows_);
  if (nq == 0) return;
  const size_t dims = dims_;
  const size_t badQuery = firstNonFinite(queries, nq * dims);
  if (badQuery < nq * dims) throwNotFinite("queries", queries[badQuery], badQuery);
  const std::shared_ptr<const Prepared> prepared = prepare(control);
  const Prepared& P = *prepared;

  std::vector<double> queryNorm(nq);
  bool safe = P.scoresSafe;
  for (size_t q = 0; q < nq; ++q) {
    double norm2 = 0;
    for (size_t d = 0; d < dims; ++d) norm2 += static_cast<double>(queries[q * dims + d]) * queries[q * dims + d];
    queryNorm[q] = std::sqrt(norm2);
    safe = safe && norm2 < kMaxSafeNorm2;
  }
  if (!safe) {
    knnSearchPlain(bank_, rows_, queries, nq, dims, k, indices, distances, control);
    return;
  }
  // Batches bound the per-query selection state whatever the number of queries: at most kKnnSearchBatch queries,
  // fewer when k is so large that each query's candidate lists are big (they hold up to 2k + 1024 per slice).
  const size_t slices = (rows_ + kKnnBankSlice - 1) / kKnnBankSlice;
  const size_t perQueryBytes = std::min(rows_, slices * (2 * k + 1024)) * sizeof(float) * 2 + 256;
  const size_t batch = std::max(kKnnQueryBlock, std::min(kKnnSearchBatch, kKnnSelectionBudget / perQueryBytes) /
                                                    kKnnQueryBlock * kKnnQueryBlock);
  for (size_t b = 0; b < nq; b += batch) {
    const size_t count = std::min(batch, nq - b);
    searchBatch(P, queries + b * dims, count, k, queryNorm.data() + b, indices + b * k, distances + b * k, control);
  }
}

void KnnFlatIndex::searchBatch(const Prepared& P, const float* queries, size_t nq, size_t k, const double* queryNorm,
                               int32_t* indices, float* distances, const RunControl& control) const {
  const size_t dims = dims_;
  // Queries packed micro-panel by micro-panel: element (d, i) of micro-panel m at m * dims * mr + d * mr + i.
  const size_t mr = microPanelRows(isa_);
  const size_t microPanels = (nq + mr - 1) / mr;
  AlignedFloats packed = allocateFloats(microPanels * mr * dims);
  parallelChunks(microPanels, 16, [&](size_t, size_t begin, size_t end) {
    for (size_t m = begin; m < end; ++m) {
      float* out = packed.get() + m * mr * dims;
      for (size_t d = 0; d < dims; ++d) {
        for (size_t i = 0; i < mr; ++i) {
          const size_t q = m * mr + i;
          out[d * mr + i] = q < nq ? queries[q * dims + d] : 0.0f;
        }
      }
    }
  });

  const size_t slices = (rows_ + kKnnBankSlice - 1) / kKnnBankSlice;
  const size_t queryBlocks = (nq + kKnnQueryBlock - 1) / kKnnQueryBlock;
  std::vector<float> margin(nq);
  for (size_t q = 0; q < nq; ++q) margin[q] = scoreMargin(queryNorm[q], P.maxNorm, dims);
  std::vector<Selector> selectors(slices * nq);  // [slice][query]
  for (size_t sl = 0; sl < slices; ++sl) {
    for (size_t q = 0; q < nq; ++q) selectors[sl * nq + q].init(k, margin[q]);
  }

  const TileFn* tiles = tilesFor(isa_);
  // Chunk c = (bank slice c / queryBlocks, query block c % queryBlocks): both threads walk the same slice of the
  // bank at about the same time. The chunking depends only on the problem, so results never depend on threads.
  parallelChunks(slices * queryBlocks, 1, [&](size_t c, size_t, size_t) {
    const size_t slice = c / queryBlocks;
    const size_t q0 = (c % queryBlocks) * kKnnQueryBlock;
    const size_t q1 = std::min(nq, q0 + kKnnQueryBlock);
    const size_t panel0 = slice * kKnnBankSlice / kKnnPanelRows;
    const size_t panel1 = std::min(panels_, (slice + 1) * kKnnBankSlice / kKnnPanelRows);
    Selector* sel = selectors.data() + slice * nq;
    float thr[kKnnQueryBlock];
    for (size_t q = q0; q < q1; ++q) thr[q - q0] = sel[q].threshold();
    alignas(64) float scores[kMrAvx512 * kKnnPanelRows];
    uint32_t masks[kMrAvx512];
    for (size_t panel = panel0; panel < panel1; ++panel) {
      control.throwIfCancelled();
      const float* panelData = P.panels.get() + panel * kKnnPanelRows * dims;
      const float* norms = P.norms.get() + panel * kKnnPanelRows;
      const int32_t row0 = static_cast<int32_t>(panel * kKnnPanelRows);
      for (size_t m0 = q0; m0 < q1; m0 += mr) {
        const size_t count = std::min(mr, q1 - m0);
        if (!tiles[count - 1](packed.get() + (m0 / mr) * mr * dims, panelData, dims, norms, thr + (m0 - q0), scores,
                              masks)) {
          continue;
        }
        for (size_t i = 0; i < count; ++i) {
          Selector& s = sel[m0 + i];
          for (uint32_t bits = masks[i]; bits != 0; bits &= bits - 1) {
            const int j = __builtin_ctz(bits);
            s.offer(scores[i * kKnnPanelRows + j], row0 + j);
          }
          thr[m0 - q0 + i] = s.threshold();
        }
      }
    }
  });

  // Merge each query's slices, keep the rows within the margin of the k-th smallest score, rank them exactly.
  parallelChunks(nq, kKnnRerankBlock, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    std::vector<float> scores;
    std::vector<Neighbour> rows;
    for (size_t q = begin; q < end; ++q) {
      scores.clear();
      for (size_t sl = 0; sl < slices; ++sl) {
        for (const Candidate& c : selectors[sl * nq + q].candidates()) scores.push_back(c.score);
      }
      if (scores.size() < k) throw std::logic_error("k-NN: fewer candidates than k (internal error)");
      std::nth_element(scores.begin(), scores.begin() + static_cast<std::ptrdiff_t>(k - 1), scores.end());
      const float limit = selectors[q].withMargin(scores[k - 1]);
      rows.clear();
      for (size_t sl = 0; sl < slices; ++sl) {
        for (const Candidate& c : selectors[sl * nq + q].candidates()) {
          if (c.score <= limit) rows.push_back({0.0, c.index});
        }
      }
      rankExactly(bank_, dims, queries + q * dims, rows, k, indices + q * k, distances + q * k);
    }
  });
}

void knnSearchPlain(const float* bank, size_t rows, const float* queries, size_t nq, size_t dims, size_t k,
                    int32_t* indices, float* distances, const RunControl& control) {
  checkK(k, rows);
  const size_t badBank = firstNonFinite(bank, rows * dims);
  if (badBank < rows * dims) throwNotFinite("bank", bank[badBank], badBank);
  const size_t badQuery = firstNonFinite(queries, nq * dims);
  if (badQuery < nq * dims) throwNotFinite("queries", queries[badQuery], badQuery);
  parallelChunks(nq, kKnnRerankBlock, [&](size_t, size_t begin, size_t end) {
    std::vector<Neighbour> all(rows);
    for (size_t q = begin; q < end; ++q) {
      control.throwIfCancelled();
      for (size_t r = 0; r < rows; ++r) {
        all[r] = {exactSquaredDistance(queries + q * dims, bank + r * dims, dims), static_cast<int32_t>(r)};
      }
      const auto kth = all.begin() + static_cast<std::ptrdiff_t>(k);
      if (k < rows) std::nth_element(all.begin(), kth - 1, all.end());
      std::sort(all.begin(), kth);
      for (size_t j = 0; j < k; ++j) {
        indices[q * k + j] = all[j].index;
        distances[q * k + j] = static_cast<float>(std::sqrt(all[j].distance2));
      }
    }
  });
}

}  // namespace imiad
