// Greedy coreset (k-center greedy), PatchCore (Roth et al., CVPR 2022) Algorithm 1; the projected mode follows the
// reference ApproximateGreedyCoresetSampler (amazon-science/patchcore-inspection, sampler.py). See coreset.h.
//
// The fast kernel selects exactly what the plain loop selects. The plain loop spends rows * count distance
// evaluations; the fast one keeps every row assigned to its nearest selected row ("center") and groups rows by
// center. When a new center c arrives, a row i of group a can only get closer to c than to a if
// d(a, c) < 2 d(i, a) (triangle inequality), so a whole group is skipped when d(a, c) >= 2 * (its radius), and a row
// of a visited group when d(a, c) >= 2 d(i, a). The comparisons carry a margin for float rounding (derived at
// pruneMargin()) so that a skipped row is one whose computed distance could not have been smaller than its current
// minimum: the decisions stay bit-identical to the plain loop's. Each group keeps its best row (largest minimum
// distance, smallest index among ties), so the next selection is a scan over the groups, not over the rows.
#include "coreset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "parallel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// No "fma" in any clone: the distance and the projection are defined without fused multiply-add (coreset.h).
#define IMIAD_CORESET_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define IMIAD_CORESET_CLONES
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
constexpr size_t kRowChunk = 4096;
constexpr size_t kItemRows = 2048;
constexpr size_t kCenterChunk = 1024;
// Below these amounts of work a pass runs on the calling thread (starting threads would cost more than it saves).
constexpr size_t kParallelRows = 8192;
constexpr size_t kParallelCenters = 4096;
// Linear-mode steps after which the group lists and maxima are rebuilt exactly.
constexpr size_t kRefreshSteps = 32;

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

struct PruneRule {
  double factor;  // 4 (1 + eps) / (1 - eps)
  double delta;   // absolute error allowance (subnormal results)
  double eps;     // relative error bound of a computed squared distance
  // True when no row of squared minimum distance m2 (to a center at squared distance dac from c) can get closer
  // to c: see pruneMargin().
  bool cannotImprove(double dac, double m2) const { return dac >= factor * (m2 + delta) + delta; }
};

// Rounding bounds of laneDistance() (double arithmetic on float inputs, u = 2^-53): each term fl(fl(a-b)^2) is within
// (1 +- 3.01u) of (a-b)^2; a term then goes through at most ceil(dims/16) - 1 lane additions and 4 reduction
// additions, all of non-negative values, so the computed D' satisfies |D' - D| <= eps D with
// eps = (ceil(dims/16) + 6.1) u (taken twice as large here). No term can be subnormal or overflow (float inputs), so
// the absolute allowance delta is 0. If D'(a,c) >= factor (m2 + delta) + delta, then
// d(a,c) >= 2 sqrt((m2 + delta) / (1 - eps)) >= 2 d(i,a), so d(i,c) >= d(a,c) - d(i,a) >= sqrt((m2 + delta)/(1 - eps))
// and D'(i,c) >= (1 - eps) D(i,c) - delta >= m2: the plain loop would keep m2 too.
PruneRule pruneMargin(size_t dims) {
  const double u = std::ldexp(1.0, -53);
  const double lanes = std::ceil(static_cast<double>(dims) / kDistanceLanes);
  const double eps = 2.0 * (lanes + 8.0) * u;
  PruneRule rule;
  rule.factor = 4.0 * (1.0 + eps) / (1.0 - eps);
  rule.eps = eps;
  rule.delta = 0.0;
  return rule;
}

// Pivots: the first kPivots selected rows. Every center keeps bounds on its true distance to each pivot, from the
// computed squared distance D': lo = sqrt((D' - delta) / (1 + eps)) <= d <= hi = sqrt((D' + delta) / (1 - eps)).
// Then |d(a,p) - d(c,p)| <= d(a,c) bounds a center-to-center distance without touching the rows' dims.
constexpr size_t kPivots = 8;

struct PivotBounds {
  double lo[kPivots];
  double hi[kPivots];
};

PivotBounds pivotBounds(const float* centers, size_t dims, const float* row, const PruneRule& rule) {
  PivotBounds b;
  for (size_t p = 0; p < kPivots; ++p) {
    const double d2 = laneDistance(centers + p * dims, row, dims);
    b.lo[p] = std::sqrt(std::max(0.0, (d2 - rule.delta) / (1.0 + rule.eps)));
    b.hi[p] = std::sqrt((d2 + rule.delta) / (1.0 - rule.eps));
  }
  return b;
}

// Marks in centerDist2 the groups that may lose rows to the new center c: the squared distance d(a, c) when needed,
// -1 when the group is ruled out without it (radius 0, or pivot bounds give d(a,c) >= 2 * its radius with margin:
// the same guarantee as PruneRule::cannotImprove, see pruneMargin()).
IMIAD_CORESET_CLONES void centerPass(const float* centers, size_t dims, size_t begin, size_t end, const float* c,
                                     const Best* groupBest, const PivotBounds* bounds, const PivotBounds* cBounds,
                                     size_t home, const PruneRule& rule, double* centerDist2) {
  for (size_t a = begin; a < end; ++a) {
    const double r2 = groupBest[a].value;
    if (a != home) {
      if (r2 <= 0.0) {
        centerDist2[a] = -1.0;
        continue;
      }
      if (bounds != nullptr) {
        double gap = 0.0;
        const PivotBounds& b = bounds[a];
        for (size_t p = 0; p < kPivots; ++p) {
          // The slack covers the rounding of the sqrt and of this subtraction.
          const double slack = 1e-14 * (b.hi[p] + cBounds->hi[p]);
          gap = std::max(gap, std::max(b.lo[p] - cBounds->hi[p], cBounds->lo[p] - b.hi[p]) - slack);
        }
        if (gap * gap >= 4.0 * (r2 + rule.delta) / (1.0 - rule.eps) * (1.0 + 1e-13)) {
          centerDist2[a] = -1.0;
          continue;
        }
      }
    }
    centerDist2[a] = laneDistance(centers + a * dims, c, dims);
  }
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

// Visits members [begin, end) of group a for the new center c (group index t).
IMIAD_CORESET_CLONES void itemPass(const float* X, size_t dims, const uint32_t* members, size_t begin, size_t end,
                                   const float* c, double dac, const PruneRule& rule, double* mind2, uint32_t* assign,
                                   uint32_t t, ItemResult& out) {
  // Work on a local copy: the results of neighbouring items share cache lines (see linearPass).
  ItemResult result;
  result.moved.swap(out.moved);
  result.moved.clear();
  // Members are scattered over the matrix: fetch rows a few members ahead (a plain pass streams instead).
  constexpr size_t kAhead = 6;
  const size_t rowBytes = dims * sizeof(float);
  for (size_t k = begin; k < end; ++k) {
    if (k + kAhead < end) {
      const char* ahead = reinterpret_cast<const char*>(X + static_cast<size_t>(members[k + kAhead]) * dims);
      for (size_t off = 0; off < rowBytes; off += 64) __builtin_prefetch(ahead + off);
    }
    const uint32_t i = members[k];
    const double m2 = mind2[i];
    if (m2 < 0.0) {  // the new center itself: leaves its group
      ++result.removed;
      continue;
    }
    if (m2 > 0.0 && !rule.cannotImprove(dac, m2)) {
      const double d = laneDistance(X + static_cast<size_t>(i) * dims, c, dims);
      if (d < m2) {
        mind2[i] = d;
        assign[i] = t;
        result.moved.push_back(i);
        ++result.removed;
        continue;
      }
    }
    offer(result.kept, m2, i);
  }
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

// First pass of both kernels: every row's squared distance to the start row, and the best row.
Best initialPass(const float* X, size_t rows, size_t dims, size_t start, std::vector<double>& mind2) {
  mind2.assign(rows, std::numeric_limits<double>::infinity());
  mind2[start] = kSelected;
  const float* c = X + start * dims;
  std::vector<Best> chunkBest((rows + kRowChunk - 1) / kRowChunk);
  parallelChunks(rows, kRowChunk, [&](size_t k, size_t begin, size_t end) {
    chunkBest[k] = plainPass(X, dims, begin, end, c, mind2.data());
  });
  Best best;
  for (const Best& b : chunkBest) offer(best, b.value, b.row);
  return best;
}

std::vector<uint32_t> plainKCenter(const float* X, size_t rows, size_t dims, size_t count, size_t start,
                                   const RunControl& control) {
  std::vector<uint32_t> selected{static_cast<uint32_t>(start)};
  selected.reserve(count);
  std::vector<double> mind2;
  Best best = initialPass(X, rows, dims, start, mind2);
  control.report(1, count);
  std::vector<Best> chunkBest((rows + kRowChunk - 1) / kRowChunk);
  while (selected.size() < count) {
    control.throwIfCancelled();
    const uint32_t c = best.row;
    selected.push_back(c);
    mind2[c] = kSelected;
    if (selected.size() < count) {
      const float* center = X + static_cast<size_t>(c) * dims;
      parallelChunks(rows, kRowChunk, [&](size_t k, size_t begin, size_t end) {
        chunkBest[k] = plainPass(X, dims, begin, end, center, mind2.data());
      });
      best = Best();
      for (const Best& b : chunkBest) offer(best, b.value, b.row);
    }
    control.report(selected.size(), count);
  }
  return selected;
}

// Linear pass over rows [begin, end) for the new center c (group t): like plainPass, but a row is only measured when
// its group may lose rows to c (gate) and the per-row bound allows it; no gate (nullptr) measures every row.
// Returns the best row over all rows.
IMIAD_CORESET_CLONES Best linearPass(const float* X, size_t dims, size_t begin, size_t end, const float* c,
                                     const uint8_t* gate, const double* centerDist2, const PruneRule& rule,
                                     double* mind2, uint32_t* assign, uint32_t t, Best& freshOut,
                                     std::vector<uint32_t>& movedOut) {
  // Local until the end: the per-chunk outputs sit next to each other, and writing them per row would make the
  // threads fight over their cache lines.
  Best best, fresh;
  std::vector<uint32_t> movedFrom;
  movedFrom.swap(movedOut);
  movedFrom.clear();
  for (size_t i = begin; i < end; ++i) {
    double m2 = mind2[i];
    if (m2 < 0.0) continue;
    const uint32_t a = assign[i];
    if (m2 > 0.0 && (gate == nullptr || (gate[a] && !rule.cannotImprove(centerDist2[a], m2)))) {
      const double d = laneDistance(X + i * dims, c, dims);
      if (d < m2) {
        m2 = d;
        mind2[i] = d;
        assign[i] = t;
        movedFrom.push_back(a);
        offer(fresh, d, static_cast<uint32_t>(i));
      }
    }
    offer(best, m2, static_cast<uint32_t>(i));
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
  std::vector<double> centerDist2(count);
  std::vector<uint8_t> gate(count, 0);
  std::vector<PivotBounds> pivots(count);

  Best next = initialPass(X, rows, dims, start, mind2);
  groupBest[0] = next;
  groupSize[0] = static_cast<uint32_t>(rows - 1);
  members[0].reserve(rows - 1);
  for (size_t i = 0; i < rows; ++i) {
    if (i != start) members[0].push_back(static_cast<uint32_t>(i));
  }
  bool groupsExact = true;
  bool unstructured = false;
  size_t staleSteps = 0;
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
    const size_t unselected = rows - t - 1;
    auto chooseCandidates = [&]() {
      candidates.clear();
      size_t visitRows = 0;
      for (size_t a = 0; a < t; ++a) {
        // The home group always: c leaves it (and when its radius is 0, nothing else happens to it).
        gate[a] = a == home || (centerDist2[a] >= 0.0 && !rule.cannotImprove(centerDist2[a], groupBest[a].value));
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
      for (size_t a = 0; a <= t; ++a) pivots[a] = pivotBounds(centers.data(), dims, centers.data() + a * dims, rule);
    } else if (t >= kPivots) {
      pivots[t] = pivotBounds(centers.data(), dims, center, rule);
    }
    const bool havePivots = t >= kPivots;
    if (!openAll) {
      auto pass = [&](size_t begin, size_t end) {
        centerPass(centers.data(), dims, begin, end, center, groupBest.data(), havePivots ? pivots.data() : nullptr,
                   &pivots[t], home, rule, centerDist2.data());
      };
      if (t >= kParallelCenters) {
        parallelChunks(t, kCenterChunk, [&](size_t, size_t begin, size_t end) { pass(begin, end); });
      } else {
        pass(0, t);
      }
      visitRows = chooseCandidates();
      unstructured = visitRows * 10 >= unselected * 9;
    }
    bool linear = visitRows * 4 > unselected;
    if (!linear && !groupsExact) {
      rebuildGroups(t);
      visitRows = chooseCandidates();  // exact radii can only remove candidates
    }

    if (linear) {
      parallelChunks(rows, kRowChunk, [&](size_t k, size_t begin, size_t end) {
        chunkFresh[k] = Best();
        chunkMoved[k].clear();
        chunkBest[k] = linearPass(X, dims, begin, end, center, openAll ? nullptr : gate.data(), centerDist2.data(),
                                  rule, mind2.data(),
                                  assign.data(), static_cast<uint32_t>(t), chunkFresh[k], chunkMoved[k]);
      });
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
      if (++staleSteps >= kRefreshSteps && t + 1 < count) rebuildGroups(t + 1);
      control.report(t + 1, count);
      continue;
    }

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
      itemPass(X, dims, members[it.group].data(), it.begin, it.end, center, centerDist2[it.group], rule, mind2.data(),
               assign.data(), static_cast<uint32_t>(t), r);
    };
    if (visitRows >= kParallelRows) {
      parallelChunks(items.size(), 1, [&](size_t k, size_t, size_t) { visit(k); });
    } else {
      for (size_t k = 0; k < items.size(); ++k) visit(k);
    }

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
