// Filters of anomaly maps and PatchCore's feature operations; see filters.h for the reference each one follows.
// Every output element is computed by one thread in a fixed order, so results never depend on the thread count.
#include "filters.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "parallel.h"

namespace imiad {

namespace {

// numpy's pairwise summation of a float64 array (what `phi_x.sum()` uses), so the kernel's normaliser matches
// scipy's to the last bit.
double numpyPairwiseSum(const double* a, size_t n) {
  if (n < 8) {
    double res = 0.0;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpyPairwiseSum(a, n2) + numpyPairwiseSum(a + n2, n - n2);
}

// scipy.ndimage's 'reflect' extension for any offset, including offsets beyond a whole period.
inline size_t reflectIndex(int64_t i, int64_t n) {
  const int64_t period = 2 * n;
  int64_t k = i % period;
  if (k < 0) k += period;
  if (k >= n) k = period - 1 - k;
  return static_cast<size_t>(k);
}

// torch's start/end indices of an adaptive pooling window.
inline size_t poolStart(size_t i, size_t outSize, size_t inSize) { return (i * inSize) / outSize; }
inline size_t poolEnd(size_t i, size_t outSize, size_t inSize) { return ((i + 1) * inSize + outSize - 1) / outSize; }

void poolRow(const float* in, size_t dims, float* out, size_t targetDims) {
  for (size_t i = 0; i < targetDims; ++i) {
    const size_t s = poolStart(i, targetDims, dims);
    const size_t e = poolEnd(i, targetDims, dims);
    float sum = 0.0f;
    for (size_t k = s; k < e; ++k) sum += in[k];
    out[i] = sum / static_cast<float>(e - s);
  }
}

// torch's source index and weights of one output coordinate (bilinear, align_corners=False, output size given).
struct LinearTap {
  size_t i0, i1;
  float w0, w1;
};

std::vector<LinearTap> linearTaps(size_t inSize, size_t outSize) {
  std::vector<LinearTap> taps(outSize);
  const float scale = static_cast<float>(inSize) / static_cast<float>(outSize);
  for (size_t o = 0; o < outSize; ++o) {
    float src = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    size_t i0 = static_cast<size_t>(std::floor(src));
    if (i0 > inSize - 1) i0 = inSize - 1;
    const size_t i1 = i0 + (i0 < inSize - 1 ? 1 : 0);
    float lambda = src - static_cast<float>(i0);
    lambda = std::min(std::max(lambda, 0.0f), 1.0f);
    taps[o] = LinearTap{i0, i1, 1.0f - lambda, lambda};
  }
  return taps;
}

}  // namespace

std::vector<double> gaussianKernel1d(double sigma, double truncate) {
  const int64_t radius = static_cast<int64_t>(truncate * sigma + 0.5);
  const double sigma2 = sigma * sigma;
  const double factor = -0.5 / sigma2;
  std::vector<double> phi(static_cast<size_t>(2 * radius + 1));
  for (int64_t x = -radius; x <= radius; ++x) phi[static_cast<size_t>(x + radius)] = std::exp(factor * static_cast<double>(x * x));
  const double sum = numpyPairwiseSum(phi.data(), phi.size());
  for (double& v : phi) v = v / sum;
  return phi;
}

void gaussianBlur(const float* maps, float* out, size_t count, size_t height, size_t width, double sigma,
                  double truncate, const RunControl& control) {
  if (!(sigma > 0.0) || !(truncate > 0.0)) throw InvalidArgument("ERR_IMIAD_RANGE", "sigma and truncate must be positive");
  const std::vector<double> kernel = gaussianKernel1d(sigma, truncate);
  const size_t radius = kernel.size() / 2;
  const double* w = kernel.data() + radius;  // w[k] for k in [-radius, radius]; symmetric
  const size_t plane = height * width;
  parallelChunks(count, 1, [&](size_t, size_t begin, size_t end) {
    std::vector<double> acc(width);
    std::vector<float> tmp(plane);
    std::vector<double> line(width + 2 * radius);
    for (size_t m = begin; m < end; ++m) {
      control.throwIfCancelled();
      const float* src = maps + m * plane;
      // Axis 0: scipy's correlate1d with a symmetric kernel sums the centre, then the pairs from the outermost in.
      for (size_t y = 0; y < height; ++y) {
        const float* centre = src + y * width;
        for (size_t x = 0; x < width; ++x) acc[x] = static_cast<double>(centre[x]) * w[0];
        for (size_t k = radius; k >= 1; --k) {
          const float* above = src + reflectIndex(static_cast<int64_t>(y) - static_cast<int64_t>(k), static_cast<int64_t>(height)) * width;
          const float* below = src + reflectIndex(static_cast<int64_t>(y + k), static_cast<int64_t>(height)) * width;
          const double wk = w[k];
          for (size_t x = 0; x < width; ++x) acc[x] += (static_cast<double>(above[x]) + static_cast<double>(below[x])) * wk;
        }
        float* row = tmp.data() + y * width;
        for (size_t x = 0; x < width; ++x) row[x] = static_cast<float>(acc[x]);
      }
      // Axis 1, on the float32 result of axis 0.
      float* dst = out + m * plane;
      for (size_t y = 0; y < height; ++y) {
        const float* row = tmp.data() + y * width;
        for (size_t i = 0; i < line.size(); ++i) {
          line[i] = row[reflectIndex(static_cast<int64_t>(i) - static_cast<int64_t>(radius), static_cast<int64_t>(width))];
        }
        for (size_t x = 0; x < width; ++x) {
          const double* c = line.data() + x + radius;
          double s = c[0] * w[0];
          for (size_t k = radius; k >= 1; --k) s += (c[-static_cast<ptrdiff_t>(k)] + c[k]) * w[k];
          dst[y * width + x] = static_cast<float>(s);
        }
      }
    }
  });
}

void resizeBilinear(const float* maps, float* out, size_t count, size_t height, size_t width, size_t outHeight,
                    size_t outWidth, const RunControl& control) {
  const std::vector<LinearTap> ty = linearTaps(height, outHeight);
  const std::vector<LinearTap> tx = linearTaps(width, outWidth);
  const size_t inPlane = height * width;
  const size_t outPlane = outHeight * outWidth;
  parallelChunks(count, 1, [&](size_t, size_t begin, size_t end) {
    for (size_t m = begin; m < end; ++m) {
      control.throwIfCancelled();
      const float* src = maps + m * inPlane;
      float* dst = out + m * outPlane;
      for (size_t oy = 0; oy < outHeight; ++oy) {
        const LinearTap& a = ty[oy];
        const float* r0 = src + a.i0 * width;
        const float* r1 = src + a.i1 * width;
        for (size_t ox = 0; ox < outWidth; ++ox) {
          const LinearTap& b = tx[ox];
          // torch's order: along the width first, then the height.
          float t0 = r0[b.i0] * b.w0;
          t0 += r0[b.i1] * b.w1;
          float t1 = r1[b.i0] * b.w0;
          t1 += r1[b.i1] * b.w1;
          float v = t0 * a.w0;
          v += t1 * a.w1;
          dst[oy * outWidth + ox] = v;
        }
      }
    }
  });
}

void neighbourhoodAverage(const float* maps, float* out, size_t count, size_t height, size_t width, size_t patchSize,
                          const RunControl& control) {
  const int64_t pad = static_cast<int64_t>((patchSize - 1) / 2);
  const float area = static_cast<float>(patchSize * patchSize);
  const size_t plane = height * width;
  const int64_t h = static_cast<int64_t>(height), wd = static_cast<int64_t>(width);
  parallelChunks(count, 1, [&](size_t, size_t begin, size_t end) {
    for (size_t m = begin; m < end; ++m) {
      control.throwIfCancelled();
      const float* src = maps + m * plane;
      float* dst = out + m * plane;
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < wd; ++x) {
          float sum = 0.0f;
          for (int64_t i = 0; i < static_cast<int64_t>(patchSize); ++i) {
            const int64_t yy = y + i - pad;
            for (int64_t j = 0; j < static_cast<int64_t>(patchSize); ++j) {
              const int64_t xx = x + j - pad;
              sum += (yy >= 0 && yy < h && xx >= 0 && xx < wd) ? src[yy * wd + xx] : 0.0f;
            }
          }
          dst[y * wd + x] = sum / area;
        }
      }
    }
  });
}

void adaptiveAvgPool1d(const float* rows, float* out, size_t rowCount, size_t dims, size_t targetDims,
                       const RunControl& control) {
  parallelChunks(rowCount, 256, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    for (size_t r = begin; r < end; ++r) poolRow(rows + r * dims, dims, out + r * targetDims, targetDims);
  });
}

void patchEmbedding(const std::vector<FeatureLayer>& layers, size_t n, size_t patchSize, size_t pretrainDims,
                    size_t targetDims, float* out, const RunControl& control) {
  if (layers.empty()) throw InvalidArgument("ERR_IMIAD_EMPTY", "patchEmbedding needs at least one layer");
  const size_t p = patchSize;
  const size_t pp = p * p;
  const int64_t pad = static_cast<int64_t>((p - 1) / 2);
  const size_t refH = layers[0].height, refW = layers[0].width;

  // Channels-last copies, so that a patch's channel vector is contiguous.
  std::vector<std::vector<float>> hwc(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const FeatureLayer& L = layers[l];
    const size_t plane = L.height * L.width;
    hwc[l].resize(n * plane * L.channels);
    parallelChunks(n * L.height, 1, [&](size_t, size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        const size_t img = r / L.height, y = r % L.height;
        for (size_t x = 0; x < L.width; ++x) {
          float* dst = hwc[l].data() + ((img * L.height + y) * L.width + x) * L.channels;
          const float* src = L.data + img * L.channels * plane + y * L.width + x;
          for (size_t c = 0; c < L.channels; ++c) dst[c] = src[c * plane];
        }
      }
    });
    control.throwIfCancelled();
  }
  std::vector<std::vector<LinearTap>> tapsY(layers.size()), tapsX(layers.size());
  size_t maxVector = 0;
  size_t maxChannels = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    maxChannels = std::max(maxChannels, layers[l].channels);
    tapsY[l] = linearTaps(layers[l].height, refH);
    tapsX[l] = linearTaps(layers[l].width, refW);
    maxVector = std::max(maxVector, layers[l].channels * pp);
  }

  parallelChunks(n * refH, 1, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    std::vector<float> patch(maxVector);
    std::vector<float> pooled(layers.size() * pretrainDims);
    // Cells outside a map read this zero vector: Unfold's zero padding without a branch in the channel loops.
    const std::vector<float> zeros(maxChannels, 0.0f);
    for (size_t r = begin; r < end; ++r) {
      const size_t img = r / refH, y = r % refH;
      for (size_t x = 0; x < refW; ++x) {
        for (size_t l = 0; l < layers.size(); ++l) {
          const FeatureLayer& L = layers[l];
          const size_t C = L.channels;
          const int64_t h = static_cast<int64_t>(L.height), w = static_cast<int64_t>(L.width);
          const float* base = hwc[l].data() + img * L.height * L.width * C;
          // The unfolded patch element (c, i, j) at cell (a, b) is the map at (a + i - pad, b + j - pad), zero outside.
          auto cell = [&](int64_t a, int64_t b) -> const float* {
            return (a >= 0 && a < h && b >= 0 && b < w) ? base + (a * w + b) * C : zeros.data();
          };
          if (l == 0) {
            for (size_t i = 0; i < p; ++i) {
              for (size_t j = 0; j < p; ++j) {
                const float* v = cell(static_cast<int64_t>(y) + static_cast<int64_t>(i) - pad, static_cast<int64_t>(x) + static_cast<int64_t>(j) - pad);
                float* dst = patch.data() + i * p + j;
                for (size_t c = 0; c < C; ++c) dst[c * pp] = v[c];
              }
            }
          } else {
            // PatchCore resizes the unfolded patches (not the map) to the first layer's grid.
            const LinearTap& ty = tapsY[l][y];
            const LinearTap& tx = tapsX[l][x];
            for (size_t i = 0; i < p; ++i) {
              const int64_t di = static_cast<int64_t>(i) - pad;
              for (size_t j = 0; j < p; ++j) {
                const int64_t dj = static_cast<int64_t>(j) - pad;
                const float* v00 = cell(static_cast<int64_t>(ty.i0) + di, static_cast<int64_t>(tx.i0) + dj);
                const float* v01 = cell(static_cast<int64_t>(ty.i0) + di, static_cast<int64_t>(tx.i1) + dj);
                const float* v10 = cell(static_cast<int64_t>(ty.i1) + di, static_cast<int64_t>(tx.i0) + dj);
                const float* v11 = cell(static_cast<int64_t>(ty.i1) + di, static_cast<int64_t>(tx.i1) + dj);
                float* dst = patch.data() + i * p + j;
                for (size_t c = 0; c < C; ++c) {
                  float t0 = v00[c] * tx.w0;
                  t0 += v01[c] * tx.w1;
                  float t1 = v10[c] * tx.w0;
                  t1 += v11[c] * tx.w1;
                  float value = t0 * ty.w0;
                  value += t1 * ty.w1;
                  dst[c * pp] = value;
                }
              }
            }
          }
          poolRow(patch.data(), C * pp, pooled.data() + l * pretrainDims, pretrainDims);
        }
        poolRow(pooled.data(), pooled.size(), out + ((img * refH + y) * refW + x) * targetDims, targetDims);
      }
    }
  });
}

void gatherChannels(const std::vector<FeatureLayer>& layers, size_t n, const uint32_t* channels, size_t channelCount,
                    float* out, const RunControl& control) {
  if (layers.empty()) throw InvalidArgument("ERR_IMIAD_EMPTY", "gatherChannels needs at least one layer");
  const size_t refH = layers[0].height, refW = layers[0].width;
  // Concatenated channel -> (layer, channel in layer).
  std::vector<size_t> layerStart(layers.size() + 1, 0);
  for (size_t l = 0; l < layers.size(); ++l) layerStart[l + 1] = layerStart[l] + layers[l].channels;
  for (size_t j = 0; j < channelCount; ++j) {
    if (channels[j] >= layerStart.back()) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "channel index " + std::to_string(channels[j]) + " is out of range");
    }
  }
  parallelChunks(n * channelCount, 16, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    std::vector<size_t> sx(refW);
    for (size_t map = begin; map < end; ++map) {
      const size_t img = map / channelCount, j = map % channelCount;
      size_t l = 0;
      while (channels[j] >= layerStart[l + 1]) ++l;
      const FeatureLayer& L = layers[l];
      const size_t c = channels[j] - layerStart[l];
      const float* src = L.data + (img * L.channels + c) * L.height * L.width;
      float* dst = out + map * refH * refW;
      for (size_t x = 0; x < refW; ++x) sx[x] = (x * L.width) / refW;
      for (size_t y = 0; y < refH; ++y) {
        const float* row = src + ((y * L.height) / refH) * L.width;
        for (size_t x = 0; x < refW; ++x) dst[y * refW + x] = row[sx[x]];
      }
    }
  });
}

}  // namespace imiad
