// Building blocks shared by the trained heads on frozen features (native/train/flows.cc and later families):
// zero-copy wrapping of the ONNX features, the 2-D sin/cos positional encoding (cflow-ad), the Gaussian
// log-likelihood with log-det bookkeeping, the training device, and a module's state as named float arrays.
// Internal to native/train (it speaks torch); the addon sees only train.h.
#pragma once

#include <torch/torch.h>

#include <map>

#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime.h"
#include "train.h"

namespace imiad {
namespace train {

// torch.nn.Conv2d(in, out, k, stride, padding, groups) with a bias, and without one (the convolutions that a batch
// norm follows).
inline torch::nn::Conv2d ConvBias(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0, int64_t groups = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).groups(groups));
}
inline torch::nn::Conv2d ConvNoBias(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false));
}

// The device a model lives on: "cuda" only where libtorch has CUDA and sees a GPU (the TypeScript side resolves
// 'auto' and refuses 'cuda' before this runs); anything else is the CPU.
torch::Device TrainDevice(const std::string& device);

// A [n, c, h, w] view as a tensor on `device` (a view of the caller's memory on the CPU, a copy on a GPU).
torch::Tensor ViewTensor(const View& v, const torch::Device& device);

// cflow-ad's positionalencoding2d(D, H, W) (custom_models/utils.py): [D, H, W], the first D/2 channels encode the
// column (sin at even, cos at odd channels), the last D/2 the row, frequencies exp(-2k ln(1e4) / (D/2)).
torch::Tensor PositionalEncoding2d(int64_t d, int64_t h, int64_t w);

// log N(z; 0, I) of each row of z [n, C] plus its log-det [n]: C ln(1/sqrt(2 pi)) - 0.5 |z|^2 + logdet
// (cflow-ad get_logp).
torch::Tensor GaussianLogLikelihood(const torch::Tensor& z, const torch::Tensor& logdet);

// The float parameters and buffers of a module as named arrays, and back (a checkpoint's tensors must all match).
std::vector<NamedArray> ModuleState(torch::nn::Module& module);
void LoadModuleState(torch::nn::Module& module, const std::vector<NamedArray>& state);
int64_t TrainableCount(torch::nn::Module& module);

// Optimiser state as named arrays (checkpoints): libtorch keys an optimiser's per-parameter state by the parameter's
// TensorImpl address, as a string; Named copies a tensor out (float32, on the CPU); Restore reads `name` back shaped
// and placed like `like`, counting the arrays read in `used`, and names what is missing or misshaped.
std::string OptimizerKey(const torch::Tensor& p);
NamedArray Named(const std::string& name, const torch::Tensor& t);
torch::Tensor Restore(const std::map<std::string, const NamedArray*>& byName, const std::string& name, const torch::Tensor& like,
                      size_t* used);

// Reads an optional extra parameter of a model config (ModelConfig::extra), with a default.
std::vector<double> Extra(const ModelConfig& config, const std::string& key, std::vector<double> fallback);

// A [n, outSize, outSize] map tensor copied into `out` (on the CPU).
void CopyOut(const torch::Tensor& map, float* out);

// Checks feature levels against the channels (and, when given, the sides h, w per level) the model was built for.
void CheckLevels(const std::vector<View>& features, const std::vector<int64_t>& channels, const std::vector<int64_t>& sides);

// Bilinear resize of [n, c, h, w] maps to size x size.
torch::Tensor Upsample(const torch::Tensor& m, int64_t size, bool alignCorners);

// The parameters that take gradients (FrEIA's fixed permutations are buffers here, so this is all of them).
std::vector<torch::Tensor> TrainableParameters(torch::nn::Module& module);

// torch::optim::Adam and torch::optim::SGD with the update of each float32 CPU parameter fused into one pass over its
// elements: the same state (checkpoints and OptimizerState() are unchanged) and bit for bit the same results as
// ATen's CPU kernels (the same operations, roundings and fused multiply-adds: blocks.cc), where ATen's step makes
// eight (Adam) or four (SGD) passes, each reading and writing whole parameter-sized tensors: on ResNet-18-sized and
// larger models those passes are a tenth of a training step. Other devices, amsgrad, nesterov, dampening and a
// closure take the base class's step.
//   Adam: g' = g + wd p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
//   SGD:  g' = g + wd p; b = g' at the first step, else momentum b + g'; p -= lr b
class FusedAdam : public torch::optim::Adam {
 public:
  FusedAdam(std::vector<torch::Tensor> params, torch::optim::AdamOptions options) : torch::optim::Adam(std::move(params), options) {}
  torch::Tensor step(LossClosure closure = nullptr) override;
};

class FusedSGD : public torch::optim::SGD {
 public:
  FusedSGD(std::vector<torch::Tensor> params, torch::optim::SGDOptions options) : torch::optim::SGD(std::move(params), options) {}
  torch::Tensor step(LossClosure closure = nullptr) override;
};

// A trained head on frozen features: one root module on one device, one optimiser, state as named arrays; every
// call holds the model's mutex.
class HeadModel : public Model {
 public:
  explicit HeadModel(const ModelConfig& config) : config_(config), device_(TrainDevice(config.device)) {}
  std::vector<NamedArray> State() override;
  void LoadState(const std::vector<NamedArray>& state) override;
  // Adam's / AdamW's per-parameter state, named as the teacher-student models name theirs (exp_avg:<param>,
  // exp_avg_sq:<param>, max_exp_avg_sq:<param> with amsgrad, step:<param> = {step / 2^24, step % 2^24}).
  std::vector<NamedArray> OptimizerState() override;
  void LoadOptimizerState(const std::vector<NamedArray>& state) override;
  int64_t ParameterCount() override { return TrainableCount(*root_); }

 protected:
  // Takes the root module, moves it to the device, and the optimiser over its parameters (made before the move:
  // the parameters move in place).
  void Finish(std::shared_ptr<torch::nn::Module> root, std::unique_ptr<torch::optim::Optimizer> optimizer);
  // One optimiser step on `loss` unless it is NaN or infinite (then the weights stay as they were); the loss.
  double Apply(const torch::Tensor& loss);
  // Runs fn on the training thread (runtime.h) with the model's thread count, one call of this model at a time, and
  // returns what fn returns.
  template <typename F>
  auto OnTrainingThread(F&& fn) -> decltype(fn()) {
    std::lock_guard<std::mutex> lock(mutex_);
    if constexpr (std::is_void_v<decltype(fn())>) {
      runtime::Run(config_.threads, fn);
    } else {
      decltype(fn()) result{};
      runtime::Run(config_.threads, [&] { result = fn(); });
      return result;
    }
  }

  ModelConfig config_;
  torch::Device device_;
  // > 0: the gradients' global norm is clipped to this before each step (CS-Flow: 1).
  double clipNorm_ = 0;
  std::shared_ptr<torch::nn::Module> root_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::mutex mutex_;
};

// ATen's max_pool2d_with_indices (square kernel k, stride s, padding p, dilation 1, no ceil mode) on a float NCHW
// tensor, with its backward, to the bit, in one pass per direction: in each window the first maximum in row-major
// order wins (a NaN always wins), and the backward adds each output's gradient into its argmax in row-major output
// order, as ATen's CPU kernels do. The argmax is kept as an int32 index within the plane (ATen keeps int64 indices
// and scans without vectorising; ResNet's 3x3 stride-2 stem pool took 4 % of a training step). Autograd-aware;
// other dtypes, devices and layouts fall back to torch::max_pool2d.
torch::Tensor MaxPool2d(const torch::Tensor& x, int64_t k, int64_t s, int64_t p);

}  // namespace train
}  // namespace imiad
