// The normalizing-flow engine of the training addon (FastFlow, CFlow; CS-Flow and BGAD are to reuse it): FrEIA's
// AllInOneBlock as the versions pinned by gathierry/FastFlow (1779d1f) and gudovskiy/cflow-ad (cc5cf5e) define it
// (METHODS.md, Appendix A), with a 2-D conv subnet or a 1-D linear subnet taking a condition.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <utility>

#include "train.h"

namespace imiad {
namespace train {

struct CouplingOptions {
  int64_t channels = 0;
  // 1: x is [n, c] (CFlow's fibers); 2: x is [n, c, h, w] (FastFlow).
  int rank = 2;
  // Affine clamping (FastFlow 2.0, CFlow 1.9).
  double clamp = 2.0;
  // A random orthogonal matrix (CFlow's permute_soft) or a random permutation of the channels.
  bool softPermutation = false;
  // Channels of the condition concatenated to the passive half before the subnet (CFlow: the positional encoding).
  int64_t conditionChannels = 0;
  // 2-D subnet: Conv_k(c1 -> hidden), ReLU, Conv_k(hidden -> 2 c2), "same" padding; hidden = hiddenRatio * c1.
  int64_t kernel = 3;
  double hiddenRatio = 1.0;
  // The permutation's (or rotation's) random source.
  uint64_t seed = 0;
  // 1-D with a condition: the subnet's first layer as W_x x1 + W_c cond + b (the same weight, split by columns), so
  // that backward computes no gradient for the condition's columns (BGAD; the same maths up to float rounding).
  bool splitCondition = false;
};

// One affine coupling block: x1 = the first ceil(c/2) channels (passive), x2 = the rest;
// a = 0.1 subnet([x1, cond]); s = clamp tanh(a[:c2]); x2' = x2 exp(s) + a[c2:];
// y = P([x1, x2'] g + o), g = 0.1 softplus_{beta 0.5}(gamma) (gamma starts at 2 ln(e^5 - 1), so g = 1);
// log-det = sum s + (h w) sum log g. The clamp multiplies tanh(a), not tanh(a / clamp) as newer FrEIA does.
class AllInOneBlockImpl : public torch::nn::Module {
 public:
  explicit AllInOneBlockImpl(const CouplingOptions& options);
  // y and the log-det per sample [n].
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& condition = {});

 private:
  CouplingOptions options_;
  int64_t split1_, split2_;
  torch::nn::Sequential subnet_{nullptr};
  torch::Tensor globalScale_, globalOffset_;
  // Hard: the permutation as indices (y_i = x_perm[i]); soft: the rotation matrix w (y = w x).
  torch::Tensor permutation_;
};
TORCH_MODULE(AllInOneBlock);

// A chain of blocks (FrEIA's SequenceINN): z and the summed log-det [n].
class FlowSequenceImpl : public torch::nn::Module {
 public:
  FlowSequenceImpl(int64_t blocks, CouplingOptions options, const std::function<int64_t(int64_t)>& kernelOfBlock);
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& condition = {});

 private:
  std::vector<AllInOneBlock> blocks_;
};
TORCH_MODULE(FlowSequence);

// CS-Flow's subnet (marco-rudolph/cs-flow freia_funcs.py CrossConvolutions): per scale conv_k(in -> hidden),
// LeakyReLU(0.1), conv_k(hidden -> out); plus up_conv(bilinear x2 of the coarser scale's hidden map) and
// down_conv(stride 2 of the finer one's); each scale's sum times a learned gamma that starts at 0.
class CrossConvolutionsImpl : public torch::nn::Module {
 public:
  CrossConvolutionsImpl(int64_t in, int64_t out, int64_t hidden, int64_t kernel);
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& x);

 private:
  std::vector<torch::nn::Conv2d> first_, second_;
  torch::nn::Conv2d up10_{nullptr}, up21_{nullptr}, down01_{nullptr}, down12_{nullptr};
  std::vector<torch::Tensor> gamma_;
};
TORCH_MODULE(CrossConvolutions);

// CS-Flow's block: a fixed random channel permutation per scale, then the parallel GLOW coupling
// (parallel_glow_coupling_layer): x = [x_a (c/2), x_b]; (s, t) = s2(x_b of all scales); y_a = x_a e(s) + t;
// (s', t') = s1(y_a of all scales); y_b = x_b e(s') + t'; e(s) = exp(clamp 0.636 atan(s / clamp)); outputs clamped to
// +-1e6; log-det per scale = sum log e(s) + sum log e(s').
class CrossScaleBlockImpl : public torch::nn::Module {
 public:
  CrossScaleBlockImpl(int64_t channels, int64_t hidden, int64_t kernel, double clamp, uint64_t seed);
  // The three scales' outputs and log-dets [n] each.
  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> forward(const std::vector<torch::Tensor>& x);

 private:
  int64_t split1_, split2_;
  double clamp_;
  std::vector<torch::Tensor> permutations_;
  CrossConvolutions s1_{nullptr}, s2_{nullptr};
};
TORCH_MODULE(CrossScaleBlock);

// "fastflow", "cflow" or "csflow" (ModelConfig::kind); throws InvalidArgument for a bad configuration.
std::unique_ptr<Model> CreateFlowModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
