// torchvision's resnet18 (torchvision/models/resnet.py, v0.14) in libtorch; see resnet18.h.
#include "resnet18.h"

#include <mutex>
#include <sstream>

#include "../control.h"
#include "blocks.h"
#include "runtime.h"

namespace imiad {
namespace train {

namespace nn = torch::nn;

namespace {

std::string Shape(const torch::IntArrayRef& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

}  // namespace

ResNetBasicBlockImpl::ResNetBasicBlockImpl(int64_t in, int64_t planes, int64_t stride) {
  conv1 = register_module("conv1", ConvNoBias(in, planes, 3, stride, 1));
  bn1 = register_module("bn1", nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", ConvNoBias(planes, planes, 3, 1, 1));
  bn2 = register_module("bn2", nn::BatchNorm2d(planes));
  if (stride != 1 || in != planes) {
    downsample = register_module("downsample", nn::Sequential(ConvNoBias(in, planes, 1, stride, 0), nn::BatchNorm2d(planes)));
  }
}

torch::Tensor ResNetBasicBlockImpl::forward(const torch::Tensor& x) {
  auto out = bn1(conv1(x)).relu_();
  out = bn2(conv2(out));
  return out.add_(downsample ? downsample->forward(x) : x).relu_();
}

ResNet18Impl::ResNet18Impl(int upToLayer, bool channelsLast) : upToLayer_(upToLayer), channelsLast_(channelsLast) {
  if (upToLayer < 1 || upToLayer > 4) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected ResNet-18 up to layer 1..4 but received " + std::to_string(upToLayer));
  }
  conv1 = register_module("conv1", ConvNoBias(3, 64, 7, 2, 3));
  bn1 = register_module("bn1", nn::BatchNorm2d(64));
  int64_t in = 64;
  for (int i = 1; i <= upToLayer; i++) {
    const int64_t planes = LayerChannels(i);
    nn::Sequential layer(ResNetBasicBlock(in, planes, i == 1 ? 1 : 2), ResNetBasicBlock(planes, planes, 1));
    layers.push_back(register_module("layer" + std::to_string(i), layer));
    in = planes;
  }
  torch::NoGradGuard guard;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    }
  }
  if (channelsLast_) {
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->as<nn::Conv2d>()) conv->weight.set_data(conv->weight.contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }
}

torch::Tensor ResNet18Impl::stem(torch::Tensor x) {
  if (channelsLast_) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  return MaxPool2d(bn1(conv1(x)).relu_(), 3, 2, 1);
}

std::vector<torch::Tensor> ResNet18Impl::forward(torch::Tensor x) {
  auto h = stem(x);
  std::vector<torch::Tensor> out;
  out.reserve(layers.size());
  for (auto& layer : layers) {
    h = layer->forward(h);
    out.push_back(h);
  }
  return out;
}

void ResNet18Impl::loadWeights(const std::map<std::string, torch::Tensor>& w) {
  std::vector<std::pair<torch::Tensor, const torch::Tensor*>> copies;
  std::vector<std::string> missing;
  auto want = [&](const std::string& name, const torch::Tensor& target) {
    auto it = w.find(name);
    if (it == w.end()) {
      missing.push_back(name);
      return;
    }
    if (it->second.sizes() != target.sizes()) {
      throw InvalidArgument("ERR_IMIAD_LAYOUT", "Expected ResNet-18's " + Shape(target.sizes()) + " for " + name + " but the weights hold " +
                                                    Shape(it->second.sizes()));
    }
    copies.emplace_back(target, &it->second);
  };
  for (auto& p : named_parameters()) want(p.key(), p.value());
  for (auto& b : named_buffers()) {
    if (b.value().scalar_type() == torch::kFloat32) want(b.key(), b.value());  // not num_batches_tracked
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size(); i++) list += (i ? ", " : "") + missing[i];
    throw InvalidArgument("ERR_IMIAD_LAYOUT", "The ResNet-18 weights lack " + std::to_string(missing.size()) + " tensor(s): " + list);
  }
  torch::NoGradGuard guard;
  for (auto& c : copies) c.first.copy_(c.second->to(c.first.device(), torch::kFloat32));
}

bool ChannelsLast(const ModelConfig& config) {
  const auto v = Extra(config, "channelsLast", {0});
  if (v.size() != 1 || (v[0] != 0 && v[0] != 1)) throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Expected extra.channelsLast to be [0] or [1]");
  return v[0] == 1;
}

std::map<std::string, torch::Tensor> WeightTensors(const std::vector<NamedArray>& weights) {
  std::map<std::string, torch::Tensor> out;
  for (const NamedArray& a : weights) {
    int64_t n = 1;
    for (auto d : a.shape) n *= d;
    if (n != static_cast<int64_t>(a.values.size())) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected " + std::to_string(n) + " values for the weight " + a.name + " but received " +
                                                  std::to_string(a.values.size()));
    }
    out[a.name] = torch::from_blob(const_cast<float*>(a.values.data()), a.shape, torch::kFloat32);
  }
  return out;
}

namespace {

class ResNet18Features : public Model {
 public:
  explicit ResNet18Features(const ModelConfig& config) : config_(config), device_(TrainDevice(config.device)) {
    const int upTo = static_cast<int>(Extra(config, "upToLayer", {4})[0]);
    torch::manual_seed(config.seed);  // the caller holds the seed lock
    net_ = ResNet18(upTo, ChannelsLast(config));
    if (!config.weights.empty()) net_->loadWeights(WeightTensors(config.weights));
    net_->to(device_);
  }

  double Step(const View&, const std::vector<View>&, const RunControl&) override {
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "The resnet18 model has no loss to train");
  }
  void Maps(const View&, const std::vector<View>&, int64_t, float*, const RunControl&) override {
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "The resnet18 model has no anomaly maps");
  }

  std::vector<NamedArray> Forward(const View& images, const RunControl& control) override {
    std::vector<NamedArray> out;
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, [&] {
      if (images.data == nullptr || images.c != 3) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected an image batch [n, 3, h, w]");
      control.throwIfCancelled();
      c10::InferenceMode guard;
      net_->eval();
      auto layers = net_->forward(ViewTensor(images, device_));
      for (size_t i = 0; i < layers.size(); i++) out.push_back(Named("layer" + std::to_string(i + 1), layers[i]));
    });
    return out;
  }

  std::vector<NamedArray> State() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return ModuleState(*net_);
  }
  void LoadState(const std::vector<NamedArray>& state) override {
    std::lock_guard<std::mutex> lock(mutex_);
    LoadModuleState(*net_, state);
  }
  std::vector<NamedArray> OptimizerState() override { return {}; }
  void LoadOptimizerState(const std::vector<NamedArray>& state) override {
    if (!state.empty()) throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The resnet18 model has no optimiser state");
  }
  int64_t ParameterCount() override { return TrainableCount(*net_); }

 private:
  ModelConfig config_;
  torch::Device device_;
  ResNet18 net_{nullptr};
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<Model> CreateResNet18FeatureModel(const ModelConfig& config) { return std::make_unique<ResNet18Features>(config); }

}  // namespace train
}  // namespace imiad
