// libFuzzer target for the labelling and curve kernels: decodes an arbitrary byte string into a few small images
// (mask bits, tied scores, sometimes extreme float values) and checks labelComponents against flood fill and the
// accumulator's AUROC / AP / AU-PRO against the threshold-by-threshold reference. Any mismatch aborts.
// Build and run: scripts/fuzz-metrics.sh.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "components.h"
#include "curves.h"
#include "../native/metrics_reference.h"

namespace {

struct Reader {
  const uint8_t* data;
  size_t size;
  size_t at = 0;
  uint8_t byte() { return at < size ? data[at++] : 0; }
};

bool close(double a, double b) { return (std::isnan(a) && std::isnan(b)) || std::fabs(a - b) <= 1e-9; }

void fail(const char* what, double got, double want) {
  std::fprintf(stderr, "fuzz_metrics: %s: got %.17g, want %.17g\n", what, got, want);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in{data, size};
  const int images = 1 + in.byte() % 3;
  const bool regions = in.byte() % 4 != 0;
  std::vector<std::vector<float>> maps(images);
  std::vector<std::vector<uint8_t>> masks(images);
  std::vector<imiad::PixelAccumulator::BinaryImage> batch;
  std::vector<float> all;
  std::vector<uint8_t> normal;
  std::vector<double> weight;
  double units = 0;
  for (int i = 0; i < images; ++i) {
    const uint32_t w = 1 + in.byte() % 24, h = 1 + in.byte() % 24;
    const size_t n = static_cast<size_t>(w) * h;
    maps[i].resize(n);
    masks[i].resize(n);
    for (size_t p = 0; p < n; ++p) {
      const uint8_t b = in.byte();
      masks[i][p] = (b & 0x80) ? 1 : 0;
      switch (b & 0x60) {
        case 0x00: maps[i][p] = static_cast<float>(b & 0x0f); break;  // heavy ties
        case 0x20: maps[i][p] = -static_cast<float>(b & 0x1f) * 1e-3f; break;
        case 0x40: maps[i][p] = (b & 1) ? -0.0f : 0.0f; break;
        default: maps[i][p] = static_cast<float>((b & 0x1f)) * 1e30f; break;
      }
    }
    std::vector<uint32_t> labels(n), ref;
    const uint32_t count = imiad::labelComponents(masks[i].data(), w, h, labels.data());
    if (count != reference::floodLabels(masks[i].data(), w, h, ref) || labels != ref) fail("labels", count, ref.size());
    std::vector<double> area(count + 1, 0);
    for (uint32_t l : labels) area[l]++;
    units += count;
    for (size_t p = 0; p < n; ++p) {
      all.push_back(maps[i][p]);
      normal.push_back(masks[i][p] == 0);
      weight.push_back(labels[p] ? 1.0 / area[labels[p]] : 0.0);
    }
    batch.push_back({maps[i].data(), masks[i].data(), w, h});
  }
  imiad::PixelAccumulator acc;
  imiad::RunControl control;
  acc.addBinary(batch, regions, control);
  const std::vector<double> limits{0.3, 1.0};
  const imiad::PixelMetrics m = acc.compute(limits, control);
  const auto ref = reference::sweep(all, normal, limits, [&](float t) {
    double s = 0;
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i] >= t) s += weight[i];
    return units > 0 ? s / units : NAN;
  });
  if (!close(m.binary.auroc, ref.auroc)) fail("auroc", m.binary.auroc, ref.auroc);
  if (!close(m.binary.ap, ref.ap)) fail("ap", m.binary.ap, ref.ap);
  if (regions) {
    for (size_t l = 0; l < limits.size(); ++l) {
      if (!close(m.areaUnderPro[l], ref.area[l])) fail("aupro", m.areaUnderPro[l], ref.area[l]);
    }
  }
  return 0;
}
