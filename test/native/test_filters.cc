// C++ checks of native/filters (run under ASan/UBSan by test/native/run.sh): hand-computed cases and edge sizes.
#include <cmath>
#include <cstdio>
#include <vector>

#include "filters.h"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what);
    ++failures;
  }
}

bool near(double a, double b, double tol) { return std::fabs(a - b) <= tol; }

}  // namespace

int main() {
  imiad::RunControl control;

  // Kernel: sigma 4, truncate 4 -> radius 16, symmetric, sums to 1.
  const std::vector<double> k = imiad::gaussianKernel1d(4.0, 4.0);
  check(k.size() == 33, "kernel length 33");
  double sum = 0;
  for (double v : k) sum += v;
  check(near(sum, 1.0, 1e-15), "kernel sums to 1");
  check(k[0] == k[32] && k[10] == k[22], "kernel symmetric");

  // A 1 x 1 map under reflect stays itself; a constant map stays constant.
  {
    float in = 3.5f, out = 0;
    imiad::gaussianBlur(&in, &out, 1, 1, 1, 4.0, 4.0, control);
    check(near(out, 3.5, 1e-6), "1x1 blur");
    std::vector<float> flat(7 * 5, 2.0f), res(7 * 5);
    imiad::gaussianBlur(flat.data(), res.data(), 1, 7, 5, 1.5, 4.0, control);
    for (float v : res) check(near(v, 2.0, 1e-6), "constant blur");
  }

  // Bilinear 2 -> 4 on one row: torch gives [a, .75a+.25b, .25a+.75b, b].
  {
    const float in[2] = {0.0f, 4.0f};
    float out[4];
    imiad::resizeBilinear(in, out, 1, 1, 2, 1, 4, control);
    check(out[0] == 0.0f && out[1] == 1.0f && out[2] == 3.0f && out[3] == 4.0f, "bilinear 2->4");
  }

  // 3 x 3 average of a 1 x 1 map of 9: 9 / 9 = 1 (eight zero pads).
  {
    const float in = 9.0f;
    float out = 0;
    imiad::neighbourhoodAverage(&in, &out, 1, 1, 1, 3, control);
    check(out == 1.0f, "neighbourhood average with padding");
  }

  // Adaptive pooling 5 -> 2: windows [0, 3) and [2, 5).
  {
    const float in[5] = {1, 2, 3, 4, 5};
    float out[2];
    imiad::adaptiveAvgPool1d(in, out, 1, 5, 2, control);
    check(out[0] == 2.0f && out[1] == 4.0f, "adaptive pool 5->2");
  }

  // patchEmbedding of one 1-channel 1 x 1 layer, p = 1: the value itself.
  {
    const float in = 0.75f;
    float out = 0;
    imiad::patchEmbedding({imiad::FeatureLayer{&in, 1, 1, 1}}, 1, 1, 1, 1, &out, control);
    check(out == 0.75f, "patch embedding identity");
  }

  // gatherChannels: a 2 x 2 layer and a 1 x 1 layer; channel 1 (the coarse one) is replicated by nearest neighbour.
  {
    const float fine[4] = {1, 2, 3, 4};
    const float coarse = 9;
    const uint32_t channels[2] = {1, 0};
    float out[8];
    imiad::gatherChannels({imiad::FeatureLayer{fine, 1, 2, 2}, imiad::FeatureLayer{&coarse, 1, 1, 1}}, 1, channels, 2,
                          out, control);
    check(out[0] == 9 && out[3] == 9 && out[4] == 1 && out[7] == 4, "gather channels");
  }

  if (failures == 0) std::printf("test_filters: all passed\n");
  return failures == 0 ? 0 : 1;
}
