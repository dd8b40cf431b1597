// Filters of anomaly maps and PatchCore's feature operations, on NCHW float32 data.
//
// Definitions follow the reference code exactly:
//  - gaussianBlur: scipy.ndimage.gaussian_filter (as PatchCore's RescaleSegmentor calls it on float32 maps): a
//    separable kernel exp(-x^2 / 2 sigma^2), x in [-r, r], r = int(truncate * sigma + 0.5), normalised to sum 1;
//    mode 'reflect' (d c b a | a b c d | d c b a); axis 0 (rows) first, then axis 1, each pass accumulated in
//    double and stored as float32 in between, as scipy does for a float32 array.
//  - resizeBilinear: torch.nn.functional.interpolate(mode='bilinear', align_corners=False), output size given.
//  - neighbourhoodAverage: torch.nn.Unfold(kernel p, padding (p-1)/2) then the mean over the p*p window: zeros
//    outside the map, always divided by p*p.
//  - adaptiveAvgPool1d: torch.nn.functional.adaptive_avg_pool1d on each row: window i = [floor(i L / D),
//    ceil((i + 1) L / D)).
//  - patchEmbedding: PatchCore's _embed (amazon-science/patchcore-inspection): each layer is unfolded into p x p
//    patches (PatchMaker.patchify), the unfolded patches of every layer after the first are bilinearly resized to
//    the first layer's grid, each patch vector (c, i, j) is adaptive-average-pooled to pretrainDims (MeanMapper),
//    and the layers' pooled vectors, concatenated, are pooled to targetDims (Aggregator).
//  - gatherChannels: PaDiM's embedding (xiahaifeng1995/PaDiM-Anomaly-Detection-Localization-master): the layers
//    concatenated along channels at the first layer's grid, coarser layers upsampled by nearest neighbour (the
//    reference's unfold/fold `embedding_concat`: fine cell (y, x) reads coarse cell (floor(y H_l / H_0),
//    floor(x W_l / W_0))), then `index_select` of the given channels of the concatenation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "control.h"

namespace imiad {

// `count` maps of height x width, in place of NCHW's n * c.
void gaussianBlur(const float* maps, float* out, size_t count, size_t height, size_t width, double sigma,
                  double truncate, const RunControl& control);

// The normalised 1-D kernel gaussianBlur uses (length 2r + 1), exposed for tests.
std::vector<double> gaussianKernel1d(double sigma, double truncate);

void resizeBilinear(const float* maps, float* out, size_t count, size_t height, size_t width, size_t outHeight,
                    size_t outWidth, const RunControl& control);

void neighbourhoodAverage(const float* maps, float* out, size_t count, size_t height, size_t width, size_t patchSize,
                          const RunControl& control);

void adaptiveAvgPool1d(const float* rows, float* out, size_t rowCount, size_t dims, size_t targetDims,
                       const RunControl& control);

struct FeatureLayer {
  const float* data;  // [n, channels, height, width]
  size_t channels;
  size_t height;
  size_t width;
};

// Output: [n * layers[0].height * layers[0].width, targetDims], rows in (image, y, x) order.
void patchEmbedding(const std::vector<FeatureLayer>& layers, size_t n, size_t patchSize, size_t pretrainDims,
                    size_t targetDims, float* out, const RunControl& control);

// Output: [n, channelCount, layers[0].height, layers[0].width]; channels index the layers' concatenated channels.
void gatherChannels(const std::vector<FeatureLayer>& layers, size_t n, const uint32_t* channels, size_t channelCount,
                    float* out, const RunControl& control);

}  // namespace imiad
