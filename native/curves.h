// Threshold curves of anomaly scores and the areas under them, exactly as the official evaluation code of the
// datasets defines them:
//  - ROC and precision-recall with tied scores merged; AUROC by the trapezoid rule and AP = sum (R_n - R_{n-1}) P_n
//    (scikit-learn's roc_auc_score / average_precision_score); F1-max over the same thresholds.
//  - AU-PRO: MVTec AD's pro_curve_util.compute_pro + generic_util.trapezoid: sort all pixels of all images by score
//    (descending), FPR over all normal pixels, PRO = mean over all 8-connected ground-truth regions of the covered
//    fraction, ties merged, (0,0) and (1,1) added, values clipped at 1, trapezoid up to the limit with linear
//    interpolation at the limit, divided by the limit.
//  - AU-sPRO: MVTec LOCO AD's mvtec_loco_ad_evaluation (metrics.py, image.py, util.trapz): one channel per ground
//    truth PNG, sPRO = mean over channels of min(TP / saturation area, 1) at `score > t`, FPR over the pixels outside
//    the union of the channels; the official tool samples thresholds and refines them, this code sweeps every
//    distinct score, so its curve is the exact one the official tool approximates.
// Plain C++, no Node.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "control.h"

namespace imiad {

// Maps a float score to an unsigned key with the same order (ascending); -0 and +0 map to the same key, since the
// official code treats them as one threshold (np.diff(scores) != 0). NaN must be rejected before.
inline uint32_t scoreKey(float score) {
  uint32_t u;
  std::memcpy(&u, &score, sizeof u);
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// generic_util.trapezoid / util.trapz of the official code: area under the piecewise-linear curve through
// (x[i], y[i]) (x ascending, repeats allowed), up to xMax with y linearly interpolated at xMax when xMax is not one
// of the x values. Non-finite points are dropped, as there. Pass a NaN xMax for the whole curve. Throws
// InvalidArgument when xMax lies outside the curve's x range.
double trapezoid(const std::vector<double>& x, const std::vector<double>& y, double xMax);

struct BinaryMetrics {
  double auroc = 0;   // NaN when only one class is present
  double ap = 0;      // NaN without positives
  double f1Max = 0;   // NaN without positives
  uint64_t positives = 0;
  uint64_t negatives = 0;
  uint64_t thresholds = 0;  // distinct scores
};

// Image-level (or any small) binary classification metrics over double scores; labels nonzero = anomalous.
BinaryMetrics binaryMetrics(const double* scores, const uint8_t* labels, size_t n);

struct PixelMetrics {
  BinaryMetrics binary;             // pixel AUROC / AP / F1-max (positives: anomalous pixels)
  std::vector<double> areaUnderPro;  // AU-PRO or AU-sPRO per limit, normalised by the limit; NaN without regions
  uint64_t units = 0;               // ground-truth regions (PRO) or channels (sPRO)
};

// One pixel of the accumulated test set: its score key and its class. cls 0: normal pixel (counted in the FPR);
// 1 .. 0x7fffffff: anomalous pixel whose PRO/sPRO weight is 1/cls (cls = region area or channel saturation area);
// kComboFlag | k: anomalous pixel with weight combos[k] (pixels saturating several channels; k = 0 means weight 0).
struct PixelRecord {
  uint32_t key;
  uint32_t cls;
};

// An allocator that leaves trivially-constructible elements uninitialised on resize: the records are always written
// right after, and zero-filling hundreds of megabytes first would cost a full extra pass.
template <typename T>
struct UninitialisedAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitialisedAllocator<U>;
  };
  UninitialisedAllocator() = default;
  template <typename U>
  UninitialisedAllocator(const UninitialisedAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using PixelRecords = std::vector<PixelRecord, UninitialisedAllocator<PixelRecord>>;

// Collects the scored pixels of many images (8 bytes per pixel) and computes all pixel-level metrics from one
// in-place radix partition by the top 16 key bits followed by an exact per-bucket sweep. Not thread-safe: calls must
// not overlap (the glue serialises them).
class PixelAccumulator {
 public:
  static constexpr uint32_t kComboFlag = 0x80000000u;

  struct BinaryImage {
    const float* scores = nullptr;
    const uint8_t* mask = nullptr;  // nonzero = anomalous; nullptr = all normal
    uint32_t width = 0, height = 0;
  };
  struct ChannelImage {
    const float* scores = nullptr;
    std::vector<const uint8_t*> channels;  // one binary mask per ground-truth PNG (nonzero = defect)
    std::vector<uint64_t> saturation;      // saturation area per channel, 1 <= s <= channel area
    uint32_t width = 0, height = 0;
  };

  PixelAccumulator();

  // Adds images with binary masks; with `regions`, their 8-connected components become PRO regions.
  void addBinary(const std::vector<BinaryImage>& images, bool regions, const RunControl& control);
  // Adds MVTec LOCO AD images with one channel per defect (sPRO).
  void addChannels(const std::vector<ChannelImage>& images, const RunControl& control);
  // Computes the metrics; `limits` are the FPR integration limits in (0, 1]. May be called again after more adds.
  PixelMetrics compute(const std::vector<double>& limits, const RunControl& control);

  uint64_t pixels() const { return records_.size(); }
  void reserve(uint64_t pixels) { records_.reserve(pixels); }

 private:
  PixelRecords records_;
  std::vector<double> combos_;
  uint64_t units_ = 0;
};

}  // namespace imiad
