// GPU-vs-CPU correctness check of the CUDA kernels, without Node: random and adversarial inputs (ties from
// duplicate integer rows, a large common offset that makes the norm expansion cancel, dims not a multiple of 4,
// banks smaller than the candidate list, k up to 1024), each compared with the CPU kernels themselves
// (native/knn.h's knnSearchPlain, native/coreset.h's greedyCoreset): indices and distances must be identical, bit
// for bit, and so must the coreset selections. Exit status 0 when all agree, 1 on a mismatch; on a machine without a usable GPU it prints why and exits 0 having checked nothing.
// Run: build-cuda/tests/imiad_cuda_check (after npm run build:cuda).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "coreset.h"
#include "coreset_cuda.h"
#include "cuda_device.h"
#include "knn.h"
#include "knn_cuda.h"

namespace {

using imiad::RunControl;

int failures = 0;

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
  std::vector<int32_t> cpuIndices(nq * k);
  std::vector<float> cpuDistances(nq * k);
  imiad::knnSearchPlain(bank.data(), rows, queries.data(), nq, dims, k, cpuIndices.data(), cpuDistances.data(),
                        control);
  size_t bad = 0;
  for (size_t i = 0; i < nq * k; ++i) {
    if (indices[i] != cpuIndices[i] || distances[i] != cpuDistances[i]) {
      if (bad < 5) {
        std::printf("  %s: query %zu rank %zu: GPU row %d (%.9g), CPU row %d (%.9g)\n", name, i / k, i % k,
                    indices[i], distances[i], cpuIndices[i], cpuDistances[i]);
      }
      ++bad;
    }
  }
  std::printf("%s k-NN %-40s %zu x %zu bank, %zu queries, k=%zu\n", bad ? "FAIL" : "ok  ", name, rows, dims, nq, k);
  if (bad) ++failures;
}

void checkCoreset(const char* name, const std::vector<float>& x, size_t dims, size_t count, size_t start) {
  std::vector<uint32_t> got(count);
  RunControl control;
  imiad::cuda::greedyCoresetCuda(x.data(), x.size() / dims, dims, count, start, got.data(), control);
  imiad::CoresetOptions options;
  options.count = count;
  options.startIndex = start;
  const std::vector<uint32_t> want = imiad::greedyCoreset(x.data(), x.size() / dims, dims, options, control);
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
  // IMIAD_CUDA_CHECK_SMALL (test/cuda/emulate.sh): shapes an emulation on the CPU runs in seconds, still covering
  // both distance-tile variants, several bank chunks, the exact fallback, k up to 1024 and the tie rules.
  const bool small = std::getenv("IMIAD_CUDA_CHECK_SMALL") != nullptr;
  try {
    {
      const size_t rows = small ? 3000 : 20000, dims = small ? 64 : 1024, nq = small ? 20 : 300;
      const auto bank = randomMatrix(rows, dims, 1, 0.f, false), queries = randomMatrix(nq, dims, 2, 0.f, false);
      for (size_t k : {1, 9, 100, 1024}) checkKnn("gaussian", bank, queries, dims, k);
    }
    {
      const size_t rows = small ? 1500 : 5000, nq = small ? 20 : 200;
      const auto bank = randomMatrix(rows, 37, 3, 0.f, true), queries = randomMatrix(nq, 37, 4, 0.f, true);
      for (size_t k : {1, 5, 64}) checkKnn("integer ties, dims 37", bank, queries, 37, k);
    }
    {
      const size_t rows = small ? 5000 : 40000, nq = small ? 10 : 100;
      const auto bank = randomMatrix(rows, 64, 5, 300.f, false), queries = randomMatrix(nq, 64, 6, 300.f, false);
      for (size_t k : {1, 9}) checkKnn("offset 300 (cancellation), dims 64", bank, queries, 64, k);
    }
    {
      const auto bank = randomMatrix(10, 16, 7, 0.f, false), queries = randomMatrix(33, 16, 8, 0.f, false);
      for (size_t k : {1, 10}) checkKnn("bank of 10 rows", bank, queries, 16, k);
    }
    {
      const size_t dims = small ? 4 : 128, nq = small ? 12 : 1000;
      const auto bank = randomMatrix(70000, dims, 9, 0.f, false), queries = randomMatrix(nq, dims, 10, 0.f, false);
      checkKnn("three bank chunks", bank, queries, dims, 9);
    }
    checkCoreset("gaussian", randomMatrix(small ? 1000 : 5000, small ? 40 : 128, 11, 0.f, false), small ? 40 : 128,
                 small ? 60 : 500, 7);
    checkCoreset("integer ties, dims 5", randomMatrix(small ? 600 : 3000, 5, 12, 0.f, true), 5, small ? 80 : 400, 0);
    checkCoreset("more than the distinct rows", randomMatrix(200, 1, 13, 0.f, true), 1, small ? 20 : 50, 3);
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf(failures ? "%d check(s) FAILED\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
