// PaDiM's statistics (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
// Localization", ICPR 2021; after the widely used reference implementation xiahaifeng1995/PaDiM-Anomaly-Detection-
// Localization-master): one multivariate Gaussian per feature-map position over the N training embeddings
// [N, C, P] (P = H * W): mean, covariance np.cov(rowvar=False) (divisor N - 1) + eps * I, and the Mahalanobis
// distance sqrt((x - mu)^T Sigma^-1 (x - mu)) of test embeddings.
//
// The inverse covariance is kept as its Cholesky factor L (Sigma = L L^T, computed in double precision): then
// (x - mu)^T Sigma^-1 (x - mu) = |L^-1 (x - mu)|^2, one forward substitution, with the numerical stability of
// Cholesky and half the memory of a full inverse (L is stored packed lower-triangular, row-major, as float32).
#pragma once

#include <cstddef>

#include "control.h"

namespace imiad {

// Elements of one packed lower-triangular C x C factor.
inline size_t packedTriangleSize(size_t channels) { return channels * (channels + 1) / 2; }

// embeddings: [n, channels, positions]. Writes mean [positions, channels] and cholesky
// [positions, packedTriangleSize(channels)] (row i of L holds i + 1 values). n = 1 uses divisor 1 (the
// covariance is then regularization * I), where np.cov would divide by zero.
void gaussianFit(const float* embeddings, size_t n, size_t channels, size_t positions, double regularization,
                 float* mean, float* cholesky, const RunControl& control);

// Running statistics (the continual setting's `statistics` mode): per position the image count, the mean
// [positions, channels] and the centred scatter sum (x - mu)(x - mu)^T [positions, packedTriangleSize(channels)],
// all in double. gaussianAccumulate adds n embeddings [n, channels, positions] to statistics over `count` earlier
// images, in place, by the pairwise update of Chan, Golub and LeVeque ("Updating formulae and a pairwise algorithm
// for computing sample variances", 1979): the new images' own two-pass mean and scatter, then
// mu = mu_a + d n_b / n, S = S_a + S_b + d d^T n_a n_b / n with d = mu_b - mu_a. It equals the two-pass statistics
// of all images at once up to rounding (no catastrophic cancellation, unlike sums of x and x x^T); with count = 0
// it is exactly what gaussianFit computes internally. A cancelled call leaves some positions updated: the caller
// must discard the statistics.
void gaussianAccumulate(const float* embeddings, size_t n, size_t channels, size_t positions, size_t count,
                        double* mean, double* scatter, const RunControl& control);

// The Gaussians of running statistics over `count` images, exactly as gaussianFit forms them: covariance =
// scatter / (count - 1) (divisor 1 when count = 1) + regularization * I, Cholesky in double, stored float32.
void gaussianFactor(size_t count, const double* mean, const double* scatter, size_t channels, size_t positions,
                    double regularization, float* meanOut, float* cholesky, const RunControl& control);

// embeddings: [m, channels, positions]; out: [m, positions] Mahalanobis distances (not squared).
void mahalanobisDistances(const float* embeddings, size_t m, size_t channels, size_t positions, const float* mean,
                          const float* cholesky, float* out, const RunControl& control);

}  // namespace imiad
