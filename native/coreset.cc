// Greedy coreset (k-center greedy), PatchCore (Roth et al., CVPR 2022) Algorithm 1; the projected mode follows the
// reference ApproximateGreedyCoresetSampler (amazon-science/patchcore-inspection, sampler.py). See coreset.h.
//
// The fast kernel selects exactly what the plain loop selects: it only ever skips a row when a bound proves that
// the row's computed distance to the new center could not be below its current minimum (so the plain loop would
// not have changed it either), and every row it does measure gets the plain loop's double-precision distance. Three
// bounds, cheapest first:
//  - Groups (triangle inequality): every row belongs to its nearest selected row ("center"). A row i of group a can
//    only get closer to a new center c if d(a, c) < 2 d(i, a), so a whole group is skipped when d(a, c) >= 2 * (its
//    radius), and a row of a visited group when d(a, c) >= 2 d(i, a). d(a, c) itself is bounded from below through
//    8 pivots (|d(a, p) - d(c, p)|) and the codes before it is computed. Each group keeps its best row (largest
//    minimum distance, smallest index among ties), so the next selection is a scan over the groups.
//  - Codes: a byte per dimension (Codes) gives d(i, c) >= s sqrt(S) - err_i - err_c with S an exact integer, at a
//    quarter of a float row's memory and a few SIMD instructions per 64 dims.
//  - Modes: where the groups rule out little (unstructured data), the kernel sweeps all rows in memory order with
//    the codes alone ("linear mode"), sixteen rows per block kernel call, and checks the groups again now and then.
// All margins for float rounding are derived at PruneRule / pruneMargin() and buildCodes(). Work is split into
// chunks fixed by the problem size and owned by fixed members of a thread team (native/parallel.h), so the result
// does not depend on the thread count.
#include "coreset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <cstdlib>
#include <string>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "parallel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// No "fma" in any clone: the distance and the projection are defined without fused multiply-add (coreset.h).
#define IMIAD_CORESET_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
// Where the rounding of the order of operations does not matter (the bound covers any order), no optimize().
#define IMIAD_CORESET_CLONES_ANY __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define IMIAD_CORESET_CLONES
#define IMIAD_CORESET_CLONES_ANY
#endif

#if defined(__GNUC__)
#define IMIAD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define IMIAD_ALWAYS_INLINE inline
#endif

namespace imiad {
namespace {

// Selected rows carry this minimum distance: below any real distance, so they never win nor change again.
constexpr double kSelected = -1.0;
// Rows per chunk of a pass over rows; members per work item of a visited group; centers per chunk of the
// center-to-center pass. Fixed by the problem, never by the thread count (determinism).
constexpr size_t kRowChunk = 1024;
constexpr size_t kItemRows = 256;
constexpr size_t kCenterChunk = 256;
// Linear-mode steps after which the group lists and maxima are rebuilt exactly (and whether the data has become
// structured enough for group mode is checked again); doubled, up to kRefreshMax, each time it has not.
constexpr size_t kRefreshSteps = 32;
constexpr size_t kRefreshMax = 1024;

IMIAD_ALWAYS_INLINE double laneDistance(const float* a, const float* b, size_t dims) {
  double acc[kDistanceLanes] = {};
  size_t i = 0;
  for (; i + kDistanceLanes <= dims; i += kDistanceLanes) {
    for (size_t j = 0; j < kDistanceLanes; ++j) {
      const double d = static_cast<double>(a[i + j]) - static_cast<double>(b[i + j]);
      const double sq = d * d;
      acc[j] = acc[j] + sq;
    }
  }
  for (size_t j = 0; i + j < dims; ++j) {
    const double d = static_cast<double>(a[i + j]) - static_cast<double>(b[i + j]);
    const double sq = d * d;
    acc[j] = acc[j] + sq;
  }
  // Pairwise reduction written out with constant bounds so that it stays in registers.
  double r8[8], r4[4];
  for (size_t j = 0; j < 8; ++j) r8[j] = acc[j] + acc[j + 8];
  for (size_t j = 0; j < 4; ++j) r4[j] = r8[j] + r8[j + 4];
  const double r0 = r4[0] + r4[2], r1 = r4[1] + r4[3];
  return r0 + r1;
}

struct Best {
  double value = -2.0;  // below kSelected: "no row"
  uint32_t row = std::numeric_limits<uint32_t>::max();
};

IMIAD_ALWAYS_INLINE bool better(double value, uint32_t row, const Best& than) {
  return value > than.value || (value == than.value && row < than.row);
}

IMIAD_ALWAYS_INLINE void offer(Best& best, double value, uint32_t row) {
  if (better(value, row, best)) {
    best.value = value;
    best.row = row;
  }
}

// One pass of the plain loop over rows [begin, end): min-update against center c, and the best row after it.
IMIAD_CORESET_CLONES Best plainPass(const float* X, size_t dims, size_t begin, size_t end, const float* c,
                                    double* mind2) {
  Best best;
  for (size_t i = begin; i < end; ++i) {
    double m2 = mind2[i];
    if (m2 < 0.0) continue;
    const double d = laneDistance(X + i * dims, c, dims);
    if (d < m2) {
      m2 = d;
      mind2[i] = d;
    }
    offer(best, m2, static_cast<uint32_t>(i));
  }
  return best;
}

// ---- Codes: a byte per dimension that bounds distances from below, cheaply ----
//
// Every row x_i gets codes q_ij in [0, 254] with x̂_ij = o_j + s q_ij (o_j: the minimum of dimension j, s: one scale
// for all dimensions, the largest range / 254), and err_i >= |x_i - x̂_i| (Euclidean, rounded up). Then for any rows
// i, c: d(i, c) >= |x̂_i - x̂_c| - err_i - err_c = s sqrt(S) - err_i - err_c, where S = sum_j (q_ij - q_cj)^2 is an
// integer computed exactly (so the same on every CPU and SIMD width). The kernels use that bound to skip a row
// before its double-precision distance is taken: on any data most rows are far from a new center compared with
// their current minimum, and a row of codes is a quarter of a float row (an eighth of the double work).
// Codes are stored shifted, q - 127, as signed bytes in [-127, 127] (254, not 255: see codeDistanceAvx512 and
// admitBlocks for why the kernels need both forms to fit a signed byte).
constexpr size_t kCodeMax = 254;
constexpr int kCodeShift = 127;
constexpr size_t kCodeAlign = 64;      // row stride in bytes, padded with code 0 (the padding adds 0 to S)
constexpr size_t kCodeMaxDims = 65536;  // S, |q|^2 <= dims * 254^2 < 2^32; int32 SIMD lanes cannot overflow

struct Codes {
  size_t stride = 0;
  double scale = 1.0;
  double inverse = 1.0;      // 1 / scale (rounded; the margins below absorb it)
  std::vector<int8_t> q;     // rows x stride, shifted codes q - 127
  std::vector<double> err;   // err_i, an upper bound of |x_i - x̂_i|
  std::vector<uint32_t> norm;  // |q_i|^2
  double errMax = 0.0;         // the largest err_i
  const int8_t* row(size_t i) const { return q.data() + i * stride; }
  // The center term of the block kernel: |q_c|^2 - 2 * 127 * sum_j q_cj (mod 2^32; see admitBlocks).
  uint32_t centerTerm(size_t c) const {
    uint32_t sum = 0;
    for (size_t j = 0; j < stride; ++j) sum += static_cast<uint32_t>(row(c)[j] + kCodeShift);
    return norm[c] - 2u * static_cast<uint32_t>(kCodeShift) * sum;
  }
};

// The codes' row test: row i (reach_i >= rho_i + err_i, see PruneRule) keeps its minimum against c when
// s sqrt(S) - err_i - err_c >= rho_i, i.e. S >= ((reach_i + err_c) / s)^2. limitOf(reach_i, err_c, 1 / s) is the
// integer threshold: the exact distance must be taken when S < ceil(((reach_i + err_c) / s)^2 (1 + 1e-11)) (the
// factor raises it above the rounding of its own computation); 0 for a NaN reach (selected rows, and rows at
// distance 0, which can never improve: never taken), 2^32 - 1 when larger (above every S: kCodeMaxDims keeps S
// below it). The block kernels use one limit per row for every center, with the largest err of all rows in place
// of err_c.
IMIAD_ALWAYS_INLINE uint32_t limitOf(double reach, double errC, double inverse) {
  if (!(reach >= 0.0)) return 0;
  const double t = (reach + errC) * inverse;
  const double limit = std::ceil(t * t * (1.0 + 1e-11));
  return limit >= 4294967295.0 ? std::numeric_limits<uint32_t>::max() : static_cast<uint32_t>(limit);
}

uint32_t codeDistancePortable(const int8_t* a, const int8_t* b, size_t stride) {
  uint32_t s = 0;
  for (size_t j = 0; j < stride; ++j) {
    const int d = static_cast<int>(a[j]) - static_cast<int>(b[j]);
    s += static_cast<uint32_t>(d * d);
  }
  return s;
}

// A block of n consecutive rows to admit against center codes c: their codes, squared code norms and limits.
struct AdmitBlock {
  const int8_t* rows;
  const uint32_t* norms;
  const uint32_t* limit;
  size_t n;
  size_t stride;
  const int8_t* c;
  uint32_t cTerm;  // Codes::centerTerm(c)
};

// Admission of a block: sets bit k % 64 of masks[k / 64] when row k must be measured (S < limit). masks must hold
// ceil(n / 64) words, zeroed by the caller. This form: rows [from, n) one at a time, with a one-row kernel.
template <uint32_t (*Distance)(const int8_t*, const int8_t*, size_t)>
void admitFrom(const AdmitBlock& b, size_t from, uint64_t* masks) {
  for (size_t k = from; k < b.n; ++k) {
    if (Distance(b.rows + k * b.stride, b.c, b.stride) < b.limit[k]) masks[k / 64] |= uint64_t(1) << (k % 64);
  }
}

template <uint32_t (*Distance)(const int8_t*, const int8_t*, size_t)>
void admitEach(const AdmitBlock& b, uint64_t* masks) {
  admitFrom<Distance>(b, 0, masks);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define IMIAD_AVX512_CODES __attribute__((target("avx512f,avx512bw,avx512dq,avx512vnni")))

IMIAD_AVX512_CODES inline __m512i sumAcross4(__m512i v) {
  // Adds the four 128-bit lanes of v into lane 0 (other lanes: don't care).
  v = _mm512_add_epi32(v, _mm512_shuffle_i32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_add_epi32(v, _mm512_shuffle_i32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
}

// vpdpbusd multiplies unsigned bytes by signed bytes (four products summed into each int32 lane). d = |a - b| <= 254
// (the shift cancels) is unsigned; d^2 = d h + d l with h = d >> 1 and l = d - h, both <= 127.
IMIAD_AVX512_CODES uint32_t codeDistanceAvx512(const int8_t* a, const int8_t* b, size_t stride) {
  __m512i acc = _mm512_setzero_si512();
  const __m512i low7 = _mm512_set1_epi8(0x7F);
  for (size_t j = 0; j < stride; j += 64) {
    const __m512i va = _mm512_loadu_si512(a + j), vb = _mm512_loadu_si512(b + j);
    const __m512i d = _mm512_sub_epi8(_mm512_max_epi8(va, vb), _mm512_min_epi8(va, vb));
    const __m512i h = _mm512_and_si512(_mm512_srli_epi16(d, 1), low7);
    acc = _mm512_dpbusd_epi32(acc, d, h);
    acc = _mm512_dpbusd_epi32(acc, d, _mm512_sub_epi8(d, h));
  }
  __m512i v = sumAcross4(acc);
  __m128i s = _mm512_castsi512_si128(v);
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(s));
}

// Dot products q_c . (q_i - 127) of sixteen rows of B 64-byte blocks (stride 64 B, known at compile time so that
// the sixteen accumulators and the center stay in registers): vpdpbusd takes the center's codes as unsigned bytes
// (<= 254) and the row's stored shifted codes, straight from memory, as signed bytes. A transpose-and-add tree then
// leaves row k's dot product in lane k.
template <size_t B>
IMIAD_AVX512_CODES IMIAD_ALWAYS_INLINE __m512i sixteenDots(const int8_t* base, const __m512i* cu) {
  __m512i acc[16];
  for (size_t k = 0; k < 16; ++k) {
    acc[k] = _mm512_setzero_si512();
    for (size_t j = 0; j < B; ++j) {
      acc[k] = _mm512_dpbusd_epi32(acc[k], cu[j], _mm512_loadu_si512(base + (k * B + j) * 64));
    }
  }
  // Pairs: 32-bit interleave and add; quads: 64-bit interleave and add. Each 128-bit lane L of quad q then holds
  // the lane-L partial sums of rows 4q .. 4q + 3.
  __m512i pair[8], quad[4];
  for (size_t k = 0; k < 8; ++k) {
    pair[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(acc[2 * k], acc[2 * k + 1]),
                               _mm512_unpackhi_epi32(acc[2 * k], acc[2 * k + 1]));
  }
  for (size_t k = 0; k < 4; ++k) {
    quad[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(pair[2 * k], pair[2 * k + 1]),
                               _mm512_unpackhi_epi64(pair[2 * k], pair[2 * k + 1]));
  }
  // Sum the four 128-bit lanes: two levels of 128-bit shuffles across pairs of quads.
  const __m512i h0 = _mm512_add_epi32(_mm512_shuffle_i32x4(quad[0], quad[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_i32x4(quad[0], quad[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i h1 = _mm512_add_epi32(_mm512_shuffle_i32x4(quad[2], quad[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_i32x4(quad[2], quad[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(h0, h1, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(h0, h1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// S = |q_i|^2 + |q_c|^2 - 2 q_c.q_i with q_c.q_i = q_c.(q_i - 127) + 127 sum_j q_cj, so S = |q_i|^2 + cTerm -
// 2 q_c.(q_i - 127): exact, since the wrap-around of the int32 lanes cancels in the result (S itself is below 2^32
// and read as unsigned).
template <size_t B>
IMIAD_AVX512_CODES void admitBlocks(const AdmitBlock& b, uint64_t* masks) {
  __m512i cu[B];
  const __m512i shift = _mm512_set1_epi8(static_cast<char>(kCodeShift));
  for (size_t j = 0; j < B; ++j) cu[j] = _mm512_add_epi8(_mm512_loadu_si512(b.c + 64 * j), shift);
  const __m512i cNorm = _mm512_set1_epi32(static_cast<int32_t>(b.cTerm));
  size_t r = 0;
  for (; r + 16 <= b.n; r += 16) {
    const __m512i dot = sixteenDots<B>(b.rows + r * 64 * B, cu);
    const __m512i norms = _mm512_loadu_si512(b.norms + r);
    const __m512i S = _mm512_sub_epi32(_mm512_add_epi32(norms, cNorm), _mm512_add_epi32(dot, dot));
    const __mmask16 admitted = _mm512_cmplt_epu32_mask(S, _mm512_loadu_si512(b.limit + r));
    masks[r / 64] |= static_cast<uint64_t>(admitted) << (r % 64);
  }
  admitFrom<codeDistanceAvx512>(b, r, masks);
}

// Rows of up to 256 dims go sixteen at a time; longer rows one at a time (their reduction is cheap beside them).
IMIAD_AVX512_CODES void admitAvx512(const AdmitBlock& b, uint64_t* masks) {
  switch (b.stride / 64) {
    case 1: return admitBlocks<1>(b, masks);
    case 2: return admitBlocks<2>(b, masks);
    case 3: return admitBlocks<3>(b, masks);
    case 4: return admitBlocks<4>(b, masks);
    default: return admitFrom<codeDistanceAvx512>(b, 0, masks);
  }
}

// AVX2: the differences in 16 bits (|d| <= 254), squared and paired into int32 by vpmaddwd.
__attribute__((target("avx2"))) uint32_t codeDistanceAvx2(const int8_t* a, const int8_t* b, size_t stride) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t j = 0; j < stride; j += 16) {
    const __m256i va = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + j)));
    const __m256i vb = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j)));
    const __m256i d = _mm256_sub_epi16(va, vb);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(d, d));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(s));
}
#endif

// The code kernels of one instruction set; every form gives the same integers, hence the same admissions.
struct CodeKernels {
  uint32_t (*distance)(const int8_t*, const int8_t*, size_t);
  void (*admit)(const AdmitBlock&, uint64_t*);
};

// The widest form this CPU runs (IMIAD_CORESET_ISA=portable or avx2 pins a narrower one, for tests).
CodeKernels pickCodeKernels() {
#if defined(__GNUC__) && defined(__x86_64__)
  const char* isa = std::getenv("IMIAD_CORESET_ISA");
  const bool portable = isa != nullptr && std::strcmp(isa, "portable") == 0;
  const bool avx2Only = isa != nullptr && std::strcmp(isa, "avx2") == 0;
  if (!portable && !avx2Only && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni")) {
    return {codeDistanceAvx512, admitAvx512};
  }
  if (!portable && __builtin_cpu_supports("avx2")) return {codeDistanceAvx2, admitEach<codeDistanceAvx2>};
#endif
  return {codeDistancePortable, admitEach<codeDistancePortable>};
}

// Codes and err of rows [begin, end) (see buildCodes).
IMIAD_CORESET_CLONES_ANY void encodeRows(const float* __restrict X, size_t dims, size_t begin, size_t end,
                                     const double* __restrict offset, const float* __restrict offsetF, Codes& codes,
                                     double relative, double absolute) noexcept {
  const double scale = codes.scale;
  const float inverseF = static_cast<float>(codes.inverse);
  const size_t stride = codes.stride;
  int8_t* __restrict out = codes.q.data();
  for (size_t i = begin; i < end; ++i) {
    const float* __restrict x = X + i * dims;
    int8_t* __restrict q = out + i * stride;
    uint32_t n2 = 0;
    for (size_t j = 0; j < dims; ++j) {
      // Any integer code is valid (err accounts for it); about the nearest one, in float, keeps err small.
      // x >= its dimension's minimum, so v >= 0 (v + 0.5 truncates to its rounding); the clamp is in integers (a
      // float comparison would keep the compiler from vectorizing the loop).
      const float v = (x[j] - offsetF[j]) * inverseF;
      const int32_t k = std::min(static_cast<int32_t>(kCodeMax), std::max(0, static_cast<int32_t>(v + 0.5f)));
      q[j] = static_cast<int8_t>(k - kCodeShift);
      n2 += static_cast<uint32_t>(k * k);
    }
    // Sixteen partial sums (any order of non-negative additions keeps buildCodes' rounding bound).
    constexpr size_t L = 16;
    double e2[L] = {};
    size_t j = 0;
    for (; j + L <= dims; j += L) {
      for (size_t l = 0; l < L; ++l) {
        const double e = static_cast<double>(x[j + l]) - (offset[j + l] + scale * (q[j + l] + kCodeShift));
        e2[l] += e * e;
      }
    }
    for (size_t l = 0; j + l < dims; ++l) {
      const double e = static_cast<double>(x[j + l]) - (offset[j + l] + scale * (q[j + l] + kCodeShift));
      e2[l] += e * e;
    }
    double e = 0.0;
    for (size_t l = 0; l < L; ++l) e += e2[l];
    codes.err[i] = std::sqrt(e) * relative + absolute;
    codes.norm[i] = n2;
  }
}

// Per-dimension minimum and maximum of rows [begin, end) (at least one row).
IMIAD_CORESET_CLONES_ANY void rangeRows(const float* __restrict X, size_t dims, size_t begin, size_t end,
                                    float* __restrict lo, float* __restrict hi) noexcept {
  std::memcpy(lo, X + begin * dims, dims * sizeof(float));
  std::memcpy(hi, X + begin * dims, dims * sizeof(float));
  for (size_t i = begin + 1; i < end; ++i) {
    const float* __restrict x = X + i * dims;
    for (size_t j = 0; j < dims; ++j) {
      lo[j] = x[j] < lo[j] ? x[j] : lo[j];
      hi[j] = x[j] > hi[j] ? x[j] : hi[j];
    }
  }
}

// Codes of X (see Codes), or an empty Codes (stride 0) when the dims are too many for exact int32 sums.
Codes buildCodes(Team& team, const float* X, size_t rows, size_t dims, const RunControl& control) {
  Codes codes;
  if (dims > kCodeMaxDims) return codes;
  constexpr size_t kCodeRows = 1024;
  const size_t chunks = (rows + kCodeRows - 1) / kCodeRows;
  std::vector<float> lo(chunks * dims), hi(chunks * dims);
  team.run(rows, kCodeRows, [&](size_t k, size_t begin, size_t end) {
    control.throwIfCancelled();
    rangeRows(X, dims, begin, end, lo.data() + k * dims, hi.data() + k * dims);
  });
  std::vector<double> offset(dims);
  std::vector<float> offsetF(dims);
  double range = 0.0, farthest = 0.0;
  for (size_t j = 0; j < dims; ++j) {
    float l = lo[j], h = hi[j];
    for (size_t k = 1; k < chunks; ++k) {
      l = std::min(l, lo[k * dims + j]);
      h = std::max(h, hi[k * dims + j]);
    }
    offset[j] = l;
    offsetF[j] = l;
    range = std::max(range, static_cast<double>(h) - static_cast<double>(l));
    farthest = std::max(farthest, std::fabs(static_cast<double>(l)));
  }
  codes.scale = range > 0.0 ? range / static_cast<double>(kCodeMax) : 1.0;
  codes.inverse = 1.0 / codes.scale;
  codes.stride = (dims + kCodeAlign - 1) / kCodeAlign * kCodeAlign;
  codes.q.assign(rows * codes.stride, static_cast<int8_t>(-kCodeShift));
  codes.err.resize(rows);
  codes.norm.resize(rows);
  // Rounding of err: each computed e_j = x_j - (o_j + s q_j) is within 3u (|o_j| + (kCodeMax + 1) s) of the true
  // one, and the computed norm of the computed e within (dims + 2) u relatively (u = 2^-53); both are added, doubled.
  const double u = std::ldexp(1.0, -53);
  const double perCoordinate = 6.0 * u * (farthest + static_cast<double>(kCodeMax + 1) * codes.scale);
  const double absolute = std::sqrt(static_cast<double>(dims)) * perCoordinate;
  const double relative = 1.0 + 2.0 * (static_cast<double>(dims) + 4.0) * u;
  team.run(rows, kCodeRows, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    encodeRows(X, dims, begin, end, offset.data(), offsetF.data(), codes, relative, absolute);
  });
  for (const double e : codes.err) codes.errMax = std::max(codes.errMax, e);
  return codes;
}

// Bounds derive from one rule: a computed squared distance D' (laneDistance) is within eps D of the true D
// (pruneMargin), so a row of computed minimum m2 keeps it against a new center c whenever the true distance
// d(i, c) >= rho = sqrt((m2 + delta) / (1 - eps)): then D'(i, c) >= (1 - eps) D(i, c) - delta >= m2, and the plain
// loop's `D' < m2` is false. Every skip below proves d(i, c) >= rho, from a lower bound of a true distance; the
// factors 1 +- 1e-12 (1e-11 on squares) cover the rounding of the bounds' own arithmetic, which is a few u = 2^-53.
struct PruneRule {
  double eps;    // relative error bound of a computed squared distance
  double delta;  // absolute error allowance (subnormal results)
  // Factors of the tests below, computed once (each is within 2u of its formula; the margins absorb it).
  double lowerFactor;    // (1 - 1e-12) / (1 + eps)
  double improveFactor;  // 4 (1 + 1e-12) / (1 - eps)
  double keepFactor;     // 1 / (1 - eps)
  // A lower bound of the true squared distance from a computed one.
  double lowerFromComputed(double computed) const { return std::max(0.0, (computed - delta) * lowerFactor); }
  // True when no row of computed minimum m2, assigned to center a, can get closer to c, given lb2 <= d(a, c)^2:
  // d(a, c) >= 2 rho >= 2 d(i, a) gives d(i, c) >= d(a, c) - d(i, a) >= rho (triangle inequality).
  bool cannotImprove(double lb2, double m2) const { return lb2 >= (m2 + delta) * improveFactor; }
  // An upper bound of rho for m2.
  double keepRadius(double m2) const { return std::sqrt((m2 + delta) * keepFactor) * (1.0 + 1e-12); }
};

// Rounding bounds of laneDistance() (double arithmetic on float inputs, u = 2^-53): each term fl(fl(a-b)^2) is within
// (1 +- 3.01u) of (a-b)^2; a term then goes through at most ceil(dims/16) - 1 lane additions and 4 reduction
// additions, all of non-negative values, so the computed D' satisfies |D' - D| <= eps D with
// eps = (ceil(dims/16) + 6.1) u (taken twice as large here). No term can be subnormal or overflow (float inputs), so
// the absolute allowance delta is 0.
PruneRule pruneMargin(size_t dims) {
  const double u = std::ldexp(1.0, -53);
  const double lanes = std::ceil(static_cast<double>(dims) / kDistanceLanes);
  PruneRule rule;
  rule.eps = 2.0 * (lanes + 8.0) * u;
  rule.delta = 0.0;
  rule.lowerFactor = (1.0 - 1e-12) / (1.0 + rule.eps);
  rule.improveFactor = 4.0 * (1.0 + 1e-12) / (1.0 - rule.eps);
  rule.keepFactor = 1.0 / (1.0 - rule.eps);
  return rule;
}

// Per row, for the codes: its reach, and its limit for the block kernels (limitOf with the largest err).
struct Reaches {
  std::vector<double> reach;
  std::vector<uint32_t> limit;
  void set(size_t i, double r, const Codes& codes) {
    reach[i] = r;
    limit[i] = limitOf(r, codes.errMax, codes.inverse);
  }
};

IMIAD_ALWAYS_INLINE double reachOf(const PruneRule& rule, double m2, double err) {
  return m2 > 0.0 ? rule.keepRadius(m2) + err : std::numeric_limits<double>::quiet_NaN();
}

// A lower bound of d(a, c)^2 from the codes: (s sqrt(S) - err_a - err_c)^2 when positive.
IMIAD_ALWAYS_INLINE double codesLower2(uint32_t S, const Codes& codes, double errA, double errC) {
  const double a = codes.scale * std::sqrt(static_cast<double>(S)) * (1.0 - 1e-12);
  const double lb = (a - (errA + errC) * (1.0 + 1e-12)) * (1.0 - 1e-12);
  return lb > 0.0 ? lb * lb * (1.0 - 1e-11) : 0.0;
}

// Pivots: the first kPivots selected rows. Every center keeps bounds on its true distance to each pivot, from the
// computed squared distance D': lo = sqrt((D' - delta) / (1 + eps)) <= d <= hi = sqrt((D' + delta) / (1 - eps)).
// Then |d(a,p) - d(c,p)| <= d(a,c) bounds a center-to-center distance without touching the rows' dims.
constexpr size_t kPivots = 8;

// Pivot bounds of every center, stored by pivot (lo[p * capacity + a]) so that one new center is compared with
// all groups in vector form.
struct PivotTable {
  size_t capacity = 0;
  std::vector<double> lo, hi;
  explicit PivotTable(size_t count) : capacity(count), lo(kPivots * count), hi(kPivots * count) {}
  void set(size_t a, const float* centers, size_t dims, const float* row, const PruneRule& rule) {
    for (size_t p = 0; p < kPivots; ++p) {
      const double d2 = laneDistance(centers + p * dims, row, dims);
      lo[p * capacity + a] = std::sqrt(std::max(0.0, (d2 - rule.delta) / (1.0 + rule.eps)));
      hi[p * capacity + a] = std::sqrt((d2 + rule.delta) / (1.0 - rule.eps));
    }
  }
};

// lower2[a] = the pivots' lower bound of d(a, c)^2 for the groups a in [begin, end), c being center t:
// max over p of |d(a,p) - d(c,p)| from the intervals, less a slack for the rounding of the sqrt and the subtraction.
IMIAD_CORESET_CLONES void pivotScreen(const PivotTable& table, size_t t, size_t begin, size_t end, double* lower2) {
  for (size_t a = begin; a < end; ++a) lower2[a] = 0.0;
  for (size_t p = 0; p < kPivots; ++p) {
    const double* lo = table.lo.data() + p * table.capacity;
    const double* hi = table.hi.data() + p * table.capacity;
    const double cLo = lo[t], cHi = hi[t];
    for (size_t a = begin; a < end; ++a) {
      const double x = lo[a] - cHi, y = cLo - hi[a];
      const double g = (x > y ? x : y) - 1e-14 * (hi[a] + cHi);
      lower2[a] = g > lower2[a] ? g : lower2[a];
    }
  }
  for (size_t a = begin; a < end; ++a) lower2[a] = lower2[a] * lower2[a] * (1.0 - 1e-11);
}

// The inputs of one step: the new center c (selection number t, row `row`) and what the passes read.
struct Step {
  const float* X;
  size_t dims;
  const float* c;
  uint32_t row;
  uint32_t t;
  const Codes* codes;  // nullptr: no codes (too many dims)
  CodeKernels kernels;
  const int8_t* cCodes;
  double errC;
  uint32_t cTerm;  // Codes::centerTerm(row)
  PruneRule rule;
};

// Fills centerLower2 for the groups that may lose rows to the new center c: a lower bound of d(a, c)^2, or -1 when
// the group is ruled out (radius 0, or d(a, c) >= 2 * its radius, from the pivot bounds, the codes, or the computed
// distance, in that order of cost).
IMIAD_CORESET_CLONES void centerPass(const Step& s, const float* centers, const uint32_t* centerRows, size_t begin,
                                     size_t end, const Best* groupBest, const PivotTable* pivots, size_t home,
                                     double* centerLower2) {
  if (pivots != nullptr) {
    pivotScreen(*pivots, s.t, begin, end, centerLower2);
  } else {
    for (size_t a = begin; a < end; ++a) centerLower2[a] = 0.0;
  }
  for (size_t a = begin; a < end; ++a) {
    const double r2 = groupBest[a].value;
    if (a != home) {
      if (r2 <= 0.0 || s.rule.cannotImprove(centerLower2[a], r2)) {
        centerLower2[a] = -1.0;
        continue;
      }
      if (s.codes != nullptr) {
        const uint32_t ra = centerRows[a];
        const uint32_t S = s.kernels.distance(s.codes->row(ra), s.cCodes, s.codes->stride);
        if (s.rule.cannotImprove(codesLower2(S, *s.codes, s.codes->err[ra], s.errC), r2)) {
          centerLower2[a] = -1.0;
          continue;
        }
      }
    }
    centerLower2[a] = s.rule.lowerFromComputed(laneDistance(centers + a * s.dims, s.c, s.dims));
  }
}

// True when row i (computed minimum m2 > 0, in a group whose center is at squared distance >= lower2 from c) may
// get closer to c: neither the group's bound nor the codes rule it out.
IMIAD_ALWAYS_INLINE bool mayImprove(const Step& s, uint32_t i, double m2, double lower2, const Reaches& reaches) {
  if (s.rule.cannotImprove(lower2, m2)) return false;
  return s.codes == nullptr || s.kernels.distance(s.codes->row(i), s.cCodes, s.codes->stride) <
                                   limitOf(reaches.reach[i], s.errC, s.codes->inverse);
}

// Starts fetching the float row of a row about to be measured.
IMIAD_ALWAYS_INLINE void fetchRow(const Step& s, size_t i) {
  const char* row = reinterpret_cast<const char*>(s.X + i * s.dims);
  for (size_t off = 0; off < s.dims * sizeof(float); off += 64) __builtin_prefetch(row + off);
}

struct Item {
  uint32_t group;
  size_t begin, end;  // range of members[group]
};

struct ItemResult {
  Best kept;
  size_t removed = 0;
  std::vector<uint32_t> moved;
};

// Visits members [begin, end) of group a for the new center c: first the bounds, then the exact distance of the
// rows they admit (few, scattered: their rows are fetched together).
IMIAD_CORESET_CLONES void itemPass(const Step& s, const uint32_t* members, size_t begin, size_t end, double lower2,
                                   double* mind2, Reaches& reaches, uint32_t* assign, ItemResult& out) {
  // Work on a local copy: the results of neighbouring items share cache lines (see linearPass).
  ItemResult result;
  result.moved.swap(out.moved);
  result.moved.clear();
  std::vector<uint32_t>& admitted = result.moved;  // admitted rows first; then the ones that moved
  // Members are scattered over the matrix: fetch their codes (or rows) a few members ahead.
  constexpr size_t kAhead = 6;
  const char* base = s.codes != nullptr ? reinterpret_cast<const char*>(s.codes->q.data())
                                        : reinterpret_cast<const char*>(s.X);
  const size_t rowBytes = s.codes != nullptr ? s.codes->stride : s.dims * sizeof(float);
  for (size_t k = begin; k < end; ++k) {
    if (k + kAhead < end) {
      const char* ahead = base + static_cast<size_t>(members[k + kAhead]) * rowBytes;
      for (size_t off = 0; off < rowBytes; off += 64) __builtin_prefetch(ahead + off);
    }
    const uint32_t i = members[k];
    const double m2 = mind2[i];
    if (m2 < 0.0) {  // the new center itself: leaves its group
      ++result.removed;
      continue;
    }
    if (m2 > 0.0 && mayImprove(s, i, m2, lower2, reaches)) {
      fetchRow(s, i);
      admitted.push_back(i);
      continue;
    }
    offer(result.kept, m2, i);
  }
  size_t movedCount = 0;
  for (const uint32_t i : admitted) {
    const double m2 = mind2[i];
    const double d = laneDistance(s.X + static_cast<size_t>(i) * s.dims, s.c, s.dims);
    if (d < m2) {
      mind2[i] = d;
      if (s.codes != nullptr) reaches.set(i, reachOf(s.rule, d, s.codes->err[i]), *s.codes);
      assign[i] = s.t;
      admitted[movedCount++] = i;
      ++result.removed;
    } else {
      offer(result.kept, m2, i);
    }
  }
  admitted.resize(movedCount);
  out.kept = result.kept;
  out.removed = result.removed;
  out.moved.swap(result.moved);
}

IMIAD_CORESET_CLONES void projectRows(const float* X, size_t r0, size_t r1, size_t dims, const float* W,
                                      size_t outDims, float* out) {
  constexpr size_t RB = 4, OB = 64;
  for (size_t r = r0; r < r1; r += RB) {
    const size_t nb = std::min(RB, r1 - r);
    for (size_t o0 = 0; o0 < outDims; o0 += OB) {
      const size_t ob = std::min(OB, outDims - o0);
      if (nb == RB && ob == OB) {
        float acc[RB][OB] = {};
        for (size_t j = 0; j < dims; ++j) {
          const float* w = W + j * outDims + o0;
          for (size_t b = 0; b < RB; ++b) {
            const float x = X[(r + b) * dims + j];
            for (size_t o = 0; o < OB; ++o) {
              const float p = x * w[o];
              acc[b][o] = acc[b][o] + p;
            }
          }
        }
        for (size_t b = 0; b < RB; ++b) std::memcpy(out + (r + b) * outDims + o0, acc[b], OB * sizeof(float));
      } else {
        for (size_t b = 0; b < nb; ++b) {
          float acc[OB] = {};
          const float* x = X + (r + b) * dims;
          for (size_t j = 0; j < dims; ++j) {
            const float* w = W + j * outDims + o0;
            for (size_t o = 0; o < ob; ++o) {
              const float p = x[j] * w[o];
              acc[o] = acc[o] + p;
            }
          }
          std::memcpy(out + (r + b) * outDims + o0, acc, ob * sizeof(float));
        }
      }
    }
  }
}

std::string formatNumber(float v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return std::to_string(v);
}

void checkArguments(const float* features, size_t rows, size_t dims, const CoresetOptions& o) {
  if (features == nullptr || rows == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "Expected at least 1 row(s) in features");
  if (dims == 0) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected positive integer for dims");
  if (rows > std::numeric_limits<uint32_t>::max()) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at most 4294967295 rows in features");
  }
  if (o.count < 1 || o.count > rows) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected integer between 1 and " + std::to_string(rows) +
                                                 " for count but received " + std::to_string(o.count));
  }
  if (o.startIndex >= rows) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected integer between 0 and " + std::to_string(rows - 1) +
                                                 " for startIndex but received " + std::to_string(o.startIndex));
  }
}

void checkFinite(const float* X, size_t n, const RunControl& control) {
  const size_t chunk = size_t(1) << 20;
  std::vector<size_t> firstBad((n + chunk - 1) / chunk, n);
  parallelChunks(n, chunk, [&](size_t c, size_t begin, size_t end) {
    control.throwIfCancelled();
    for (size_t i = begin; i < end; ++i) {
      if (!std::isfinite(X[i])) {
        firstBad[c] = i;
        return;
      }
    }
  });
  for (size_t bad : firstBad) {
    if (bad < n) {
      throw InvalidArgument("ERR_IMIAD_NOT_FINITE", "Expected finite numbers in features but received " +
                                                        formatNumber(X[bad]) + " of type number at index " +
                                                        std::to_string(bad));
    }
  }
}

// The input of the selection: the features themselves, or their projection (kept alive by `storage`).
const float* prepare(const float* features, size_t rows, size_t& dims, const CoresetOptions& o,
                     std::vector<float>& storage, const RunControl& control) {
  checkArguments(features, rows, dims, o);
  checkFinite(features, rows * dims, control);
  if (o.projectionDims == 0) return features;
  storage.resize(rows * o.projectionDims);
  projectFeatures(features, rows, dims, o.projectionDims, o.seed, storage.data(), control);
  dims = o.projectionDims;
  return storage.data();
}

// One member per row chunk at most: small inputs run on the calling thread alone.
unsigned teamSize(size_t rows) {
  return static_cast<unsigned>(std::min<size_t>(threadCount(), (rows + kRowChunk - 1) / kRowChunk));
}

// First pass of both kernels: every row's squared distance to the start row, and the best row.
Best initialPass(Team& team, const float* X, size_t rows, size_t dims, size_t start, std::vector<double>& mind2) {
  mind2.assign(rows, std::numeric_limits<double>::infinity());
  mind2[start] = kSelected;
  const float* c = X + start * dims;
  std::vector<Best> chunkBest((rows + kRowChunk - 1) / kRowChunk);
  team.run(rows, kRowChunk, [&](size_t k, size_t begin, size_t end) {
    chunkBest[k] = plainPass(X, dims, begin, end, c, mind2.data());
  });
  Best best;
  for (const Best& b : chunkBest) offer(best, b.value, b.row);
  return best;
}

std::vector<uint32_t> plainKCenter(const float* X, size_t rows, size_t dims, size_t count, size_t start,
                                   const RunControl& control) {
  Team team(teamSize(rows));
  std::vector<uint32_t> selected{static_cast<uint32_t>(start)};
  selected.reserve(count);
  std::vector<double> mind2;
  Best best = initialPass(team, X, rows, dims, start, mind2);
  control.report(1, count);
  std::vector<Best> chunkBest((rows + kRowChunk - 1) / kRowChunk);
  while (selected.size() < count) {
    control.throwIfCancelled();
    const uint32_t c = best.row;
    selected.push_back(c);
    mind2[c] = kSelected;
    if (selected.size() < count) {
      const float* center = X + static_cast<size_t>(c) * dims;
      team.run(rows, kRowChunk, [&](size_t k, size_t begin, size_t end) {
        chunkBest[k] = plainPass(X, dims, begin, end, center, mind2.data());
      });
      best = Best();
      for (const Best& b : chunkBest) offer(best, b.value, b.row);
    }
    control.report(selected.size(), count);
  }
  return selected;
}

// Linear pass over rows [begin, end) (at most kRowChunk) for the new center c: like plainPass, but a row is only
// measured when its group may lose rows to c (gate; nullptr: every group may) and the bounds allow it. Returns the
// best row of the range. `previous`, when given, is the range's best row before this step: minimum distances only
// shrink, so it stays the best unless it was selected or moved, and the range need not be scanned again.
IMIAD_CORESET_CLONES Best linearPass(const Step& s, size_t begin, size_t end, const uint8_t* gate,
                                     const double* centerLower2, double* mind2, Reaches& reaches, uint32_t* assign,
                                     const Best* previous, Best& freshOut, std::vector<uint32_t>& movedOut) {
  // Local until the end: the per-chunk outputs sit next to each other, and writing them per row would make the
  // threads fight over their cache lines.
  Best best, fresh;
  std::vector<uint32_t> movedFrom;
  movedFrom.swap(movedOut);
  movedFrom.clear();
  auto update = [&](size_t i, uint32_t a, double d) {
    mind2[i] = d;
    if (s.codes != nullptr) reaches.set(i, reachOf(s.rule, d, s.codes->err[i]), *s.codes);
    assign[i] = s.t;
    movedFrom.push_back(a);
    offer(fresh, d, static_cast<uint32_t>(i));
  };
  if (s.codes == nullptr) {
    for (size_t i = begin; i < end; ++i) {
      double m2 = mind2[i];
      if (m2 < 0.0) continue;
      const uint32_t a = assign[i];
      if (m2 > 0.0 && (gate == nullptr || (gate[a] && !s.rule.cannotImprove(centerLower2[a], m2)))) {
        const double d = laneDistance(s.X + i * s.dims, s.c, s.dims);
        if (d < m2) {
          m2 = d;
          update(i, a, d);
        }
      }
      offer(best, m2, static_cast<uint32_t>(i));
    }
  } else {
    // The codes admit a few rows in bulk; only those are looked at one by one.
    uint64_t masks[kRowChunk / 64] = {};
    const AdmitBlock block{s.codes->row(begin), s.codes->norm.data() + begin, reaches.limit.data() + begin,
                           end - begin, s.codes->stride, s.cCodes, s.cTerm};
    s.kernels.admit(block, masks);
    bool rescan = previous == nullptr || (s.row >= begin && s.row < end);
    uint32_t admitted[kRowChunk];
    size_t n = 0;
    for (size_t w = 0; w < (end - begin + 63) / 64; ++w) {
      for (uint64_t bits = masks[w]; bits != 0; bits &= bits - 1) {
        const size_t i = begin + w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
        // mind2[i] > 0: the codes never admit selected rows or rows at distance 0.
        const uint32_t a = assign[i];
        if (gate != nullptr && (!gate[a] || s.rule.cannotImprove(centerLower2[a], mind2[i]))) continue;
        fetchRow(s, i);
        admitted[n++] = static_cast<uint32_t>(i);
      }
    }
    for (size_t k = 0; k < n; ++k) {
      const size_t i = admitted[k];
      const double d = laneDistance(s.X + i * s.dims, s.c, s.dims);
      if (d < mind2[i]) {
        update(i, assign[i], d);
        rescan = rescan || i == previous->row;
      }
    }
    if (rescan) {
      for (size_t i = begin; i < end; ++i) {
        if (mind2[i] >= 0.0) offer(best, mind2[i], static_cast<uint32_t>(i));
      }
    } else {
      best = *previous;
    }
  }
  freshOut = fresh;
  movedOut.swap(movedFrom);
  return best;
}

// Two ways to visit the rows that may move to a new center, chosen per step by the amount of work (both measure the
// same rows, so the choice never changes the result): "group mode" walks the member lists of the candidate groups
// only; "linear mode" sweeps all rows in memory order with a per-row gate, which is faster when most groups are
// candidates (high-dimensional data without structure, where the triangle inequality prunes little). Linear mode
// leaves the member lists and the group maxima stale (the maxima stay valid upper bounds, since minimum distances
// only shrink); rebuildGroups() makes them exact again.
std::vector<uint32_t> fastKCenter(const float* X, size_t rows, size_t dims, size_t count, size_t start,
                                  const RunControl& control) {
  Team team(teamSize(rows));
  // Steps are short (microseconds at 20,000 rows): each kind of pass goes to the team only when the team is
  // measured to be faster for its amount of work (WorkGate, native/parallel.h).
  WorkGate centerGate(team), linearGate(team), visitGate(team);
  const PruneRule rule = pruneMargin(dims);
  std::vector<uint32_t> selected{static_cast<uint32_t>(start)};
  selected.reserve(count);
  std::vector<float> centers(count * dims);
  std::memcpy(centers.data(), X + start * dims, dims * sizeof(float));
  std::vector<double> mind2;
  std::vector<uint32_t> assign(rows, 0);
  std::vector<std::vector<uint32_t>> members(count);
  std::vector<Best> groupBest(count);
  std::vector<uint32_t> groupSize(count, 0);
  std::vector<double> centerLower2(count);
  std::vector<uint8_t> gate(count, 0);
  PivotTable pivots(count);

  Best next = initialPass(team, X, rows, dims, start, mind2);
  // The codes and every row's reach (see limitOf), when the dims allow codes.
  const Codes codes = buildCodes(team, X, rows, dims, control);
  const bool useCodes = codes.stride > 0;
  Reaches reaches;
  if (useCodes) {
    reaches.reach.resize(rows);
    reaches.limit.resize(rows);
    team.run(rows, kRowChunk, [&](size_t, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) reaches.set(i, reachOf(rule, mind2[i], codes.err[i]), codes);
    });
  }
  const CodeKernels kernels = pickCodeKernels();
  groupBest[0] = next;
  groupSize[0] = static_cast<uint32_t>(rows - 1);
  members[0].reserve(rows - 1);
  for (size_t i = 0; i < rows; ++i) {
    if (i != start) members[0].push_back(static_cast<uint32_t>(i));
  }
  bool groupsExact = true;
  bool unstructured = false;
  size_t staleSteps = 0;
  size_t refreshSteps = kRefreshSteps;
  control.report(1, count);

  // Member lists (ascending rows) and exact maxima of groups [0, t) from assign/mind2: a counting sort.
  auto rebuildGroups = [&](size_t t) {
    std::vector<uint32_t> fill(t, 0);
    for (size_t a = 0; a < t; ++a) {
      members[a].resize(groupSize[a]);
      groupBest[a] = Best();
    }
    for (size_t i = 0; i < rows; ++i) {
      if (mind2[i] < 0.0) continue;
      const uint32_t a = assign[i];
      members[a][fill[a]++] = static_cast<uint32_t>(i);
      offer(groupBest[a], mind2[i], static_cast<uint32_t>(i));
    }
    groupsExact = true;
    staleSteps = 0;
  };

  std::vector<uint32_t> candidates;
  std::vector<Item> items;
  std::vector<ItemResult> results;
  const size_t rowChunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<Best> chunkBest(rowChunks), chunkFresh(rowChunks);
  bool chunkBestValid = false;  // chunkBest holds each chunk's best row (valid from one linear step to the next)
  std::vector<std::vector<uint32_t>> chunkMoved(rowChunks);
  for (size_t t = 1; t < count; ++t) {
    control.throwIfCancelled();
    const uint32_t c = next.row;
    const uint32_t home = assign[c];
    selected.push_back(c);
    mind2[c] = kSelected;
    assign[c] = static_cast<uint32_t>(t);
    --groupSize[home];
    float* center = centers.data() + t * dims;
    std::memcpy(center, X + static_cast<size_t>(c) * dims, dims * sizeof(float));
    if (useCodes) reaches.set(c, std::numeric_limits<double>::quiet_NaN(), codes);
    const size_t unselected = rows - t - 1;
    Step step{X, dims, center, c, static_cast<uint32_t>(t), useCodes ? &codes : nullptr, kernels,
              useCodes ? codes.row(c) : nullptr, useCodes ? codes.err[c] : 0.0, useCodes ? codes.centerTerm(c) : 0u,
              rule};
    auto chooseCandidates = [&]() {
      candidates.clear();
      size_t visitRows = 0;
      for (size_t a = 0; a < t; ++a) {
        // The home group always: c leaves it (and when its radius is 0, nothing else happens to it).
        gate[a] = a == home || (centerLower2[a] >= 0.0 && !rule.cannotImprove(centerLower2[a], groupBest[a].value));
        if (gate[a]) {
          candidates.push_back(static_cast<uint32_t>(a));
          visitRows += groupSize[a];
        }
      }
      return visitRows;
    };

    // Which groups can lose rows to c: those whose radius (group maximum) is not ruled out by d(a, c). On data where
    // that rules out almost nothing (the last full check found nearly every row a candidate), the check is skipped
    // until the next refresh and every row is measured, as in the plain loop.
    const bool openAll = unstructured && !groupsExact;
    size_t visitRows = unselected;
    // Pivot bounds of the new center (of all centers so far, once the last pivot is selected).
    if (t + 1 == kPivots) {
      for (size_t a = 0; a <= t; ++a) pivots.set(a, centers.data(), dims, centers.data() + a * dims, rule);
    } else if (t >= kPivots) {
      pivots.set(t, centers.data(), dims, center, rule);
    }
    const bool havePivots = t >= kPivots;
    if (!openAll) {
      auto pass = [&](size_t begin, size_t end) {
        centerPass(step, centers.data(), selected.data(), begin, end, groupBest.data(), havePivots ? &pivots : nullptr,
                   home, centerLower2.data());
      };
      centerGate.run(static_cast<double>(t), t, kCenterChunk, [&](size_t, size_t begin, size_t end) {
        pass(begin, end);
      }, true);
      visitRows = chooseCandidates();
      const bool wasUnstructured = unstructured;
      unstructured = visitRows * 10 >= unselected * 9;
      refreshSteps = unstructured && wasUnstructured ? std::min(kRefreshMax, 2 * refreshSteps) : kRefreshSteps;
    }
    bool linear = visitRows * 4 > unselected;
    if (!linear && !groupsExact) {
      rebuildGroups(t);
      visitRows = chooseCandidates();  // exact radii can only remove candidates
    }

    if (linear) {
      linearGate.run(static_cast<double>(unselected), rows, kRowChunk, [&](size_t k, size_t begin, size_t end) {
        chunkFresh[k] = Best();
        chunkMoved[k].clear();
        const Best previous = chunkBest[k];
        chunkBest[k] = linearPass(step, begin, end, openAll ? nullptr : gate.data(), centerLower2.data(),
                                  mind2.data(), reaches, assign.data(), chunkBestValid ? &previous : nullptr,
                                  chunkFresh[k], chunkMoved[k]);
      });
      chunkBestValid = true;
      next = Best();
      Best fresh;
      for (size_t k = 0; k < rowChunks; ++k) {
        offer(next, chunkBest[k].value, chunkBest[k].row);
        offer(fresh, chunkFresh[k].value, chunkFresh[k].row);
        for (uint32_t a : chunkMoved[k]) --groupSize[a];
        groupSize[t] += static_cast<uint32_t>(chunkMoved[k].size());
      }
      groupBest[t] = fresh;
      groupsExact = false;
      // Refresh the maxima now and then: stale (larger) radii let fewer groups be skipped.
      if (++staleSteps >= refreshSteps && t + 1 < count) rebuildGroups(t + 1);
      control.report(t + 1, count);
      continue;
    }

    chunkBestValid = false;
    items.clear();
    for (uint32_t a : candidates) {
      const size_t n = members[a].size();
      for (size_t b = 0; b < n; b += kItemRows) items.push_back({a, b, std::min(n, b + kItemRows)});
    }
    if (results.size() < items.size()) results.resize(items.size());
    auto visit = [&](size_t k) {
      ItemResult& r = results[k];
      r.kept = Best();
      r.removed = 0;
      r.moved.clear();
      const Item& it = items[k];
      itemPass(step, members[it.group].data(), it.begin, it.end, centerLower2[it.group], mind2.data(), reaches,
               assign.data(), r);
    };
    visitGate.run(static_cast<double>(visitRows), items.size(), 1, [&](size_t k, size_t, size_t) { visit(k); },
                  true);

    // Fold the items back into their groups (items of one group are consecutive), and build the new group.
    Best fresh;
    std::vector<uint32_t>& mine = members[t];
    for (size_t k = 0; k < items.size();) {
      const uint32_t a = items[k].group;
      Best kept;
      bool shrank = false;
      for (; k < items.size() && items[k].group == a; ++k) {
        ItemResult& r = results[k];
        offer(kept, r.kept.value, r.kept.row);
        shrank = shrank || r.removed > 0;
        groupSize[a] -= static_cast<uint32_t>(r.moved.size());
        for (uint32_t i : r.moved) {
          mine.push_back(i);
          offer(fresh, mind2[i], i);
        }
      }
      groupBest[a] = kept;
      if (shrank) {
        std::vector<uint32_t>& m = members[a];
        m.erase(std::remove_if(m.begin(), m.end(), [&](uint32_t i) { return assign[i] != a; }), m.end());
      }
    }
    groupBest[t] = fresh;
    groupSize[t] = static_cast<uint32_t>(mine.size());
    next = Best();
    for (size_t a = 0; a <= t; ++a) offer(next, groupBest[a].value, groupBest[a].row);
    control.report(t + 1, count);
  }
  return selected;
}
}  // namespace

IMIAD_CORESET_CLONES double squaredDistance(const float* a, const float* b, size_t dims) {
  return laneDistance(a, b, dims);
}

detail::CodesProbe detail::probeCodes(const float* X, size_t rows, size_t dims, size_t c,
                                      const std::vector<double>& reach) {
  RunControl control;
  Team team(teamSize(rows));
  const Codes codes = buildCodes(team, X, rows, dims, control);
  const CodeKernels kernels = pickCodeKernels();
  CodesProbe probe;
  probe.scale = codes.scale;
  probe.err = codes.err;
  for (size_t i = 0; i < rows; ++i) probe.S.push_back(kernels.distance(codes.row(i), codes.row(c), codes.stride));
  probe.errMax = codes.errMax;
  probe.admitted.assign(rows, 0);
  std::vector<uint32_t> limit(rows);
  for (size_t i = 0; i < rows; ++i) limit[i] = limitOf(reach[i], codes.errMax, codes.inverse);
  for (size_t begin = 0; begin < rows; begin += kRowChunk) {
    const size_t n = std::min(kRowChunk, rows - begin);
    uint64_t masks[kRowChunk / 64] = {};
    const AdmitBlock block{codes.row(begin), codes.norm.data() + begin, limit.data() + begin, n, codes.stride,
                           codes.row(c), codes.centerTerm(c)};
    kernels.admit(block, masks);
    for (size_t k = 0; k < n; ++k) probe.admitted[begin + k] = (masks[k / 64] >> (k % 64)) & 1;
  }
  return probe;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<float> projectionMatrix(size_t dims, size_t outDims, uint64_t seed) {
  uint64_t sm = seed;
  uint64_t s[4];
  for (uint64_t& word : s) word = splitmix64(sm);
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dims)));
  std::vector<float> W(dims * outDims);
  for (float& w : W) {
    // xoshiro256** (Blackman, Vigna 2018)
    const uint64_t r = rotl(s[1] * 5, 7) * 9;
    const uint64_t tmp = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= tmp;
    s[3] = rotl(s[3], 45);
    const float u = static_cast<float>(static_cast<int64_t>(r >> 40) - (int64_t(1) << 23)) * (1.0f / 8388608.0f);
    w = u * scale;
  }
  return W;
}

void projectFeatures(const float* X, size_t rows, size_t dims, size_t outDims, uint64_t seed, float* out,
                     const RunControl& control) {
  if (rows == 0 || outDims == 0) return;
  const std::vector<float> W = projectionMatrix(dims, outDims, seed);
  constexpr size_t kProjectRows = 256;
  parallelChunks(rows, kProjectRows, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    projectRows(X, begin, end, dims, W.data(), outDims, out);
  });
}

std::vector<uint32_t> greedyCoreset(const float* features, size_t rows, size_t dims, const CoresetOptions& options,
                                    const RunControl& control) {
  std::vector<float> storage;
  const float* X = prepare(features, rows, dims, options, storage, control);
  return fastKCenter(X, rows, dims, options.count, options.startIndex, control);
}

std::vector<uint32_t> greedyCoresetPlain(const float* features, size_t rows, size_t dims,
                                         const CoresetOptions& options, const RunControl& control) {
  std::vector<float> storage;
  const float* X = prepare(features, rows, dims, options, storage, control);
  return plainKCenter(X, rows, dims, options.count, options.startIndex, control);
}

}  // namespace imiad
