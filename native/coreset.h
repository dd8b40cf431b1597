// Greedy coreset (k-center greedy) as in PatchCore, Roth et al., "Towards Total Recall in Industrial Anomaly
// Detection" (CVPR 2022), Algorithm 1, and its reference code (amazon-science/patchcore-inspection,
// sampler.py: ApproximateGreedyCoresetSampler, which first maps the features to 128 dims with a random linear map).
//
// Definition (DESIGN.md): the first selected row is `startIndex`; each next row is, among the rows not yet selected,
// the one whose distance to its nearest selected row is largest; ties go to the smaller row index. "Distance" is the
// squared Euclidean distance computed by squaredDistance() below, in double precision on the float32 features with a
// fixed order of operations, so that the fast kernel and the plain loop take exactly the same decisions on every CPU,
// a TypeScript reference can reproduce them, and only ties closer than ~1e-15 relative are decided by rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "control.h"

namespace imiad {

// Number of lanes of squaredDistance(): element j of a row is accumulated in lane j % kDistanceLanes (the tail is
// zero-padded), in double: d = double(a_j) - double(b_j), lane += d * d, each step rounded to double without fused
// multiply-add; the lanes are then summed pairwise (lane j += lane j+8, then j += j+4, j += j+2, j += j+1). Fixed, so
// results do not depend on the SIMD width.
constexpr size_t kDistanceLanes = 16;

// The one distance of the coreset kernels (see kDistanceLanes for the exact order of operations).
double squaredDistance(const float* a, const float* b, size_t dims);

struct CoresetOptions {
  size_t count = 1;           // rows to select, 1..rows
  size_t projectionDims = 0;  // 0: exact on the given features; > 0: projectFeatures() to this many dims first
  uint64_t seed = 0;          // seeds the projection matrix
  size_t startIndex = 0;      // first selected row, 0..rows-1
};

// Fast exact greedy k-center: the same rows, in the same order, as greedyCoresetPlain(), without N-by-N work.
// Throws InvalidArgument on arguments out of range or non-finite features, Cancelled when the control's flag is set.
std::vector<uint32_t> greedyCoreset(const float* features, size_t rows, size_t dims, const CoresetOptions& options,
                                    const RunControl& control);

// The plain loop (PatchCore's): after each selection, every row's minimum distance is updated against the new row.
// Internal: the reference the fast kernel is tested and benchmarked against.
std::vector<uint32_t> greedyCoresetPlain(const float* features, size_t rows, size_t dims,
                                         const CoresetOptions& options, const RunControl& control);

// The seeded random linear map of the projected mode: out[rows, outDims] = X[rows, dims] * W[dims, outDims].
// W[j][o] (row-major, j outer) takes successive outputs r of xoshiro256** seeded with four successive splitmix64
// outputs from state `seed`: u = ((r >> 40) - 2^23) / 2^23, uniform on [-1, 1) in steps of 2^-23, then
// w = float(u * float(1 / sqrt(dims))), i.e. U(-1/sqrt(dims), 1/sqrt(dims)) like torch.nn.Linear's default init
// that PatchCore's reference uses. out[r][o] accumulates x[r][j] * w[j][o] over j = 0..dims-1 in order, each product
// and sum rounded to float (no fused multiply-add), so it is the same on every CPU and thread count.
void projectFeatures(const float* X, size_t rows, size_t dims, size_t outDims, uint64_t seed, float* out,
                     const RunControl& control);

// The projection matrix W[dims, outDims] described above (exposed for tests and other backends).
std::vector<float> projectionMatrix(size_t dims, size_t outDims, uint64_t seed);

namespace detail {
// For tests: the codes of X (coreset.cc, Codes) seen from center row c, with the kernels of the instruction set in
// use (IMIAD_CORESET_ISA can pin one). S[i] from the one-row kernel; admitted[i] from the block kernel, given
// reach[i] (NaN: never).
struct CodesProbe {
  double scale = 0.0;
  double errMax = 0.0;
  std::vector<double> err;
  std::vector<uint32_t> S;
  std::vector<uint8_t> admitted;
};
CodesProbe probeCodes(const float* X, size_t rows, size_t dims, size_t c, const std::vector<double>& reach);
}  // namespace detail

// splitmix64 (Steele, Lea, Flood 2014): one step from `state`, as used for seeding.
uint64_t splitmix64(uint64_t& state);

}  // namespace imiad
