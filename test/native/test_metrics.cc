// C++ tests of native/components and native/curves against the plain references in metrics_reference.h, run under
// ASan/UBSan by test/native/run.sh.
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

#include "components.h"
#include "curves.h"
#include "metrics_reference.h"

static int failures = 0;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

static bool near(double a, double b, double tol = 1e-9) {
  return (std::isnan(a) && std::isnan(b)) || std::fabs(a - b) <= tol;
}

static void testLabels() {
  std::mt19937 gen(3);
  for (int t = 0; t < 200; ++t) {
    const uint32_t w = 1 + gen() % 37, h = 1 + gen() % 29;
    const double density = (gen() % 100) / 100.0;
    std::vector<uint8_t> mask(static_cast<size_t>(w) * h);
    for (auto& m : mask) m = (gen() % 1000) < density * 1000 ? 1 : 0;
    std::vector<uint32_t> labels(mask.size()), ref;
    const uint32_t count = imiad::labelComponents(mask.data(), w, h, labels.data());
    const uint32_t refCount = reference::floodLabels(mask.data(), w, h, ref);
    CHECK(count == refCount);
    CHECK(labels == ref);
  }
}

static void testScoreKey() {
  const float values[] = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 1.0f, 2.5f, INFINITY};
  for (size_t i = 0; i + 1 < sizeof values / sizeof values[0]; ++i) {
    if (values[i] == values[i + 1]) {
      CHECK(imiad::scoreKey(values[i]) == imiad::scoreKey(values[i + 1]));
    } else {
      CHECK(imiad::scoreKey(values[i]) < imiad::scoreKey(values[i + 1]));
    }
  }
}

static void testTrapezoid() {
  const std::vector<double> x{0, 0.2, 0.5, 1}, y{0, 0.4, 0.6, 1};
  const double yi = 0.4 + 0.2 * 0.1 / 0.3;
  CHECK(near(imiad::trapezoid(x, y, 0.3), 0.04 + 0.5 * (yi + 0.4) * 0.1, 1e-15));
  CHECK(near(imiad::trapezoid(x, y, NAN), 0.59, 1e-15));
  bool threw = false;
  try {
    imiad::trapezoid(x, y, 1.5);
  } catch (const imiad::InvalidArgument&) {
    threw = true;
  }
  CHECK(threw);
}

static void testAccumulator(bool oneBucket) {
  std::mt19937 gen(oneBucket ? 17 : 7);
  // oneBucket: 72000 scores sharing their top 16 key bits, so one bucket takes the direct-table path (>= 2^16).
  const uint32_t w = oneBucket ? 300 : 23, h = oneBucket ? 80 : 19;
  const int images = 3;
  imiad::PixelAccumulator acc;
  std::vector<std::vector<float>> maps(images);
  std::vector<std::vector<uint8_t>> masks(images);
  std::vector<imiad::PixelAccumulator::BinaryImage> batch;
  std::vector<float> all;
  std::vector<uint8_t> normal;
  std::vector<double> weight;
  double regions = 0;
  for (int i = 0; i < images; ++i) {
    maps[i].resize(static_cast<size_t>(w) * h);
    masks[i].assign(maps[i].size(), 0);
    for (int b = 0; b < 3; ++b) {
      const uint32_t x0 = gen() % (w - 5), y0 = gen() % (h - 5), bw = 1 + gen() % 5, bh = 1 + gen() % 5;
      for (uint32_t y = y0; y < y0 + bh; ++y)
        for (uint32_t x = x0; x < x0 + bw; ++x) masks[i][y * w + x] = 1;
    }
    for (size_t p = 0; p < maps[i].size(); ++p) {
      const double u = (gen() % 100000) / 100000.0 + 0.5 * masks[i][p];
      maps[i][p] = oneBucket ? 1.0f + static_cast<float>(static_cast<int>(u * 300)) * 0x1p-16f
                             : static_cast<float>(std::round(u * 30) / 30 - 0.4);
    }
    std::vector<uint32_t> labels;
    const uint32_t count = reference::floodLabels(masks[i].data(), w, h, labels);
    regions += count;
    std::vector<double> area(count + 1, 0);
    for (uint32_t l : labels) area[l]++;
    for (size_t p = 0; p < maps[i].size(); ++p) {
      all.push_back(maps[i][p]);
      normal.push_back(labels[p] == 0);
      weight.push_back(labels[p] ? 1.0 / area[labels[p]] : 0.0);
    }
    batch.push_back({maps[i].data(), masks[i].data(), w, h});
  }
  imiad::RunControl control;
  acc.addBinary(batch, true, control);
  const std::vector<double> limits{0.3, 0.05, 1.0};
  const imiad::PixelMetrics m = acc.compute(limits, control);
  const auto ref = reference::sweep(all, normal, limits, [&](float t) {
    double s = 0;
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i] >= t) s += weight[i];
    return s / regions;
  });
  CHECK(near(m.binary.auroc, ref.auroc));
  CHECK(near(m.binary.ap, ref.ap));
  for (size_t l = 0; l < limits.size(); ++l) CHECK(near(m.areaUnderPro[l], ref.area[l]));
  // A second compute (records already partitioned) gives the same numbers.
  const imiad::PixelMetrics again = acc.compute(limits, control);
  CHECK(again.binary.auroc == m.binary.auroc && again.areaUnderPro == m.areaUnderPro);
}

static void testChannels() {
  std::mt19937 gen(23);
  const uint32_t w = 17, h = 13;
  const size_t n = static_cast<size_t>(w) * h;
  imiad::PixelAccumulator acc;
  std::vector<std::vector<float>> maps(5, std::vector<float>(n));
  std::vector<std::vector<std::vector<uint8_t>>> channels(5);
  std::vector<imiad::PixelAccumulator::ChannelImage> batch;
  std::vector<float> all;
  std::vector<uint8_t> normal;
  struct Channel {
    size_t offset;
    const std::vector<uint8_t>* mask;
    double sat;
  };
  std::vector<Channel> refChannels;
  for (int i = 0; i < 5; ++i) {
    const int count = i == 0 ? 0 : 1 + static_cast<int>(gen() % 3);
    imiad::PixelAccumulator::ChannelImage img;
    img.width = w;
    img.height = h;
    channels[i].resize(count, std::vector<uint8_t>(n, 0));
    for (int c = 0; c < count; ++c) {
      const uint32_t x0 = gen() % 10, y0 = gen() % 8;
      for (uint32_t y = y0; y < y0 + 5; ++y)
        for (uint32_t x = x0; x < x0 + 6; ++x) channels[i][c][y * w + x] = 1;
    }
    std::vector<uint8_t> uni(n, 0);
    for (auto& ch : channels[i])
      for (size_t p = 0; p < n; ++p) uni[p] |= ch[p];
    for (size_t p = 0; p < n; ++p) maps[i][p] = static_cast<float>(std::round(((gen() % 1000) / 1000.0 + 0.4 * uni[p]) * 16) / 16);
    img.scores = maps[i].data();
    for (int c = 0; c < count; ++c) {
      img.channels.push_back(channels[i][c].data());
      const uint64_t sat = 1 + gen() % 30;  // channel area is 30
      img.saturation.push_back(sat);
      refChannels.push_back({all.size(), &channels[i][c], static_cast<double>(sat)});
    }
    for (size_t p = 0; p < n; ++p) {
      all.push_back(maps[i][p]);
      normal.push_back(uni[p] == 0);
    }
    batch.push_back(img);
  }
  imiad::RunControl control;
  acc.addChannels(batch, control);
  const std::vector<double> limits{0.01, 0.05, 0.1, 0.3, 1.0};
  const imiad::PixelMetrics m = acc.compute(limits, control);
  const auto ref = reference::sweep(all, normal, limits, [&](float t) {
    double s = 0;
    for (const Channel& c : refChannels) {
      double tp = 0;
      for (size_t p = 0; p < n; ++p)
        if ((*c.mask)[p] && all[c.offset + p] >= t) ++tp;
      s += std::min(tp / c.sat, 1.0);
    }
    return s / static_cast<double>(refChannels.size());
  });
  for (size_t l = 0; l < limits.size(); ++l) CHECK(near(m.areaUnderPro[l], ref.area[l]));
  CHECK(m.units == refChannels.size());
}

static void testCancel() {
  int32_t flag = 1;
  imiad::RunControl control;
  control.cancelFlag = &flag;
  imiad::PixelAccumulator acc;
  std::vector<float> map(16, 0.5f);
  bool threw = false;
  try {
    acc.addBinary({{map.data(), nullptr, 4, 4}}, true, control);
  } catch (const imiad::Cancelled&) {
    threw = true;
  }
  CHECK(threw);
  CHECK(acc.pixels() == 0);
}

int main() {
  testLabels();
  testScoreKey();
  testTrapezoid();
  testAccumulator(false);
  testAccumulator(true);
  testChannels();
  testCancel();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("test_metrics: all checks passed\n");
  return 0;
}
