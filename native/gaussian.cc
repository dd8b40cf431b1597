// PaDiM's per-position Gaussians; see gaussian.h. Positions are processed in fixed blocks (gathered from the
// [N, C, P] layout in cache-line-sized runs), each block by one thread, with every sum in a fixed order: results are
// independent of the thread count.
#include "gaussian.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "parallel.h"

namespace imiad {

namespace {

// Positions gathered together: 8 floats = 32 contiguous bytes of each embedding row per read.
constexpr size_t kPositionBlock = 8;

// The hot loops, compiled for AVX2 and for baseline x86-64 and picked at load time (GCC function multiversioning).
// No FMA is enabled, and each of the four accumulators below is one lane of the same sum on either path, so both
// clones give bit-identical results.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define IMIAD_GAUSSIAN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define IMIAD_GAUSSIAN_CLONES
#endif

// Dot products with eight independent accumulators (two AVX2 registers' worth), combined in a fixed order.
IMIAD_GAUSSIAN_CLONES
double dotDouble(const double* a, const double* b, size_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (size_t j = 0; j < 8; ++j) s[j] += a[k + j] * b[k + j];
  }
  for (; k < n; ++k) s[0] += a[k] * b[k];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

IMIAD_GAUSSIAN_CLONES
double dotFloatDouble(const float* a, const double* b, size_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (size_t j = 0; j < 8; ++j) s[j] += static_cast<double>(a[k + j]) * b[k + j];
  }
  for (; k < n; ++k) s[0] += static_cast<double>(a[k]) * b[k];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// Gathers embeddings[:, :, p0:p0+block] into out[q][i][c] (double).
void gather(const float* embeddings, size_t count, size_t channels, size_t positions, size_t p0, size_t block,
            std::vector<double>& out) {
  out.resize(block * count * channels);
  for (size_t i = 0; i < count; ++i) {
    for (size_t c = 0; c < channels; ++c) {
      const float* src = embeddings + (i * channels + c) * positions + p0;
      for (size_t q = 0; q < block; ++q) out[(q * count + i) * channels + c] = src[q];
    }
  }
}

// The progress callback is not required to be thread-safe: calls are serialised.
void reportBlock(const RunControl& control, std::atomic<size_t>& done, size_t blocks, std::mutex& m) {
  if (!control.progress) return;
  std::lock_guard<std::mutex> lock(m);
  control.report(done.fetch_add(1) + 1, blocks);
}

}  // namespace

void gaussianFit(const float* embeddings, size_t n, size_t channels, size_t positions, double regularization,
                 float* mean, float* cholesky, const RunControl& control) {
  if (n == 0 || channels == 0 || positions == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "gaussianFit needs data");
  const size_t C = channels;
  const size_t tri = packedTriangleSize(C);
  const double divisor = n > 1 ? static_cast<double>(n - 1) : 1.0;
  const size_t blocks = (positions + kPositionBlock - 1) / kPositionBlock;
  std::atomic<size_t> done{0};
  std::mutex progressMutex;
  parallelChunks(positions, kPositionBlock, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    std::vector<double> x;
    gather(embeddings, n, C, positions, begin, end - begin, x);
    std::vector<double> a(C * C);
    std::vector<double> xt(C * n);
    std::vector<double> mu(C);
    for (size_t q = 0; q < end - begin; ++q) {
      const size_t p = begin + q;
      double* xs = x.data() + q * n * C;
      for (size_t c = 0; c < C; ++c) mu[c] = 0.0;
      for (size_t i = 0; i < n; ++i) {
        for (size_t c = 0; c < C; ++c) mu[c] += xs[i * C + c];
      }
      for (size_t c = 0; c < C; ++c) {
        mu[c] /= static_cast<double>(n);
        mean[p * C + c] = static_cast<float>(mu[c]);
      }
      for (size_t i = 0; i < n; ++i) {
        for (size_t c = 0; c < C; ++c) xs[i * C + c] -= mu[c];
      }
      // Covariance entries as dot products of centred channel columns (each n long, cache-resident).
      for (size_t i = 0; i < n; ++i) {
        for (size_t c = 0; c < C; ++c) xt[c * n + i] = xs[i * C + c];
      }
      for (size_t r = 0; r < C; ++r) {
        double* row = a.data() + r * C;
        const double* xr = xt.data() + r * n;
        for (size_t c = 0; c <= r; ++c) row[c] = dotDouble(xr, xt.data() + c * n, n) / divisor;
        row[r] += regularization;
      }
      // Cholesky-Banachiewicz, row by row, in place in the lower triangle.
      for (size_t r = 0; r < C; ++r) {
        double* lr = a.data() + r * C;
        for (size_t c = 0; c <= r; ++c) {
          const double* lc = a.data() + c * C;
          const double s = lr[c] - dotDouble(lr, lc, c);
          if (c == r) {
            if (!(s > 0.0) || !std::isfinite(s)) {
              throw InvalidArgument("ERR_IMIAD_NOT_FINITE", "The covariance at position " + std::to_string(p) +
                                                                " is not positive definite (non-finite embeddings?)");
            }
            lr[r] = std::sqrt(s);
          } else {
            lr[c] = s / lc[c];
          }
        }
        float* packed = cholesky + p * tri + r * (r + 1) / 2;
        for (size_t c = 0; c <= r; ++c) packed[c] = static_cast<float>(lr[c]);
      }
    }
    reportBlock(control, done, blocks, progressMutex);
  });
}

void mahalanobisDistances(const float* embeddings, size_t m, size_t channels, size_t positions, const float* mean,
                          const float* cholesky, float* out, const RunControl& control) {
  const size_t C = channels;
  const size_t tri = packedTriangleSize(C);
  const size_t blocks = (positions + kPositionBlock - 1) / kPositionBlock;
  std::atomic<size_t> done{0};
  std::mutex progressMutex;
  parallelChunks(positions, kPositionBlock, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    std::vector<double> v;
    gather(embeddings, m, C, positions, begin, end - begin, v);
    for (size_t q = 0; q < end - begin; ++q) {
      const size_t p = begin + q;
      double* vs = v.data() + q * m * C;
      const float* mu = mean + p * C;
      for (size_t t = 0; t < m; ++t) {
        for (size_t c = 0; c < C; ++c) vs[t * C + c] -= mu[c];
      }
      // Forward substitution L z = v for every image at once, so each row of L is read once per block.
      const float* l = cholesky + p * tri;
      for (size_t r = 0; r < C; ++r) {
        const float* lr = l + r * (r + 1) / 2;
        const double diag = lr[r];
        for (size_t t = 0; t < m; ++t) {
          double* z = vs + t * C;  // z overwrites v in place: entries < r are already solved
          z[r] = (z[r] - dotFloatDouble(lr, z, r)) / diag;
        }
      }
      for (size_t t = 0; t < m; ++t) {
        const double* z = vs + t * C;
        out[t * positions + p] = static_cast<float>(std::sqrt(dotDouble(z, z, C)));
      }
    }
    reportBlock(control, done, blocks, progressMutex);
  });
}

}  // namespace imiad
