// RegAD follows Huang et al., "Registration based Few-Shot Anomaly Detection" (ECCV 2022) and its official code
// MediaBrain-SJTU/RegAD (models/stn.py, models/siamese.py, losses/norm_loss.py, train.py, utils/funcs.py):
//
// - The feature network is ImageNet ResNet-18's conv1..layer3 (its weights imported from the ONNX backbone,
//   native/train/resnet18.h), trained end to end, with a spatial transformer (STNModule, mode rotation_scale) after
//   each of layer1, layer2 and layer3: conv3x3 -> 64, BN, ReLU, max-pool 3/2/1, conv3x3 -> 16, BN, ReLU, max-pool,
//   FC(16 fs^2 -> 1024), ReLU, FC(-> 3) whose weight starts at zero and bias at (0, 1, 1), so that each STN starts as
//   the identity. theta = [[cos a * sx, -sin a, 0], [sin a, cos a * sy, 0]]; affine_grid + grid_sample with
//   reflection padding (bilinear, align_corners=False, PyTorch's defaults). fs is the side after the two max-pools
//   (14, 7, 4 at 224 px: the official 56 // (4 * block_index)).
// - Siamese head: Encoder = conv1x1 256 -> BN -> ReLU -> conv1x1 -> BN -> ReLU -> conv1x1 (bn3 exists but is not
//   used, as in the official forward); Predictor = conv1x1 -> BN -> ReLU -> conv1x1. No biases.
// - Training step (train.py train()): the B queries and the B x K supports go through the network in two calls;
//   the support features are divided by K and summed per query; z1 = E(f_q), z2 = E(f_s), p = P(z);
//   loss = CosLoss(p1, z2) / 2 + CosLoss(p2, z1) / 2 with CosLoss(a, b) = -mean(cosine_similarity(a, b.detach())).
//   SGD (lr 1e-4, momentum 0.9) over every parameter; the caller sets the cosine schedule's rate per epoch.
// - Support Gaussian (test()): the K support images plus 8 small rotations (+-pi/16 .. +-pi/4), 8 translations
//   (+-0.1, +-0.2), a horizontal flip, grey (0.299, 0.587, 0.114) and 3 rotations by 90 degrees, all of them taken by
//   affine_grid/grid_sample with reflection padding (kornia's 90-degree rotation of a square image moves pixel
//   centres onto pixel centres: torch.rot90 here). The STN outputs are warped back to the input frame with the
//   inverse thetas (stn{1,2,3}_output), concatenated PaDiM-style at layer1's resolution (each deeper level repeated
//   over its s x s block: embedding_concat), and a Gaussian per position is fitted: mean and covariance
//   (unbiased) + 0.01 I. The anomaly map is the Mahalanobis distance, upsampled bilinearly (align_corners=False).
//
// The official inverts a 448 x 448 covariance per position (2.5 GB at 224 px). With N = 21 K support embeddings,
// the covariance is 0.01 I + U^T U (U = the centred embeddings / sqrt(N - 1), N x C), so by the Woodbury identity
// d^T S^-1 d = (|d|^2 - |L^-1 U d|^2) / 0.01 with L the Cholesky factor of the N x N matrix 0.01 I + U U^T: the same
// distance from N x C + N x N numbers per position (N = 42 for K = 2), solved in float64.
#include "regad.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <mutex>

#include "blocks.h"
#include "resnet18.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

constexpr double kCovarianceRidge = 0.01;
// Images per forward pass when the support set and the test images are embedded (eval mode: any size gives the
// same numbers).
constexpr int64_t kEmbedChunk = 32;
// Positions per float64 Woodbury solve (memory bound: positions x N x C doubles).
constexpr int64_t kPositionChunk = 128;

// ceil(s / 2): the side after a 3x3, stride 2, padding 1 max-pool (and after ResNet's 7x7/2 conv1).
int64_t Half(int64_t s) { return (s + 1) / 2; }

// affine_grid + grid_sample as the official calls them (bilinear, reflection padding, align_corners=False).
torch::Tensor Warp(const torch::Tensor& x, const torch::Tensor& theta) {
  auto grid = F::affine_grid(theta, x.sizes(), /*align_corners=*/false);
  return F::grid_sample(x, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kReflection).align_corners(false));
}

// The inverse of each [2, 3] affine theta (as a 3 x 3 matrix with the row 0 0 1), as the official _fixstn uses it.
torch::Tensor InverseTheta(const torch::Tensor& theta) {
  const int64_t b = theta.size(0);
  auto row = torch::tensor({0.0f, 0.0f, 1.0f}, theta.options()).view({1, 1, 3}).expand({b, 1, 3});
  return torch::linalg_inv(torch::cat({theta, row}, 1)).narrow(1, 0, 2);
}

struct StnImpl : nn::Module {
  nn::Sequential conv{nullptr}, fc{nullptr};
  StnImpl(int64_t in, int64_t side) {
    const int64_t fs = Half(Half(side));
    conv = register_module("conv", nn::Sequential(ConvNoBias(in, 64, 3, 1, 1), nn::BatchNorm2d(64), nn::ReLU(),
                                                  nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)), ConvNoBias(64, 16, 3, 1, 1),
                                                  nn::BatchNorm2d(16), nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1))));
    auto last = nn::Linear(1024, 3);
    fc = register_module("fc", nn::Sequential(nn::Linear(16 * fs * fs, 1024), nn::ReLU(), last));
    torch::NoGradGuard guard;
    last->weight.zero_();
    last->bias.copy_(torch::tensor({0.0f, 1.0f, 1.0f}));
  }
  // The warped feature and its theta [b, 2, 3].
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    const int64_t b = x.size(0);
    auto p = fc->forward(conv->forward(x).reshape({b, -1}));  // reshape: x may be channels-last (resnet18.h)
    // Built op for op as the official (a zero matrix, then slice assignments, cos and sin taken twice), so that
    // autograd sums the angle's gradient paths in the official order: float sums depend on it.
    auto theta = torch::zeros({b, 2, 3}, x.options().requires_grad(c10::GradMode::is_enabled() && !c10::InferenceMode::is_enabled())) + 0;
    auto at = [&](int64_t i, int64_t j) { return theta.select(1, i).select(1, j); };
    at(0, 0).fill_(1.0);
    at(1, 1).fill_(1.0);
    auto angle = p.select(1, 0);
    at(0, 0).copy_(torch::cos(angle) * p.select(1, 1));
    at(0, 1).copy_(-torch::sin(angle));
    at(1, 0).copy_(torch::sin(angle));
    at(1, 1).copy_(torch::cos(angle) * p.select(1, 2));
    return {Warp(x, theta), theta};
  }
};
TORCH_MODULE(Stn);

struct EncoderImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  explicit EncoderImpl(int64_t c) {
    conv1 = register_module("conv1", ConvNoBias(c, c, 1, 1, 0));
    bn1 = register_module("bn1", nn::BatchNorm2d(c));
    conv2 = register_module("conv2", ConvNoBias(c, c, 1, 1, 0));
    bn2 = register_module("bn2", nn::BatchNorm2d(c));
    conv3 = register_module("conv3", ConvNoBias(c, c, 1, 1, 0));
    bn3 = register_module("bn3", nn::BatchNorm2d(c));  // unused in the official forward; kept for its state
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv3(torch::relu(bn2(conv2(torch::relu(bn1(conv1(x))))))); }
};
TORCH_MODULE(Encoder);

struct PredictorImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  explicit PredictorImpl(int64_t c) {
    conv1 = register_module("conv1", ConvNoBias(c, c, 1, 1, 0));
    bn1 = register_module("bn1", nn::BatchNorm2d(c));
    conv2 = register_module("conv2", ConvNoBias(c, c, 1, 1, 0));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv2(torch::relu(bn1(conv1(x)))); }
};
TORCH_MODULE(Predictor);

struct RegadNetImpl : nn::Module {
  ResNet18 resnet{nullptr};
  Stn stn1{nullptr}, stn2{nullptr}, stn3{nullptr};
  Encoder enc{nullptr};
  Predictor pred{nullptr};
  RegadNetImpl(int64_t side, bool channelsLast) {
    resnet = register_module("resnet", ResNet18(3, channelsLast));
    const int64_t l1 = Half(Half(side));
    stn1 = register_module("stn1", Stn(64, l1));
    stn2 = register_module("stn2", Stn(128, Half(l1)));
    stn3 = register_module("stn3", Stn(256, Half(Half(l1))));
    enc = register_module("enc", Encoder(256));
    pred = register_module("pred", Predictor(256));
  }

  // The registered layer3 feature (STN(x) of the official). With `back`, also the three STN outputs warped back to
  // the input frame (stn1_output .. stn3_output, from detached features).
  torch::Tensor forward(const torch::Tensor& x, std::vector<torch::Tensor>* back = nullptr) {
    auto h = resnet->stem(x);
    auto [x1, t1] = stn1(resnet->layers[0]->forward(h));
    auto [x2, t2] = stn2(resnet->layers[1]->forward(x1));
    auto [x3, t3] = stn3(resnet->layers[2]->forward(x2));
    if (back) {
      auto i1 = InverseTheta(t1.detach()), i2 = InverseTheta(t2.detach()), i3 = InverseTheta(t3.detach());
      *back = {Warp(x1.detach(), i1), Warp(Warp(x2.detach(), i2), i1), Warp(Warp(Warp(x3.detach(), i3), i2), i1)};
    }
    return x3;
  }
};
TORCH_MODULE(RegadNet);

// -mean(cosine_similarity(a, sg(b))) over channels (losses/norm_loss.py CosLoss).
torch::Tensor CosLoss(const torch::Tensor& a, const torch::Tensor& b) { return -torch::cosine_similarity(a, b.detach(), 1).mean(); }

// embedding_concat of the three levels: [n, 64 + 128 + 256, h1, w1], each deeper level repeated over its block.
torch::Tensor Embedding(const std::vector<torch::Tensor>& levels) {
  std::vector<torch::Tensor> parts{levels[0]};
  for (size_t i = 1; i < levels.size(); i++) {
    const int64_t s = levels[0].size(2) / levels[i].size(2);
    parts.push_back(levels[i].repeat_interleave(s, 2).repeat_interleave(s, 3));
  }
  return torch::cat(parts, 1);
}

// The official support augmentations (train.py test()) of [k, 3, h, w] images in [0, 1]: 21 k images.
torch::Tensor AugmentSupport(const torch::Tensor& s) {
  const int64_t k = s.size(0);
  std::vector<torch::Tensor> out{s};
  auto affine = [&](double a, double b, double c, double d, double tx, double ty) {
    auto theta = torch::tensor({static_cast<float>(a), static_cast<float>(b), static_cast<float>(tx), static_cast<float>(c), static_cast<float>(d),
                                static_cast<float>(ty)},
                               s.options())
                     .view({1, 2, 3})
                     .repeat({k, 1, 1});
    return Warp(s, theta);
  };
  for (double angle : {-M_PI / 4, -3 * M_PI / 16, -M_PI / 8, -M_PI / 16, M_PI / 16, M_PI / 8, 3 * M_PI / 16, M_PI / 4}) {
    // get_rot_mat builds the matrix from a float32 angle.
    const float f = static_cast<float>(angle);
    out.push_back(affine(std::cos(f), -std::sin(f), std::sin(f), std::cos(f), 0, 0));
  }
  for (auto ab : std::vector<std::pair<double, double>>{{0.2, 0.2}, {-0.2, 0.2}, {-0.2, -0.2}, {0.2, -0.2}, {0.1, 0.1}, {-0.1, 0.1}, {-0.1, -0.1}, {0.1, -0.1}}) {
    out.push_back(affine(1, 0, 0, 1, ab.first, ab.second));
  }
  out.push_back(s.flip({3}));
  auto grey = s.select(1, 0) * 0.299 + s.select(1, 1) * 0.587 + s.select(1, 2) * 0.114;
  out.push_back(grey.unsqueeze(1).repeat({1, 3, 1, 1}));
  for (int64_t r = 1; r <= 3; r++) out.push_back(torch::rot90(s, r, {2, 3}));
  return torch::cat(out, 0);
}

class Regad : public Model {
 public:
  explicit Regad(const ModelConfig& config) : config_(config), device_(TrainDevice(config.device)) {
    auto side = Extra(config, "side", {});
    if (side.size() != 1 || side[0] < 16 || static_cast<int64_t>(side[0]) % 16 != 0) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected RegAD's image side (extra.side) as a multiple of 16");
    }
    side_ = static_cast<int64_t>(side[0]);
    torch::manual_seed(config.seed);  // the STN and siamese convs' default init (the caller holds the seed lock)
    net_ = RegadNet(side_, ChannelsLast(config));
    LoadBackboneWeights(config);
    net_->to(device_);
    optimizer_ = std::make_unique<torch::optim::SGD>(net_->parameters(), torch::optim::SGDOptions(config.lr).momentum(config.momentum));
  }

  double Step(const View& images, const std::vector<View>& support, const RunControl& control) override {
    double result = 0;
    OnTrainingThread([&] {
      CheckImages(images, "query");
      if (support.size() != 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected RegAD's support images as one [n k, 3, h, w] batch");
      CheckImages(support[0], "support");
      if (support[0].n % images.n != 0) {
        throw InvalidArgument("ERR_IMIAD_DIMS", "Expected K support images per query (" + std::to_string(images.n) + " queries) but received " +
                                                    std::to_string(support[0].n));
      }
      const int64_t b = images.n, k = support[0].n / images.n;
      control.throwIfCancelled();
      net_->train();
      auto query = net_->forward(ViewTensor(images, device_));
      auto s = net_->forward(ViewTensor(support[0], device_)) / static_cast<double>(k);
      s = s.view({b, k, s.size(1), s.size(2), s.size(3)}).sum(1);
      auto z1 = net_->enc(query), z2 = net_->enc(s);
      auto p1 = net_->pred(z1), p2 = net_->pred(z2);
      auto loss = CosLoss(p1, z2) / 2 + CosLoss(p2, z1) / 2;
      result = loss.item<double>();
      if (!std::isfinite(result)) return;  // the weights stay as they were; the caller reports the loss
      loss.backward();
      optimizer_->step();
      for (auto& p : net_->parameters()) p.mutable_grad().reset();
    });
    return result;
  }

  // The support set [k, 3, h, w]: augmented as the official, embedded, and the per-position Gaussian fitted.
  void Calibrate(const std::vector<View>& support, bool reset, const RunControl& control) override {
    OnTrainingThread([&] {
      if (!reset) throw InvalidArgument("ERR_IMIAD_ARGUMENT", "RegAD's support set is given whole (reset = true)");
      if (support.size() != 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected RegAD's support images as one [k, 3, h, w] batch");
      CheckImages(support[0], "support");
      control.throwIfCancelled();
      c10::InferenceMode guard;
      auto e = Embed(AugmentSupport(ViewTensor(support[0], device_)), control);  // [n, c, p]
      const int64_t n = e.size(0);
      if (n < 2) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least 2 support embeddings");
      mean_ = e.mean(0).t().contiguous();                                                           // [p, c]
      u_ = ((e - e.mean(0, true)) / std::sqrt(static_cast<double>(n - 1))).permute({2, 0, 1}).contiguous();  // [p, n, c]
      const int64_t p = u_.size(0);
      chol_ = torch::empty({p, n, n}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
      auto ridge = kCovarianceRidge * torch::eye(n, chol_.options()).unsqueeze(0);
      for (int64_t from = 0; from < p; from += kPositionChunk) {
        const int64_t m = std::min(kPositionChunk, p - from);
        auto ud = u_.narrow(0, from, m).to(torch::kFloat64);
        chol_.narrow(0, from, m).copy_(torch::linalg_cholesky(torch::bmm(ud, ud.transpose(1, 2)) + ridge));
      }
    });
  }

  void Maps(const View& images, const std::vector<View>&, int64_t outSize, float* out, const RunControl& control) override {
    OnTrainingThread([&] {
      CheckImages(images, "test");
      if (!mean_.defined()) throw InvalidArgument("ERR_IMIAD_STATE", "RegAD has no support Gaussian: calibrate on the support set first");
      control.throwIfCancelled();
      c10::InferenceMode guard;
      auto e = Embed(ViewTensor(images, device_), control);  // [t, c, p]
      const int64_t t = e.size(0), p = e.size(2);
      auto delta = e.permute({2, 0, 1}) - mean_.unsqueeze(1);  // [p, t, c]
      auto dist = torch::empty({p, t}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
      for (int64_t from = 0; from < p; from += kPositionChunk) {
        const int64_t m = std::min(kPositionChunk, p - from);
        auto d = delta.narrow(0, from, m).to(torch::kFloat64);
        auto v = torch::bmm(u_.narrow(0, from, m).to(torch::kFloat64), d.transpose(1, 2));  // [m, n, t]
        auto w = torch::linalg_solve_triangular(chol_.narrow(0, from, m), v, /*upper=*/false);
        dist.narrow(0, from, m).copy_(((d.pow(2).sum(2) - w.pow(2).sum(1)) / kCovarianceRidge).clamp_min(0).sqrt());
      }
      auto map = dist.to(torch::kFloat32).t().reshape({t, 1, side_ / 4, side_ / 4});
      CopyOut(Upsample(map, outSize, false), out);
    });
  }

  void SetLearningRate(double lr) override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
  }

  std::vector<NamedArray> State() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return ModuleState(*net_);
  }

  void LoadState(const std::vector<NamedArray>& state) override {
    std::lock_guard<std::mutex> lock(mutex_);
    LoadModuleState(*net_, state);
    mean_ = u_ = chol_ = torch::Tensor();  // the Gaussian belongs to the old weights
  }

  // SGD's momentum buffers, "momentum:<parameter>" (as STPM's).
  std::vector<NamedArray> OptimizerState() override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<NamedArray> out;
    auto& states = optimizer_->state();
    for (auto& p : net_->named_parameters()) {
      auto it = states.find(OptimizerKey(p.value()));
      if (it == states.end()) continue;
      auto& s = static_cast<torch::optim::SGDParamState&>(*it->second);
      if (s.momentum_buffer().defined()) out.push_back(Named("momentum:" + p.key(), s.momentum_buffer()));
    }
    return out;
  }

  void LoadOptimizerState(const std::vector<NamedArray>& state) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, const NamedArray*> byName;
    for (auto& a : state) byName[a.name] = &a;
    std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>> parsed;
    size_t used = 0;
    for (auto& p : net_->named_parameters()) {
      if (!byName.count("momentum:" + p.key())) continue;
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(Restore(byName, "momentum:" + p.key(), p.value(), &used));
      parsed.emplace_back(OptimizerKey(p.value()), std::move(s));
    }
    if (used != state.size()) {
      throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser state holds " + std::to_string(state.size()) +
                                                        " tensors but the model's parameters use " + std::to_string(used));
    }
    auto& states = optimizer_->state();
    states.clear();
    for (auto& kv : parsed) states[kv.first] = std::move(kv.second);
  }

  int64_t ParameterCount() override { return TrainableCount(*net_); }

 private:
  void OnTrainingThread(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, fn);
  }

  void CheckImages(const View& v, const char* what) {
    if (v.data == nullptr || v.n < 1 || v.c != 3 || v.h != side_ || v.w != side_) {
      throw InvalidArgument("ERR_IMIAD_DIMS", std::string("Expected RegAD's ") + what + " images as [n, 3, " + std::to_string(side_) + ", " +
                                                  std::to_string(side_) + "] but received [" + std::to_string(v.n) + ", " + std::to_string(v.c) +
                                                  ", " + std::to_string(v.h) + ", " + std::to_string(v.w) + "]");
    }
  }

  // The ImageNet weights of conv1..layer3 (torchvision names, ModelConfig::weights: all of them when given); none
  // given = torchvision's initialisation from the seed (a checkpoint then replaces every weight).
  void LoadBackboneWeights(const ModelConfig& config) {
    if (!config.weights.empty()) net_->resnet->loadWeights(WeightTensors(config.weights));
  }

  // [n, 448, p] registered embeddings of eval-mode forward passes over chunks of images.
  torch::Tensor Embed(const torch::Tensor& images, const RunControl& control) {
    net_->eval();
    std::vector<torch::Tensor> parts;
    for (int64_t from = 0; from < images.size(0); from += kEmbedChunk) {
      control.throwIfCancelled();
      std::vector<torch::Tensor> back;
      net_->forward(images.narrow(0, from, std::min(kEmbedChunk, images.size(0) - from)), &back);
      auto e = Embedding(back);
      parts.push_back(e.reshape({e.size(0), e.size(1), -1}));
    }
    return torch::cat(parts, 0);
  }

  ModelConfig config_;
  torch::Device device_;
  int64_t side_ = 224;
  RegadNet net_{nullptr};
  std::unique_ptr<torch::optim::SGD> optimizer_;
  // The support Gaussian: mean [p, c], scaled centred embeddings [p, n, c], Cholesky of 0.01 I + U U^T [p, n, n].
  torch::Tensor mean_, u_, chol_;
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<Model> CreateRegadModel(const ModelConfig& config) {
  if (config.kind == "regad") return std::make_unique<Regad>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown RegAD kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
