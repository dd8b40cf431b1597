// The fast greedy coreset selects exactly what the plain loop selects: random and clustered data, duplicates and
// ties, count = rows and count = 1, awkward dims, tiny and huge magnitudes, the projected mode; plus hand-made cases
// and the projection's definition. Run by test/native/run.sh under ASan/UBSan.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "coreset.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  double uniform() { return static_cast<double>(imiad::splitmix64(s) >> 11) * 0x1.0p-53; }
  size_t below(size_t n) { return static_cast<size_t>(uniform() * static_cast<double>(n)); }
};

std::vector<float> uniformData(size_t rows, size_t dims, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> x(rows * dims);
  for (float& v : x) v = static_cast<float>(rng.uniform() - 0.5) * scale;
  return x;
}

// Points around a few centers in a low-dimensional subspace: the case where pruning matters.
std::vector<float> clusteredData(size_t rows, size_t dims, uint64_t seed) {
  Rng rng(seed);
  const size_t clusters = 12;
  std::vector<float> centers(clusters * dims);
  for (float& v : centers) v = static_cast<float>(rng.uniform() * 8.0 - 4.0);
  std::vector<float> x(rows * dims);
  for (size_t i = 0; i < rows; ++i) {
    const size_t k = rng.below(clusters);
    for (size_t j = 0; j < dims; ++j) {
      x[i * dims + j] = centers[k * dims + j] + static_cast<float>((rng.uniform() - 0.5) * (j < 4 ? 1.0 : 0.05));
    }
  }
  return x;
}

std::string describe(size_t rows, size_t dims, const imiad::CoresetOptions& o, const char* kind) {
  return std::string(kind) + " rows=" + std::to_string(rows) + " dims=" + std::to_string(dims) +
         " count=" + std::to_string(o.count) + " proj=" + std::to_string(o.projectionDims) +
         " start=" + std::to_string(o.startIndex);
}

void compare(const std::vector<float>& x, size_t dims, imiad::CoresetOptions o, const char* kind) {
  const size_t rows = x.size() / dims;
  imiad::RunControl control;
  const auto fast = imiad::greedyCoreset(x.data(), rows, dims, o, control);
  const auto plain = imiad::greedyCoresetPlain(x.data(), rows, dims, o, control);
  check(fast.size() == o.count, describe(rows, dims, o, kind) + ": size");
  check(fast == plain, describe(rows, dims, o, kind) + ": fast != plain");
  if (o.count == rows) {
    std::vector<int> seen(rows, 0);
    for (uint32_t i : fast) seen[i]++;
    bool perm = true;
    for (int s : seen) perm = perm && s == 1;
    check(perm, describe(rows, dims, o, kind) + ": count = rows is not a permutation");
  }
}

std::vector<uint32_t> select1d(const std::vector<float>& pts, size_t count, size_t start) {
  imiad::CoresetOptions o;
  o.count = count;
  o.startIndex = start;
  imiad::RunControl control;
  return imiad::greedyCoreset(pts.data(), pts.size(), 1, o, control);
}

void handMade() {
  // 1-D: from 0, the farthest is 10 (index 1); then 5 (index 4, 5 away from both); then 2 or 8 (3 away; tie -> 2).
  check(select1d({0, 10, 2, 8, 5}, 5, 0) == std::vector<uint32_t>({0, 1, 4, 2, 3}), "hand-made 1-D order");
  // Ties to the smaller index: -2 and 2 are both 2 away from 0.
  check(select1d({0, 2, -2}, 3, 0) == std::vector<uint32_t>({0, 1, 2}), "tie to the smaller index");
  check(select1d({0, -2, 2}, 2, 0) == std::vector<uint32_t>({0, 1}), "tie to the smaller index (mirrored)");
  // Duplicates: once only zero distances remain, the remaining rows come in index order.
  check(select1d({3, 3, 1, 3, 1}, 5, 3) == std::vector<uint32_t>({3, 2, 0, 1, 4}), "duplicates in index order");
  check(select1d({7}, 1, 0) == std::vector<uint32_t>({0}), "one row");
  // A 2-D case worked by hand: square corners 0..3 and the centre 4, starting at corner 0.
  const std::vector<float> square = {0, 0, 4, 0, 0, 4, 4, 4, 2, 2};
  imiad::CoresetOptions o;
  o.count = 5;
  o.startIndex = 0;
  imiad::RunControl control;
  // Squared distances from 0: 16, 16, 32, 8 -> 3. Then 1 and 2 are both 16 from their nearest (tie -> 1), the
  // centre 8; then 2 (16) before the centre (8).
  check(imiad::greedyCoreset(square.data(), 5, 2, o, control) == std::vector<uint32_t>({0, 3, 1, 2, 4}),
        "hand-made 2-D square");
}

void distanceDefinition() {
  // 20 dims: lanes 0..3 get two terms, lanes 4..15 one; then the fixed pairwise reduction.
  std::vector<float> a = uniformData(1, 20, 5), b = uniformData(1, 20, 6);
  double lanes[16] = {};
  for (size_t i = 0; i < 20; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    const double sq = d * d;
    lanes[i % 16] = lanes[i % 16] + sq;
  }
  for (size_t w = 8; w >= 1; w /= 2)
    for (size_t j = 0; j < w; ++j) lanes[j] = lanes[j] + lanes[j + w];
  check(imiad::squaredDistance(a.data(), b.data(), 20) == lanes[0], "squaredDistance follows its definition");
  check(imiad::squaredDistance(a.data(), a.data(), 20) == 0.0, "distance to itself is 0");
}

void projection() {
  const size_t rows = 37, dims = 70, out = 67;  // awkward sizes: partial row and output blocks
  const std::vector<float> x = uniformData(rows, dims, 11);
  std::vector<float> y(rows * out), y2(rows * out), y3(rows * out);
  imiad::RunControl control;
  imiad::projectFeatures(x.data(), rows, dims, out, 42, y.data(), control);
  imiad::projectFeatures(x.data(), rows, dims, out, 42, y2.data(), control);
  imiad::projectFeatures(x.data(), rows, dims, out, 43, y3.data(), control);
  check(y == y2, "projection is deterministic");
  check(y != y3, "projection depends on the seed");
  const std::vector<float> W = imiad::projectionMatrix(dims, out, 42);
  bool same = true, inRange = true;
  const float bound = static_cast<float>(1.0 / std::sqrt(70.0));
  for (float w : W) inRange = inRange && w >= -bound && w < bound;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t o = 0; o < out; ++o) {
      float acc = 0.0f;
      for (size_t j = 0; j < dims; ++j) {
        const float p = x[r * dims + j] * W[j * out + o];
        acc = acc + p;
      }
      same = same && acc == y[r * out + o];
    }
  }
  check(same, "projection equals the sequential float definition");
  check(inRange, "projection weights lie in [-1/sqrt(dims), 1/sqrt(dims))");
  // First weight from the documented generator, recomputed here step by step.
  uint64_t sm = 42;
  uint64_t s1;
  imiad::splitmix64(sm);
  s1 = imiad::splitmix64(sm);
  const uint64_t r = ((s1 * 5) << 7 | (s1 * 5) >> 57) * 9;
  const float u = static_cast<float>(static_cast<int64_t>(r >> 40) - (int64_t(1) << 23)) / 8388608.0f;
  check(W[0] == u * bound, "first projection weight follows the documented generator");
}

void cancellation() {
  const std::vector<float> x = uniformData(3000, 8, 3);
  imiad::CoresetOptions o;
  o.count = 2000;
  int32_t flag = 0;
  imiad::RunControl control;
  control.cancelFlag = &flag;
  uint64_t lastDone = 0;
  control.progress = [&](uint64_t done, uint64_t total) {
    check(total == 2000 && done >= lastDone, "progress is monotone with total = count");
    lastDone = done;
    if (done == 500) flag = 1;
  };
  bool cancelled = false;
  try {
    imiad::greedyCoreset(x.data(), 3000, 8, o, control);
  } catch (const imiad::Cancelled&) {
    cancelled = true;
  }
  check(cancelled && lastDone == 500, "cancel flag stops the kernel at the next block");
}

void badArguments() {
  const std::vector<float> x = {1, 2, NAN, 4};
  imiad::CoresetOptions o;
  o.count = 1;
  imiad::RunControl control;
  std::string message;
  try {
    imiad::greedyCoreset(x.data(), 2, 2, o, control);
  } catch (const imiad::InvalidArgument& e) {
    message = std::string(e.code) + ": " + e.what();
  }
  check(message == "ERR_IMIAD_NOT_FINITE: Expected finite numbers in features but received NaN of type number at index 2",
        "NaN rejected: " + message);
  o.count = 3;
  message.clear();
  try {
    imiad::greedyCoreset(x.data(), 2, 2, o, control);
  } catch (const imiad::InvalidArgument& e) {
    message = e.what();
  }
  check(message == "Expected integer between 1 and 2 for count but received 3", "count > rows rejected: " + message);
}

// The codes' bound (coreset.cc, Codes): exact integers, the same in every instruction set; block admission equal to
// its formula; a true lower bound of the distance; and tight enough to be worth computing.
void codesBound() {
  const char* isas[] = {"", "avx2", "portable"};
  const size_t rows = 1000;  // not a multiple of 16 or 64: partial blocks
  uint64_t seed = 900;
  for (size_t dims : {1u, 5u, 64u, 65u, 128u, 200u, 256u, 300u}) {
    for (int kind = 0; kind < 2; ++kind) {
      const auto x = kind == 0 ? uniformData(rows, dims, ++seed) : clusteredData(rows, dims, ++seed);
      const std::string what = std::string(kind == 0 ? "uniform" : "clustered") + " dims=" + std::to_string(dims);
      const size_t c = 17;
      const std::vector<double> never(rows, std::nan(""));
      const auto base = imiad::detail::probeCodes(x.data(), rows, dims, c, never);
      // Reaches scattered around each row's threshold, some NaN, so that admission goes both ways.
      std::vector<double> reach(rows);
      Rng rng(seed);
      for (size_t i = 0; i < rows; ++i) {
        const double edge = base.scale * std::sqrt(static_cast<double>(base.S[i])) - base.errMax;
        reach[i] = i % 97 == 0 ? std::nan("") : std::max(0.0, edge * (0.9 + 0.2 * rng.uniform()));
      }
      size_t admittedCount = 0;
      double gapSum = 0.0;
      for (const char* isa : isas) {
        if (*isa) setenv("IMIAD_CORESET_ISA", isa, 1);
        const auto p = imiad::detail::probeCodes(x.data(), rows, dims, c, reach);
        unsetenv("IMIAD_CORESET_ISA");
        check(p.S == base.S, what + ": S differs with IMIAD_CORESET_ISA=" + isa);
        const double inverse = 1.0 / p.scale;
        bool formula = true, lower = true;
        admittedCount = 0;
        gapSum = 0.0;
        for (size_t i = 0; i < rows; ++i) {
          // admitted when S < ceil(((reach + errMax) / s)^2 (1 + 1e-11)), never for a NaN reach.
          const double t = (reach[i] + p.errMax) * inverse;
          const bool expect = !std::isnan(reach[i]) && static_cast<double>(p.S[i]) < std::ceil(t * t * (1.0 + 1e-11));
          formula = formula && (p.admitted[i] != 0) == expect;
          admittedCount += p.admitted[i];
          long double d2 = 0.0L;
          for (size_t j = 0; j < dims; ++j) {
            const long double d = static_cast<long double>(x[i * dims + j]) - x[c * dims + j];
            d2 += d * d;
          }
          const double exact = static_cast<double>(std::sqrt(d2));
          const double bound = p.scale * std::sqrt(static_cast<double>(p.S[i])) - p.err[i] - p.err[c];
          lower = lower && bound <= exact * (1.0 + 1e-12);
          gapSum += exact - bound;
        }
        check(formula, what + ": block admission differs from its formula with IMIAD_CORESET_ISA=" + isa);
        check(lower, what + ": the codes' bound exceeds a distance with IMIAD_CORESET_ISA=" + isa);
      }
      check(admittedCount > rows / 20 && admittedCount < rows - rows / 20, what + ": admission goes both ways");
      // Uniform data in [-0.5, 0.5): err is about sqrt(dims / 12) * scale / 2 per row, far below the distances.
      if (kind == 0 && dims >= 64) {
        const double meanGap = gapSum / rows;
        const double typical = std::sqrt(dims / 6.0);
        check(meanGap < 0.03 * typical, what + ": the codes' bound is loose (mean gap " + std::to_string(meanGap) + ")");
      }
    }
  }
}

}  // namespace

int main() {
  codesBound();
  handMade();
  distanceDefinition();
  projection();
  cancellation();
  badArguments();

  imiad::CoresetOptions o;
  const size_t dimsList[] = {1, 3, 16, 37, 128};
  uint64_t seed = 100;
  for (size_t dims : dimsList) {
    for (size_t rows : {1u, 2u, 17u, 400u, 3000u}) {
      const auto x = uniformData(rows, dims, ++seed);
      for (size_t count : {size_t(1), std::max<size_t>(1, rows / 10), rows}) {
        if (rows == 3000 && count == rows && dims > 16) continue;  // covered by smaller shapes; keeps ASan quick
        o = imiad::CoresetOptions();
        o.count = count;
        o.startIndex = (seed * 7919) % rows;
        compare(x, dims, o, "uniform");
      }
    }
  }
  for (size_t dims : {2u, 24u, 64u}) {
    const auto x = clusteredData(6000, dims, ++seed);
    o = imiad::CoresetOptions();
    o.count = 600;
    o.startIndex = 17;
    compare(x, dims, o, "clustered");
  }
  {
    // Heavy duplication and exact ties: integer grid points, each repeated.
    std::vector<float> x;
    Rng rng(77);
    for (size_t i = 0; i < 900; ++i) {
      const float a = static_cast<float>(rng.below(5)), b = static_cast<float>(rng.below(5));
      x.push_back(a);
      x.push_back(b);
    }
    for (size_t count : {1u, 10u, 25u, 26u, 300u, 900u}) {
      o = imiad::CoresetOptions();
      o.count = count;
      o.startIndex = 4;
      compare(x, 2, o, "grid duplicates");
    }
  }
  for (float scale : {1e-38f, 1e-19f, 1e38f}) {  // subnormal floats; squares far outside float's range
    const auto x = uniformData(500, 5, ++seed, scale);
    o = imiad::CoresetOptions();
    o.count = 120;
    compare(x, 5, o, scale < 1 ? "tiny" : "huge");
  }
  {
    const auto x = clusteredData(2000, 96, ++seed);
    o = imiad::CoresetOptions();
    o.count = 200;
    o.projectionDims = 12;
    o.seed = 9;
    o.startIndex = 5;
    compare(x, 96, o, "projected");
  }
  {
    // Thread-count independence (parallelChunks reads IMIAD_THREADS on every call).
    const auto x = clusteredData(30000, 8, ++seed);
    o = imiad::CoresetOptions();
    o.count = 3000;
    imiad::RunControl control;
    setenv("IMIAD_THREADS", "1", 1);
    const auto one = imiad::greedyCoreset(x.data(), 30000, 8, o, control);
    setenv("IMIAD_THREADS", "3", 1);
    const auto three = imiad::greedyCoreset(x.data(), 30000, 8, o, control);
    unsetenv("IMIAD_THREADS");
    check(one == three, "thread count does not change the selection");
    compare(x, 8, o, "large clustered");
  }
  {
    // Every instruction set of the codes selects the same rows; constant data (codes scale 0); one dimension with a
    // range far beyond the others (coarse codes); rows of 200 and 300 dims (block and one-row code kernels).
    const auto clustered = clusteredData(5000, 40, ++seed);
    std::vector<float> constant(700 * 9, 2.5f);
    auto outlier = uniformData(3000, 32, ++seed);
    for (size_t i = 0; i < 3000; ++i) outlier[i * 32 + 5] *= 1e4f;
    for (const char* isa : {"portable", "avx2", ""}) {
      if (*isa) setenv("IMIAD_CORESET_ISA", isa, 1);
      o = imiad::CoresetOptions();
      o.count = 500;
      o.startIndex = 3;
      compare(clustered, 40, o, (std::string("clustered, ISA ") + isa).c_str());
      o.count = 80;
      compare(constant, 9, o, "constant");
      o.count = 700;
      compare(constant, 9, o, "constant, count = rows");
      o.count = 400;
      compare(outlier, 32, o, "one wide dimension");
      for (size_t dims : {200u, 300u}) {
        o.count = 150;
        compare(uniformData(1500, dims, ++seed), dims, o, "uniform, wide rows");
        compare(clusteredData(1500, dims, ++seed), dims, o, "clustered, wide rows");
      }
      unsetenv("IMIAD_CORESET_ISA");
    }
  }
  {
    // Rows too long for exact int32 code sums (> 65,536 dims): the kernel runs without codes.
    o = imiad::CoresetOptions();
    o.count = 12;
    o.startIndex = 2;
    compare(uniformData(40, 70000, ++seed), 70000, o, "no codes (70,000 dims)");
    o.count = 40;
    compare(clusteredData(40, 70000, ++seed), 70000, o, "no codes (70,000 dims), count = rows");
  }
  if (failures == 0) std::printf("test_coreset: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
