// Connected-component labelling of binary ground-truth masks with 8-connectivity, the definition MVTec AD's
// official evaluation uses for its regions (pro_curve_util.compute_pro: scipy.ndimage.label with a 3x3
// structuring element of ones). Plain C++, no Node.
#pragma once

#include <cstddef>
#include <cstdint>

namespace imiad {

// Labels the 8-connected components of `mask` (row-major, width * height; nonzero = foreground) into `labels`
// (same layout): 0 for background, 1..count for the components, numbered in raster order of each component's
// first pixel (scipy.ndimage.label's numbering). Two raster passes with union-find over provisional labels:
// linear time in the number of pixels. Returns the number of components.
uint32_t labelComponents(const uint8_t* mask, uint32_t width, uint32_t height, uint32_t* labels);

}  // namespace imiad
