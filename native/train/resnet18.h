// A trainable ResNet-18 (conv1 .. layerN) in libtorch, laid out and named exactly as torchvision's resnet18
// (torchvision/models/resnet.py: BasicBlock, [2, 2, 2, 2], stride on conv1 of the first block of layers 2..4, a
// 1x1 conv + BN downsample where the shape changes), so that a state dict's names address its tensors directly:
// conv1.weight, bn1.{weight,bias,running_mean,running_var}, layer1.0.conv1.weight, layer1.0.bn1.weight, ...,
// layer2.0.downsample.0.weight, layer2.0.downsample.1.running_var, ... BatchNorm keeps torchvision's eps 1e-5 and
// momentum 0.1. Shared by the detectors that fine-tune the backbone itself (CutPaste, DevNet, DRA, RegAD).
//
// Weights come from the user's ONNX backbone. lib/backbone/resnet-weights.ts reads the file's initializers with the
// project's own ONNX codec, maps them to the torchvision names above (folded BatchNorm included: a conv that carries
// a bias and no BatchNormalization node after it becomes a bias-free conv followed by a BN of weight 1, bias = the
// conv's bias, running mean 0 and running variance 1 - eps, i.e. the identity plus the bias in eval mode) and hands
// them to the addon as the model config's `weights` record: { [torchvision name]: { data: Float32Array, shape } }
// (bindings/train/train.ts TrainModelConfig.weights). The glue (bindings/train/addon.cc) copies each array into
// ModelConfig::weights as a NamedArray; a model builds its ResNet18 and calls loadWeights with those tensors.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "train.h"

namespace imiad {
namespace train {

// torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)).
struct ResNetBasicBlockImpl : torch::nn::Module {
  ResNetBasicBlockImpl(int64_t in, int64_t planes, int64_t stride);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(ResNetBasicBlock);

struct ResNet18Impl : torch::nn::Module {
  // Builds conv1, bn1 and layer1 .. layer<upToLayer> (1..4), with torchvision's initialisation (kaiming_normal_
  // fan_out for the convs, BN weight 1 and bias 0) drawn from torch's global generator (the caller seeds it).
  //
  //
  // channelsLast: the convolution weights are stored channels-last (NHWC strides) and stem() lays its input out so,
  // which makes oneDNN run the network's convolutions, batch norms, ReLUs and pooling in its channels-last kernels,
  // forward and backward. Whether that is faster depends on the shapes (CutPaste's and RegAD's steps gain, DevNet's
  // and DRA's do not: docs/training-speed.md), so the caller chooses (ModelConfig extra "channelsLast", which
  // bindings/train/layout.ts fills per detector). The values are the same tensors' (sizes, names, checkpoints and
  // weight import are unchanged: every copy goes through copy_ or contiguous()); sums inside the kernels run in
  // another order, so the results differ from an NCHW run by float rounding.
  explicit ResNet18Impl(int upToLayer = 4, bool channelsLast = false);
  // The outputs of layer1 .. layer<upToLayer> for an image batch [n, 3, h, w] (channels-last tensors when the
  // network is: use reshape or flatten, not view, to merge their dimensions).
  std::vector<torch::Tensor> forward(torch::Tensor x);
  // maxpool(relu(bn1(conv1(x)))), x laid out as the weights are: the input of layer1 (forward starts with it).
  torch::Tensor stem(torch::Tensor x);
  // Copies the named tensors (torchvision names, see the top of this file) into the parameters and the BN running
  // statistics. Every tensor the network has must be present with its shape; names of deeper layers than the network
  // has (layer4 for upToLayer 3) and of the classifier (fc.*) are ignored. Throws std::invalid_argument naming every
  // missing tensor, or the first misshapen one with both shapes.
  void loadWeights(const std::map<std::string, torch::Tensor>& w);
  // Channels of layer1 .. layer4.
  static int64_t LayerChannels(int layer) { return int64_t{64} << (layer - 1); }
  int upToLayer() const { return upToLayer_; }
  bool channelsLast() const { return channelsLast_; }

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  std::vector<torch::nn::Sequential> layers;

 private:
  int upToLayer_;
  bool channelsLast_ = true;
};
TORCH_MODULE(ResNet18);

// Kind "resnet18": the network alone, for Forward (layer1..layerN in eval mode) and State; it has no loss, so Step
// and Maps refuse. extra.upToLayer = [N] (default 4); weights from config.weights (all required when given), else
// torchvision's initialisation from config.seed.
std::unique_ptr<Model> CreateResNet18FeatureModel(const ModelConfig& config);

// ModelConfig::weights as tensors (views of the config's arrays; loadWeights copies them into the parameters).
std::map<std::string, torch::Tensor> WeightTensors(const std::vector<NamedArray>& weights);

// The model config's extra "channelsLast" ([1]: the ResNet-18 channels-last, [0] or absent: NCHW); anything else is
// an error naming the key.
bool ChannelsLast(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
