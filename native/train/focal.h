// The focal loss with label smoothing of Hsuxu/Loss_ToolBox-PyTorch FocalLoss, as DRAEM's loss.py (gamma 2, alpha
// None) and PRNet's losses/focal_loss.py (gamma 4, alpha 0.5) copy it: on class probabilities [n, 2, h, w] against a
// 0/1 mask [n, 1, h, w], the one-hot key clamped to [smooth, 1 - smooth], pt = sum(key * p) + smooth,
// loss = mean(-alpha * (1 - pt)^gamma * log pt). A float alpha weighs both classes alike (0.5 and 1 - 0.5 for two
// classes), so it is one factor here; alpha 1 (None) multiplies by nothing.
#pragma once

#include <torch/torch.h>

namespace imiad {
namespace train {

inline torch::Tensor FocalLoss(const torch::Tensor& p, const torch::Tensor& mask, double gamma, double alpha = 1.0) {
  const double smooth = 1e-5;
  auto key1 = mask.clamp(smooth, 1 - smooth), key0 = (1 - mask).clamp(smooth, 1 - smooth);
  auto pt = key0 * p.narrow(1, 0, 1) + key1 * p.narrow(1, 1, 1) + smooth;
  auto loss = -(1 - pt).pow(gamma) * pt.log();
  if (alpha != 1.0) loss = alpha * loss;
  return loss.mean();
}

}  // namespace train
}  // namespace imiad
