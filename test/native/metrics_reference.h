// Plain, obviously-correct references for the metric kernels, shared by test_metrics.cc and the fuzz target:
// flood-fill labelling and threshold-by-threshold curves (quadratic time; small inputs only).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace reference {

inline uint32_t floodLabels(const uint8_t* mask, uint32_t w, uint32_t h, std::vector<uint32_t>& labels) {
  labels.assign(static_cast<size_t>(w) * h, 0);
  uint32_t count = 0;
  std::vector<size_t> stack;
  for (size_t start = 0; start < labels.size(); ++start) {
    if (!mask[start] || labels[start]) continue;
    labels[start] = ++count;
    stack.push_back(start);
    while (!stack.empty()) {
      const size_t p = stack.back();
      stack.pop_back();
      const long x = static_cast<long>(p % w), y = static_cast<long>(p / w);
      for (long dy = -1; dy <= 1; ++dy) {
        for (long dx = -1; dx <= 1; ++dx) {
          const long nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= static_cast<long>(w) || ny >= static_cast<long>(h)) continue;
          const size_t q = static_cast<size_t>(ny) * w + static_cast<size_t>(nx);
          if (mask[q] && !labels[q]) {
            labels[q] = count;
            stack.push_back(q);
          }
        }
      }
    }
  }
  return count;
}

inline double trapezoidTo(const std::vector<double>& x, const std::vector<double>& y, double limit) {
  double area = 0;
  for (size_t i = 1; i < x.size(); ++i) {
    if (x[i] <= limit) {
      area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1]);
    } else if (x[i - 1] <= limit) {
      const double yi = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1]);
      area += 0.5 * (yi + y[i - 1]) * (limit - x[i - 1]);
    }
  }
  return area;
}

struct Curves {
  double auroc = NAN, ap = NAN;
  std::vector<double> area;  // per limit, normalised
};

// Pixels with a score, an "is normal" flag (counted in FPR), a positive flag and a per-threshold overlap function:
// overlap(t) gives the PRO/sPRO value at `score >= t` (t a distinct score). Thresholds are visited one by one.
template <typename Overlap>
Curves sweep(const std::vector<float>& scores, const std::vector<uint8_t>& normal, const std::vector<double>& limits,
             Overlap overlap) {
  std::vector<float> distinct(scores);
  std::sort(distinct.begin(), distinct.end(), [](float a, float b) { return a > b; });
  distinct.erase(std::unique(distinct.begin(), distinct.end(), [](float a, float b) { return a == b; }), distinct.end());
  size_t N = 0, P = 0;
  for (uint8_t n : normal) (n ? N : P)++;
  std::vector<double> fx{0}, ty{0}, py{0};
  Curves c;
  double ap = 0, prevRecall = 0;
  for (float t : distinct) {
    size_t fp = 0, tp = 0;
    for (size_t i = 0; i < scores.size(); ++i) {
      if (scores[i] >= t) (normal[i] ? fp : tp)++;
    }
    fx.push_back(N ? static_cast<double>(fp) / N : NAN);
    ty.push_back(P ? static_cast<double>(tp) / P : NAN);
    py.push_back(std::min(overlap(t), 1.0));
    if (P) {
      const double recall = static_cast<double>(tp) / P;
      if (tp + fp > 0) ap += (recall - prevRecall) * static_cast<double>(tp) / static_cast<double>(tp + fp);
      prevRecall = recall;
    }
  }
  // AUROC needs both classes; AP only positives (scikit-learn gives 1 when every sample is positive).
  if (N && P) c.auroc = trapezoidTo(fx, ty, 1.0);
  if (P) c.ap = ap;
  for (double l : limits) c.area.push_back(N ? trapezoidTo(fx, py, l) / l : NAN);
  return c;
}

}  // namespace reference
