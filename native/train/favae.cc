// FAVAE follows Dehaene & Eline, "Anomaly localization by modeling perceptual features" (2020) as the IM-IAD
// benchmark runs it: open-iad's models/favae/net_favae.py + arch/favae.py (from its baselines/favae, commit 38d4379).
//
// The VAE (net_favae.NetFAVAE, z_dim 100) takes 128 x 128 [0, 1] images: the encoder's four stride-2 4x4 convs reach
// 8 x 8 and its last conv (8x8, no padding) 1 x 1 x 200 = (mu, logvar); the decoder mirrors it with transposed convs
// and ends in a Sigmoid. Module indices and parameter names are the official ones (encode.<i>, decode.<i>,
// adapter.<l>.conv.<j>), so the PyTorch peer loads our weights by name. The decoder's outputs after modules 10, 16
// and 22 (16^2 x 512, 32^2 x 256, 64^2 x 128, pre-BN) pass through per-level adapters Conv1x1 -> ReLU -> Conv1x1 and
// regress the teacher's levels in reverse order (VGG16 features 7, 14, 21 = conv2_2, conv3_3, conv4_3, pre-ReLU:
// 64^2 x 128, 32^2 x 256, 16^2 x 512). Another teacher (the default backbone's layer1..3: 32^2 x 64, 16^2 x 128,
// 8^2 x 256) is matched by side (8 x 8 taps module 7, the last 512-channel conv before the first upsampling), and its
// adapters map the decoder's channels to the teacher's (Conv1x1 c_s -> c_t, ReLU, Conv1x1 c_t -> c_t).
//
// Loss (arch/favae.py train_model): MSE_sum(rec, x) + sum_l MSE_sum(adapter_l(s_l), t_l)
// + kld * 0.5 * sum(-1 - logvar + exp(logvar) + mu^2), Adam(lr, weight_decay). The reparameterisation noise comes
// from the model's own generator (seed ^ 0x7a3e5, torch::randn on the CPU: the peer draws the same numbers); its
// state is part of the optimiser state of a checkpoint. The official loop runs the decoder a second time to collect
// the taps (so BN running statistics move twice per step); here one decoder pass gives the output and the taps by
// default: the same loss and gradients (up to float rounding: the two gradient contributions are summed per
// activation instead of per parameter), the running statistics move once (momentum 0.1) per step, and a step costs
// one decoder pass less. extra "decoderPasses" {2} runs the official two passes (bench/favae.ts: bit-for-bit the
// arithmetic of the PyTorch peer).
//
// Map (prediction): z = mu; sum_c (rec - x)^2 + sum_l bilinear(sum_c (adapter_l(s_l) - t_l)^2) to 128 px
// (align_corners=False); the caller blurs (sigma 4) and takes the maximum as the image score.
#include "favae.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>

#include "blocks.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;

constexpr uint64_t kNoiseSeedMix = 0x7a3e5;
constexpr const char* kNoiseStateName = "rng:reparameterisation";

nn::LeakyReLU Leaky() { return nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2)); }

nn::ConvTranspose2d Deconv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
  return nn::ConvTranspose2d(nn::ConvTranspose2dOptions(in, out, k).stride(stride).padding(pad));
}

// Decoder module index -> (output side, channels) at the 128 px input.
struct Tap {
  int64_t index, side, channels;
};
const Tap kTaps[] = {{7, 8, 512}, {10, 16, 512}, {16, 32, 256}, {22, 64, 128}};

struct AdapterImpl : nn::Module {
  nn::Sequential conv{nullptr};
  AdapterImpl(int64_t in, int64_t out) { conv = register_module("conv", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, out, 1)), nn::ReLU(), nn::Conv2d(nn::Conv2dOptions(out, out, 1)))); }
  torch::Tensor forward(const torch::Tensor& x) { return conv->forward(x); }
};
TORCH_MODULE(Adapter);

struct FavaeNet : nn::Module {
  nn::Sequential encode{nullptr}, decode{nullptr};
  nn::ModuleList adapterList{nullptr};
  std::vector<Adapter> adapters;

  FavaeNet(int64_t zdim, const std::vector<int64_t>& tapChannels, const std::vector<int64_t>& teacherChannels) {
    encode = register_module("encode", nn::Sequential());
    auto enc = [&](nn::Conv2d conv, int64_t c) {
      encode->push_back(conv);
      encode->push_back(nn::BatchNorm2d(c));
      encode->push_back(Leaky());
    };
    enc(ConvBias(3, 128, 4, 2, 1), 128);    // 128 -> 64
    enc(ConvBias(128, 128, 4, 2, 1), 128);  // 64 -> 32
    enc(ConvBias(128, 256, 3, 1, 1), 256);
    enc(ConvBias(256, 256, 4, 2, 1), 256);  // 32 -> 16
    enc(ConvBias(256, 512, 3, 1, 1), 512);
    enc(ConvBias(512, 512, 4, 2, 1), 512);  // 16 -> 8
    enc(ConvBias(512, 512, 3, 1, 1), 512);
    enc(ConvBias(512, 32, 3, 1, 1), 32);
    encode->push_back(ConvBias(32, 2 * zdim, 8, 1, 0));  // 8 -> 1: (mu, logvar)
    encode->push_back(nn::Flatten());

    decode = register_module("decode", nn::Sequential());
    decode->push_back(nn::Unflatten(nn::UnflattenOptions(1, {zdim, 1, 1})));
    auto dec = [&](nn::ConvTranspose2d conv, int64_t c) {
      decode->push_back(conv);
      decode->push_back(nn::BatchNorm2d(c));
      decode->push_back(Leaky());
    };
    dec(Deconv(zdim, 32, 8, 1, 0), 32);   // 1 -> 8
    dec(Deconv(32, 512, 3, 1, 1), 512);
    dec(Deconv(512, 512, 3, 1, 1), 512);  // module 7
    dec(Deconv(512, 512, 4, 2, 1), 512);  // module 10: 8 -> 16
    dec(Deconv(512, 256, 3, 1, 1), 256);
    dec(Deconv(256, 256, 4, 2, 1), 256);  // module 16: 16 -> 32
    dec(Deconv(256, 128, 3, 1, 1), 128);
    dec(Deconv(128, 128, 4, 2, 1), 128);  // module 22: 32 -> 64
    decode->push_back(Deconv(128, 3, 4, 2, 1));  // 64 -> 128
    decode->push_back(nn::Identity());
    decode->push_back(nn::Sigmoid());

    adapterList = register_module("adapter", nn::ModuleList());
    for (size_t l = 0; l < teacherChannels.size(); l++) {
      adapters.push_back(Adapter(tapChannels[l], teacherChannels[l]));
      adapterList->push_back(adapters.back());
    }
  }

  // The decoder's output and its outputs after the modules `taps` (in the order asked).
  torch::Tensor Decode(const torch::Tensor& z, const std::vector<int64_t>& taps, std::vector<torch::Tensor>* tapped) {
    tapped->assign(taps.size(), torch::Tensor());
    torch::Tensor x = z;
    int64_t i = 0;
    for (auto& m : *decode) {
      x = m.forward(x);
      for (size_t l = 0; l < taps.size(); l++) {
        if (taps[l] == i) (*tapped)[l] = x;
      }
      i++;
    }
    return x;
  }
};

class Favae : public HeadModel {
 public:
  explicit Favae(const ModelConfig& config)
      : HeadModel(config), generator_(at::make_generator<at::CPUGeneratorImpl>(config.seed ^ kNoiseSeedMix)) {
    size_ = static_cast<int64_t>(Extra(config, "size", {128})[0]);
    if (size_ != 128) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected FAVAE's image size 128 (its encoder reduces 128 px to 1 x 1) but received " + std::to_string(size_));
    }
    zdim_ = static_cast<int64_t>(Extra(config, "zdim", {100})[0]);
    kld_ = Extra(config, "kld", {1.0})[0];
    passes_ = static_cast<int>(Extra(config, "decoderPasses", {1})[0]);
    if (passes_ != 1 && passes_ != 2) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected 1 or 2 decoder passes per FAVAE step");
    if (zdim_ < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected a positive latent size");
    auto sides = Extra(config, "sides", {});
    if (sides.size() != config.teacherChannels.size() || sides.empty()) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected FAVAE's teacher sides (one per teacher level)");
    }
    std::vector<int64_t> tapChannels;
    for (double s : sides) {
      const int64_t side = static_cast<int64_t>(s);
      const int64_t tap = FavaeDecoderTap(side);
      if (tap < 0) {
        throw InvalidArgument("ERR_IMIAD_DIMS", "Expected teacher levels of side 64, 32, 16 or 8 at FAVAE's 128 px input but received side " + std::to_string(side));
      }
      taps_.push_back(tap);
      sides_.push_back(side);
      sides_.push_back(side);
      for (auto& t : kTaps) {
        if (t.index == tap) tapChannels.push_back(t.channels);
      }
    }
    auto net = std::make_shared<FavaeNet>(zdim_, tapChannels, config.teacherChannels);  // default init (the caller holds the seed lock)
    net_ = net.get();
    Finish(net, std::make_unique<torch::optim::Adam>(TrainableParameters(*net), torch::optim::AdamOptions(config.lr).weight_decay(config.weightDecay)));
  }

  double Step(const View& images, const std::vector<View>& teacher, const RunControl& control) override {
    double result = 0;
    OnTrainingThread([&] {
      CheckInputs(images, teacher);
      control.throwIfCancelled();
      net_->train();
      auto x = ViewTensor(images, device_);
      auto h = net_->encode->forward(x);
      auto mu = h.narrow(1, 0, zdim_);
      auto logvar = h.narrow(1, zdim_, zdim_);
      // randn takes the generator's mutex itself.
      auto eps = torch::randn({images.n, zdim_}, generator_, torch::TensorOptions().dtype(torch::kFloat32));
      auto z = eps.to(device_) * (0.5 * logvar).exp() + mu;
      std::vector<torch::Tensor> s;
      auto rec = net_->Decode(z, passes_ == 2 ? std::vector<int64_t>{} : taps_, &s);
      if (passes_ == 2) net_->Decode(z, taps_, &s);  // the official second pass (feature_extractor(z, decode, ...))
      const auto sum = at::Reduction::Sum;
      auto loss = torch::mse_loss(rec, x, sum);
      for (size_t l = 0; l < teacher.size(); l++) loss = loss + torch::mse_loss(net_->adapters[l]->forward(s[l]), ViewTensor(teacher[l], device_), sum);
      loss = loss + kld_ * (0.5 * (-1 - logvar + logvar.exp() + mu.pow(2)).sum());
      result = loss.item<double>();
      if (!std::isfinite(result)) return;  // the weights stay as they were; the caller stops training
      loss.backward();
      optimizer_->step();
      // Gradients set to none (not zeroed): the next backward pass stores them instead of adding to zeros.
      for (auto& group : optimizer_->param_groups()) {
        for (auto& p : group.params()) p.mutable_grad().reset();
      }
    });
    return result;
  }

  void Maps(const View& images, const std::vector<View>& teacher, int64_t outSize, float* out, const RunControl& control) override {
    OnTrainingThread([&] {
      CheckInputs(images, teacher);
      control.throwIfCancelled();
      c10::InferenceMode guard;
      net_->eval();
      auto x = ViewTensor(images, device_);
      auto mu = net_->encode->forward(x).narrow(1, 0, zdim_);
      std::vector<torch::Tensor> s;
      auto rec = net_->Decode(mu, taps_, &s);
      auto map = (rec - x).pow(2).sum(1, true);
      for (size_t l = 0; l < teacher.size(); l++) {
        auto e = (net_->adapters[l]->forward(s[l]) - ViewTensor(teacher[l], device_)).pow(2).sum(1, true);
        map = map + Upsample(e, size_, false);
      }
      if (outSize != size_) map = Upsample(map, outSize, false);
      CopyOut(map, out);
    });
  }

  // Adam's state plus the reparameterisation generator's, so that a loaded model continues with the same noise.
  std::vector<NamedArray> OptimizerState() override {
    auto out = HeadModel::OptimizerState();
    std::lock_guard<std::mutex> lock(mutex_);
    torch::Tensor state;
    {
      std::lock_guard<std::mutex> g(generator_.mutex());
      state = generator_.get_state();
    }
    out.push_back(Named(kNoiseStateName, state.to(torch::kFloat32)));
    return out;
  }

  void LoadOptimizerState(const std::vector<NamedArray>& state) override {
    std::vector<NamedArray> adam;
    const NamedArray* noise = nullptr;
    for (auto& a : state) {
      if (a.name == kNoiseStateName) noise = &a;
      else adam.push_back(a);
    }
    torch::Tensor bytes;
    if (noise != nullptr) {
      for (float v : noise->values) {
        if (!(v >= 0 && v <= 255 && v == std::floor(v))) throw InvalidArgument("ERR_IMIAD_CHECKPOINT", std::string("The checkpoint's ") + kNoiseStateName + " is not a byte array");
      }
      bytes = torch::from_blob(const_cast<float*>(noise->values.data()), {static_cast<int64_t>(noise->values.size())}, torch::kFloat32).to(torch::kUInt8);
      std::lock_guard<std::mutex> g(generator_.mutex());
      auto before = generator_.get_state();
      try {
        generator_.set_state(bytes);
      } catch (const c10::Error&) {
        throw InvalidArgument("ERR_IMIAD_CHECKPOINT", std::string("The checkpoint's ") + kNoiseStateName + " is not a generator state");
      }
      generator_.set_state(before);  // parsed; applied after Adam's state loaded
    }
    HeadModel::LoadOptimizerState(adam);
    if (bytes.defined()) {
      std::lock_guard<std::mutex> g(generator_.mutex());
      generator_.set_state(bytes);
    }
  }

 private:
  // Runs fn on the training thread (runtime.h) with the model's thread count, one call of this model at a time.
  void OnTrainingThread(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, fn);
  }

  void CheckInputs(const View& images, const std::vector<View>& teacher) {
    CheckLevels(teacher, config_.teacherChannels, sides_);
    if (images.data == nullptr || images.c != 3 || images.h != size_ || images.w != size_ || images.n != teacher[0].n) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected FAVAE's image batch [" + std::to_string(teacher[0].n) + ", 3, " + std::to_string(size_) + ", " +
                                                  std::to_string(size_) + "] but received [" + std::to_string(images.n) + ", " + std::to_string(images.c) + ", " +
                                                  std::to_string(images.h) + ", " + std::to_string(images.w) + "]");
    }
  }

  FavaeNet* net_ = nullptr;
  at::Generator generator_;
  int64_t size_ = 128, zdim_ = 100;
  double kld_ = 1.0;
  int passes_ = 1;
  std::vector<int64_t> taps_, sides_;
};

}  // namespace

int64_t FavaeDecoderTap(int64_t side) {
  for (auto& t : kTaps) {
    if (t.side == side) return t.index;
  }
  return -1;
}

std::unique_ptr<Model> CreateFavaeModel(const ModelConfig& config) {
  torch::manual_seed(config.seed);  // the layers' default init
  return std::make_unique<Favae>(config);
}

}  // namespace train
}  // namespace imiad
