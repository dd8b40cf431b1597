// C++ checks of native/gaussian (run under ASan/UBSan by test/native/run.sh): a 2 x 2 covariance by hand.
#include <cmath>
#include <cstdio>
#include <vector>

#include "gaussian.h"

int main() {
  imiad::RunControl control;
  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "FAIL: %s\n", what);
      ++failures;
    }
  };
  // Three samples of 2 channels at 1 position: (0,0), (2,0), (1,3): mean (1, 1); cov [[1, 0], [0, 3]] + 0.01 I.
  const std::vector<float> emb = {0, 0, 2, 0, 1, 3};
  std::vector<float> mean(2), chol(3);
  imiad::gaussianFit(emb.data(), 3, 2, 1, 0.01, mean.data(), chol.data(), control);
  check(mean[0] == 1.0f && mean[1] == 1.0f, "mean");
  check(std::fabs(chol[0] - std::sqrt(1.01)) < 1e-6 && chol[1] == 0.0f && std::fabs(chol[2] - std::sqrt(3.01)) < 1e-6,
        "cholesky");
  const std::vector<float> x = {2, 4};  // d^2 = 1 / 1.01 + 9 / 3.01
  float d = 0;
  imiad::mahalanobisDistances(x.data(), 1, 2, 1, mean.data(), chol.data(), &d, control);
  check(std::fabs(d - std::sqrt(1 / 1.01 + 9 / 3.01)) < 1e-6, "distance");
  // Positions not a multiple of the block (8): 11 positions, 4 samples, 3 channels.
  std::vector<float> many(4 * 3 * 11);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)));
  std::vector<float> m2(11 * 3), c2(11 * 6), out(4 * 11);
  imiad::gaussianFit(many.data(), 4, 3, 11, 0.01, m2.data(), c2.data(), control);
  imiad::mahalanobisDistances(many.data(), 4, 3, 11, m2.data(), c2.data(), out.data(), control);
  for (float v : out) check(std::isfinite(v) && v >= 0, "finite distances");
  // Running statistics: the three samples above added one, then two at a time: mean (1, 1), scatter [[2, 0], [0, 6]]
  // (the covariance times n - 1), and the same Gaussian as gaussianFit.
  std::vector<double> rm(2, 0.0), rs(3, 0.0);
  imiad::gaussianAccumulate(emb.data(), 1, 2, 1, 0, rm.data(), rs.data(), control);
  imiad::gaussianAccumulate(emb.data() + 2, 2, 2, 1, 1, rm.data(), rs.data(), control);
  check(rm[0] == 1.0 && rm[1] == 1.0, "running mean");
  check(std::fabs(rs[0] - 2.0) < 1e-12 && std::fabs(rs[1]) < 1e-12 && std::fabs(rs[2] - 6.0) < 1e-12, "running scatter");
  std::vector<float> fm(2), fc(3);
  imiad::gaussianFactor(3, rm.data(), rs.data(), 2, 1, 0.01, fm.data(), fc.data(), control);
  check(fm == mean && std::fabs(fc[0] - chol[0]) < 1e-6 && std::fabs(fc[1]) < 1e-6 && std::fabs(fc[2] - chol[2]) < 1e-6, "factor");
  // Over many positions in one call from count 0: bit for bit gaussianFit's Gaussians.
  std::vector<double> am(11 * 3, 0.0), as(11 * 6, 0.0);
  imiad::gaussianAccumulate(many.data(), 4, 3, 11, 0, am.data(), as.data(), control);
  std::vector<float> m3(11 * 3), c3(11 * 6);
  imiad::gaussianFactor(4, am.data(), as.data(), 3, 11, 0.01, m3.data(), c3.data(), control);
  check(m3 == m2 && c3 == c2, "accumulate from zero equals gaussianFit");
  if (failures == 0) std::printf("test_gaussian: all passed\n");
  return failures == 0 ? 0 : 1;
}
