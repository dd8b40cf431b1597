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

// One position's n embeddings xs [n, C] (centred in place): the mean into mu, and the centred scatter's lower
// triangle sum_i (x_i - mu)(x_i - mu)^T into rows r of the row-major C x C matrix a (entries c <= r).
void positionMoments(double* xs, size_t n, size_t C, double* mu, std::vector<double>& xt, double* a) {
  for (size_t c = 0; c < C; ++c) mu[c] = 0.0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t c = 0; c < C; ++c) mu[c] += xs[i * C + c];
  }
  for (size_t c = 0; c < C; ++c) mu[c] /= static_cast<double>(n);
  for (size_t i = 0; i < n; ++i) {
    for (size_t c = 0; c < C; ++c) xs[i * C + c] -= mu[c];
  }
  // Scatter entries as dot products of centred channel columns (each n long, cache-resident).
  xt.resize(C * n);
  for (size_t i = 0; i < n; ++i) {
    for (size_t c = 0; c < C; ++c) xt[c * n + i] = xs[i * C + c];
  }
  for (size_t r = 0; r < C; ++r) {
    double* row = a + r * C;
    const double* xr = xt.data() + r * n;
    for (size_t c = 0; c <= r; ++c) row[c] = dotDouble(xr, xt.data() + c * n, n);
  }
}

// Covariance = scatter / divisor + regularization * I from the scatter's lower triangle in a (C x C, overwritten),
// then its Cholesky factor, packed into `packed` as float32.
void factorPosition(double* a, size_t C, double divisor, double regularization, size_t p, float* packed) {
  for (size_t r = 0; r < C; ++r) {
    double* row = a + r * C;
    for (size_t c = 0; c <= r; ++c) row[c] /= divisor;
    row[r] += regularization;
  }
  // Cholesky-Banachiewicz, row by row, in place in the lower triangle.
  for (size_t r = 0; r < C; ++r) {
    double* lr = a + r * C;
    for (size_t c = 0; c <= r; ++c) {
      const double* lc = a + c * C;
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
    float* out = packed + r * (r + 1) / 2;
    for (size_t c = 0; c <= r; ++c) out[c] = static_cast<float>(lr[c]);
  }
}

// n images' divisor of the sample covariance (np.cov: n - 1; a single image: 1).
double covarianceDivisor(size_t n) { return n > 1 ? static_cast<double>(n - 1) : 1.0; }

// Runs body(begin, end) over blocks of positions on the thread team, checking cancellation and reporting progress
// once per block.
template <typename Body>
void forEachPositionBlock(size_t positions, const RunControl& control, Body body) {
  const size_t blocks = (positions + kPositionBlock - 1) / kPositionBlock;
  std::atomic<size_t> done{0};
  std::mutex progressMutex;
  parallelChunks(positions, kPositionBlock, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    body(begin, end);
    reportBlock(control, done, blocks, progressMutex);
  });
}

// Calls perPosition(p, mu, a) for every position p with the mean mu of its n embeddings and the lower triangle of
// their centred scatter in the row-major C x C matrix a (positionMoments); a may be overwritten.
template <typename PerPosition>
void forEachPositionMoments(const float* embeddings, size_t n, size_t C, size_t positions, const RunControl& control,
                            PerPosition perPosition) {
  forEachPositionBlock(positions, control, [&](size_t begin, size_t end) {
    std::vector<double> x;
    gather(embeddings, n, C, positions, begin, end - begin, x);
    std::vector<double> a(C * C);
    std::vector<double> xt;
    std::vector<double> mu(C);
    for (size_t q = 0; q < end - begin; ++q) {
      positionMoments(x.data() + q * n * C, n, C, mu.data(), xt, a.data());
      perPosition(begin + q, mu.data(), a.data());
    }
  });
}

}  // namespace

void gaussianFit(const float* embeddings, size_t n, size_t channels, size_t positions, double regularization,
                 float* mean, float* cholesky, const RunControl& control) {
  if (n == 0 || channels == 0 || positions == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "gaussianFit needs data");
  const size_t C = channels;
  const size_t tri = packedTriangleSize(C);
  const double divisor = covarianceDivisor(n);
  forEachPositionMoments(embeddings, n, C, positions, control, [&](size_t p, const double* mu, double* a) {
    for (size_t c = 0; c < C; ++c) mean[p * C + c] = static_cast<float>(mu[c]);
    factorPosition(a, C, divisor, regularization, p, cholesky + p * tri);
  });
}

void gaussianAccumulate(const float* embeddings, size_t n, size_t channels, size_t positions, size_t count,
                        double* mean, double* scatter, const RunControl& control) {
  if (n == 0 || channels == 0 || positions == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "gaussianAccumulate needs data");
  const size_t C = channels;
  const size_t tri = packedTriangleSize(C);
  const double na = static_cast<double>(count), nb = static_cast<double>(n), total = na + nb;
  // count = 0: weight 0 and ratio 1 exactly, so the statistics become the new images' own, bit for bit.
  const double weight = na * nb / total, ratio = nb / total;
  forEachPositionMoments(embeddings, n, C, positions, control, [&](size_t p, const double* mu, const double* a) {
    double* m = mean + p * C;  // still the earlier images' mean until the last loop: d = mu - m below
    double* s = scatter + p * tri;
    for (size_t r = 0; r < C; ++r) {
      const double* row = a + r * C;
      double* out = s + r * (r + 1) / 2;
      const double dr = mu[r] - m[r];
      for (size_t c = 0; c <= r; ++c) out[c] += row[c] + dr * (mu[c] - m[c]) * weight;
    }
    for (size_t c = 0; c < C; ++c) m[c] += (mu[c] - m[c]) * ratio;
  });
}

void gaussianFactor(size_t count, const double* mean, const double* scatter, size_t channels, size_t positions,
                    double regularization, float* meanOut, float* cholesky, const RunControl& control) {
  if (count == 0 || channels == 0 || positions == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "gaussianFactor needs statistics of at least one image");
  const size_t C = channels;
  const size_t tri = packedTriangleSize(C);
  const double divisor = covarianceDivisor(count);
  forEachPositionBlock(positions, control, [&](size_t begin, size_t end) {
    std::vector<double> a(C * C);
    for (size_t p = begin; p < end; ++p) {
      for (size_t c = 0; c < C; ++c) meanOut[p * C + c] = static_cast<float>(mean[p * C + c]);
      const double* s = scatter + p * tri;
      for (size_t r = 0; r < C; ++r) {
        for (size_t c = 0; c <= r; ++c) a[r * C + c] = s[r * (r + 1) / 2 + c];
      }
      factorPosition(a.data(), C, divisor, regularization, p, cholesky + p * tri);
    }
  });
}

void mahalanobisDistances(const float* embeddings, size_t m, size_t channels, size_t positions, const float* mean,
                          const float* cholesky, float* out, const RunControl& control) {
  const size_t C = channels;
  const size_t tri = packedTriangleSize(C);
  forEachPositionBlock(positions, control, [&](size_t begin, size_t end) {
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
  });
}

}  // namespace imiad
