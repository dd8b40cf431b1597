// GPU-vs-CPU correctness check of the CUDA kernels, without Node: random and adversarial inputs (ties from
// duplicate integer rows, a large common offset that makes the norm expansion cancel, dims not a multiple of 4,
// banks smaller than the candidate list, k up to 1024), each compared with a plain CPU reference of the same
// definition (exact squared distances in double, ties to the smaller row). Exit status 0 when all agree, 1 on a
// mismatch; on a machine without a usable GPU it prints why and exits 0 having checked nothing.
// Run: build-cuda/tests/imiad_cuda_check (after npm run build:cuda).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "coreset_cuda.h"
#include "cuda_device.h"
#include "knn_cuda.h"

namespace {

using imiad::RunControl;

int failures = 0;

double exactSquared(const float* a, const float* b, size_t dims) {
  double s = 0;
  for (size_t d = 0; d < dims; ++d) {
    const double diff = static_cast<double>(a[d]) - static_cast<double>(b[d]);
    s += diff * diff;
  }
  return s;
}

std::vector<float> randomMatrix(size_t rows, size_t dims, unsigned seed, float offset, bool integers) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> small(-2, 2);
  std::vector<float> m(rows * dims);
  for (float& v : m) v = offset + (integers ? static_cast<float>(small(rng)) : normal(rng));
  return m;
}

void checkKnn(const char* name, const std::vector<float>& bank, const std::vector<float>& queries, size_t dims,
              size_t k) {
  const size_t rows = bank.size() / dims, nq = queries.size() / dims;
  imiad::cuda::KnnBank index(rows, dims);
  std::vector<int32_t> indices(nq * k);
  std::vector<float> distances(nq * k);
  RunControl control;
  index.search(bank.data(), queries.data(), nq, k, indices.data(), distances.data(), control);
  size_t bad = 0;
  std::vector<std::pair<double, int32_t>> all(rows);
  for (size_t q = 0; q < nq; ++q) {
    for (size_t r = 0; r < rows; ++r) all[r] = {exactSquared(&queries[q * dims], &bank[r * dims], dims), int32_t(r)};
    std::partial_sort(all.begin(), all.begin() + k, all.end());
    for (size_t i = 0; i < k; ++i) {
      const int32_t got = indices[q * k + i];
      const float want = static_cast<float>(std::sqrt(all[i].first));
      // The reference and the GPU sum the same exact terms in different orders (double): a different index is
      // accepted only where the two rows' exact distances agree to that rounding.
      const bool sameIndex = got == all[i].second;
      const bool equivalent =
          got >= 0 && size_t(got) < rows &&
          std::fabs(exactSquared(&queries[q * dims], &bank[size_t(got) * dims], dims) - all[i].first) <=
              1e-12 * std::max(1.0, all[i].first);
      const bool distanceOk = std::fabs(distances[q * k + i] - want) <= 1e-6f * std::max(1.f, want);
      if ((!sameIndex && !equivalent) || !distanceOk) {
        if (bad < 5) {
          std::printf("  %s: query %zu rank %zu: got row %d (%.9g), want row %d (%.9g)\n", name, q, i, got,
                      distances[q * k + i], all[i].second, want);
        }
        ++bad;
      }
    }
  }
  std::printf("%s k-NN %-40s %zu x %zu bank, %zu queries, k=%zu\n", bad ? "FAIL" : "ok  ", name, rows, dims, nq, k);
  if (bad) ++failures;
}

std::vector<uint32_t> referenceCoreset(const std::vector<float>& x, size_t dims, size_t count, size_t start) {
  const size_t rows = x.size() / dims;
  std::vector<double> minDist(rows, INFINITY);
  std::vector<bool> taken(rows, false);
  std::vector<uint32_t> out{static_cast<uint32_t>(start)};
  taken[start] = true;
  for (size_t it = 1; it < count; ++it) {
    const float* c = &x[size_t(out.back()) * dims];
    double best = -1;
    size_t bestRow = 0;
    for (size_t r = 0; r < rows; ++r) {
      if (taken[r]) continue;
      minDist[r] = std::min(minDist[r], exactSquared(&x[r * dims], c, dims));
      if (minDist[r] > best) {
        best = minDist[r];
        bestRow = r;
      }
    }
    taken[bestRow] = true;
    out.push_back(static_cast<uint32_t>(bestRow));
  }
  return out;
}

void checkCoreset(const char* name, const std::vector<float>& x, size_t dims, size_t count, size_t start) {
  std::vector<uint32_t> got(count);
  RunControl control;
  imiad::cuda::greedyCoresetCuda(x.data(), x.size() / dims, dims, count, start, got.data(), control);
  const std::vector<uint32_t> want = referenceCoreset(x, dims, count, start);
  size_t firstDiff = count;
  for (size_t i = 0; i < count && firstDiff == count; ++i)
    if (got[i] != want[i]) firstDiff = i;
  std::printf("%s coreset %-38s %zu x %zu, count=%zu\n", firstDiff == count ? "ok  " : "FAIL", name, x.size() / dims,
              dims, count);
  if (firstDiff != count) {
    std::printf("  first difference at step %zu: got row %u, want row %u\n", firstDiff, got[firstDiff],
                want[firstDiff]);
    ++failures;
  }
}

}  // namespace

int main() {
  const imiad::cuda::DeviceInfo info = imiad::cuda::deviceInfo();
  if (!info.available) {
    std::printf("no usable CUDA device (%s): nothing checked\n", info.reason.c_str());
    return 0;
  }
  std::printf("device: %s (compute %d.%d, %d SMs)\n", info.name.c_str(), info.computeMajor, info.computeMinor,
              info.multiprocessors);
  try {
    {
      const auto bank = randomMatrix(20000, 1024, 1, 0.f, false), queries = randomMatrix(300, 1024, 2, 0.f, false);
      for (size_t k : {1, 9, 100, 1024}) checkKnn("gaussian, dims 1024", bank, queries, 1024, k);
    }
    {
      const auto bank = randomMatrix(5000, 37, 3, 0.f, true), queries = randomMatrix(200, 37, 4, 0.f, true);
      for (size_t k : {1, 5, 64}) checkKnn("integer ties, dims 37", bank, queries, 37, k);
    }
    {
      const auto bank = randomMatrix(40000, 64, 5, 300.f, false), queries = randomMatrix(100, 64, 6, 300.f, false);
      for (size_t k : {1, 9}) checkKnn("offset 300 (cancellation), dims 64", bank, queries, 64, k);
    }
    {
      const auto bank = randomMatrix(10, 16, 7, 0.f, false), queries = randomMatrix(33, 16, 8, 0.f, false);
      for (size_t k : {1, 10}) checkKnn("bank of 10 rows", bank, queries, 16, k);
    }
    {
      const auto bank = randomMatrix(70000, 128, 9, 0.f, false), queries = randomMatrix(1000, 128, 10, 0.f, false);
      checkKnn("two bank chunks, dims 128", bank, queries, 128, 9);
    }
    checkCoreset("gaussian", randomMatrix(5000, 128, 11, 0.f, false), 128, 500, 7);
    checkCoreset("integer ties, dims 5", randomMatrix(3000, 5, 12, 0.f, true), 5, 400, 0);
    checkCoreset("more than the distinct rows", randomMatrix(200, 1, 13, 0.f, true), 1, 50, 3);
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf(failures ? "%d check(s) FAILED\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
