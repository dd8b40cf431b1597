// IGD follows Chen et al., "Deep One-Class Classification via Interpolated Gaussian Descriptor" (AAAI 2022) and its
// official code tianyu0207/IGD (p256/ssim_main.py, p256/mvtec_module.py: twoin1Generator256, VisualDiscriminator256),
// with the module and parameter names of that code, so that its PyTorch modules load these weights as they are:
//
// - encoder: the frozen backbone's global-average-pooled output (the caller hands it over as [n, C, 1, 1]; the
//   official freezes torchvision's ResNet-18 up to avgpool) through the trainable ln11 = Linear(C -> latent);
// - generator: ln1 = Linear(latent -> 512 s0^2) viewed as [512, s0, s0] (s0 = side / 64: 4 at 256 px), up1 =
//   UpSampleConv(512, 512, 3), four up-ResidualBlocks (512 -> 512 -> 256 -> 128 -> 64, BatchNorm), bn + ReLU, up2 =
//   UpSampleConv(64, 3, 5), no output activation. UpSampleConv's cat((x, x, x, x), 1) + DepthToSpace(2) is a
//   nearest upsampling by 2 (every sub-pixel takes the same copy), computed here as one;
// - discriminator: conv1 = conv 5x5 stride 2 (3 -> 64), four down-ResidualBlocks with LayerNorm([C, hw, hw]),
//   conv2 = conv 3x3 stride 2, ln1 = Linear(512 (side / 64)^2 -> 1);
// - the generator's BatchNorm layers run in eval mode with their initial statistics (mean 0, variance 1) throughout,
//   as in the official code, whose init_c() calls .eval() before the first step and nothing calls .train() again.
//
// One step (ssim_main.py train()): generator/encoder loss = 0.85 (1 - MS-SSIM) + 0.15 L1 / range (pytorch_msssim
// ms_ssim: window 11, sigma 1.5, weights [.0448, .2856, .3001, .2363, .1333], data_range = range) + mean(1 -
// exp(-|z - c|^2 / sigma)) + 0.1 mean(D(G(z_mix))^2), z_mix = alpha z + (1 - alpha) flip_batch(z), alpha ~ U(0,
// 0.5) per image; Adam(lr, betas (0, 0.9), weight decay 1e-6) on the encoder head and generator. Then, with the
// updated generator, discriminator loss = mean((D(G(z_mix)) - alpha)^2) (an [n] output minus an [n, 1] alpha:
// broadcast to n x n, as the official computes it) + mean(D(x_hat + 0.2 (x - x_hat))^2), x_hat = G(E(x)); Adam(lr,
// betas (0, 0.9)). Both learning rates follow lr (1 - it / steps)^0.9 (poly_lr_scheduler) set before each step.
// The step returns the generator's loss plus the discriminator's.
//
// The Gaussian descriptor (c, sigma) comes from passes over the training set (Calibrate): each pass computes the new
// centre c = mean latent (|c_i| < 0.1 pushed to +-0.1) and, when a centre exists already, sigma = the mean over
// batches of max(1, mean |z - c_old|^2) with the centre from before the pass, as init_sigma runs before init_c in
// the official refresh. The first fit's descriptor is two passes (c, then sigma with that c); the caller refreshes it
// with one pass every 10 epochs.
//
// Image score (the official validation()): 0.5 [0.85 (1 - MS-SSIM) + 0.15 L1 / range] + 0.5 (1 - exp(-|z - c|^2 /
// sigma)), per image. Map (an addition: the official has none): the per-pixel absolute reconstruction error averaged
// over the channels, divided by range.
#include "igd.h"

#include <cmath>
#include <map>
#include <mutex>

#include "blocks.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

// MyConvo2d: one Conv2d named "conv", padding (k - 1) / 2.
struct ConvBox : nn::Module {
  ConvBox(int64_t in, int64_t out, int64_t k, int64_t stride, bool bias) {
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding((k - 1) / 2).bias(bias)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv(x); }
  nn::Conv2d conv{nullptr};
};

// UpSampleConv, MeanPoolConv and ConvMeanPool: a MyConvo2d named "conv" with an upsampling or a mean pooling around it.
struct Resampled : nn::Module {
  Resampled(int64_t in, int64_t out, int64_t k, bool bias) { conv = register_module("conv", std::make_shared<ConvBox>(in, out, k, 1, bias)); }
  std::shared_ptr<ConvBox> conv;
};

// UpSampleConv's upsampling, as the official computes it: cat((x, x, x, x), 1) and DepthToSpace(2) (a nearest
// upsampling by 2). The same ops as the official, not one upsampling kernel, so that the backward pass accumulates the
// gradients in the same order and training follows the official bit for bit (docs/detectors-igd.md, "Fidelity").
// Without autograd (scoring, calibration, the discriminator step's images) only the values count, and a nearest
// upsampling gives the same values in one pass.
torch::Tensor Up2(const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled() || !x.requires_grad()) {
    return F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
  }
  auto o = torch::cat({x, x, x, x}, 1).permute({0, 2, 3, 1}).contiguous();
  const int64_t b = o.size(0), h = o.size(1), w = o.size(2), depth = o.size(3) / 4;
  auto blocks = o.reshape({b, h, w, 4, depth}).split(2, 3);
  std::vector<torch::Tensor> stacks;
  for (auto& t : blocks) stacks.push_back(t.reshape({b, h, 2 * w, depth}));
  o = torch::stack(stacks, 0).transpose(0, 1).permute({0, 2, 1, 3, 4}).reshape({b, 2 * h, 2 * w, depth});
  return o.contiguous().permute({0, 3, 1, 2}).contiguous();
}

// (x[::2, ::2] + x[1::2, ::2] + x[::2, 1::2] + x[1::2, 1::2]) / 4, in the official's order (even sides).
torch::Tensor MeanPool(const torch::Tensor& x) {
  using torch::indexing::None;
  using torch::indexing::Slice;
  auto at = [&](int64_t i, int64_t j) { return x.index({Slice(), Slice(), Slice(i, None, 2), Slice(j, None, 2)}); };
  auto sum = at(0, 0) + at(1, 0);
  sum = sum + at(0, 1);
  sum = sum + at(1, 1);
  return sum / 4;
}

// ResidualBlock(resample='up'): BatchNorm, UpSampleConv shortcut (1x1) and conv_1 (3x3, no bias), conv_2 3x3.
struct UpBlock : nn::Module {
  UpBlock(int64_t in, int64_t out) {
    bn1 = register_module("bn1", nn::BatchNorm2d(in));
    bn2 = register_module("bn2", nn::BatchNorm2d(out));
    shortcut = register_module("conv_shortcut", std::make_shared<Resampled>(in, out, 1, true));
    conv1 = register_module("conv_1", std::make_shared<Resampled>(in, out, 3, false));
    conv2 = register_module("conv_2", std::make_shared<ConvBox>(out, out, 3, 1, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto s = shortcut->conv->forward(Up2(x));
    auto o = conv1->conv->forward(Up2(torch::relu(bn1(x))));
    o = conv2->forward(torch::relu(bn2(o)));
    return s + o;
  }
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  std::shared_ptr<Resampled> shortcut, conv1;
  std::shared_ptr<ConvBox> conv2;
};

// ResidualBlock(resample='down') of the discriminator: LayerNorm([in, hw, hw]) twice, MeanPoolConv shortcut (1x1),
// conv_1 3x3 (no bias), ConvMeanPool conv_2 3x3.
struct DownBlock : nn::Module {
  DownBlock(int64_t in, int64_t out, int64_t hw) {
    bn1 = register_module("bn1", nn::LayerNorm(nn::LayerNormOptions({in, hw, hw})));
    bn2 = register_module("bn2", nn::LayerNorm(nn::LayerNormOptions({in, hw, hw})));
    shortcut = register_module("conv_shortcut", std::make_shared<Resampled>(in, out, 1, true));
    conv1 = register_module("conv_1", std::make_shared<ConvBox>(in, in, 3, 1, false));
    conv2 = register_module("conv_2", std::make_shared<Resampled>(in, out, 3, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto s = shortcut->conv->forward(MeanPool(x));
    auto o = conv1->forward(torch::relu(bn1(x)));
    o = MeanPool(conv2->conv->forward(torch::relu(bn2(o))));
    return s + o;
  }
  nn::LayerNorm bn1{nullptr}, bn2{nullptr};
  std::shared_ptr<Resampled> shortcut, conv2;
  std::shared_ptr<ConvBox> conv1;
};

// twoin1Generator256 without its frozen ResNet (the caller hands over the pooled features).
struct Generator : nn::Module {
  Generator(int64_t channels, int64_t latent, int64_t dim, int64_t side) : dim(dim), s0(side / 64) {
    ln11 = register_module("ln11", nn::Linear(channels, latent));
    ln1 = register_module("ln1", nn::Linear(latent, s0 * s0 * 8 * dim));
    up1 = register_module("up1", std::make_shared<Resampled>(8 * dim, 8 * dim, 3, true));
    rb1 = register_module("rb1", std::make_shared<UpBlock>(8 * dim, 8 * dim));
    rb2 = register_module("rb2", std::make_shared<UpBlock>(8 * dim, 4 * dim));
    rb3 = register_module("rb3", std::make_shared<UpBlock>(4 * dim, 2 * dim));
    rb4 = register_module("rb4", std::make_shared<UpBlock>(2 * dim, dim));
    bn = register_module("bn", nn::BatchNorm2d(dim));
    up2 = register_module("up2", std::make_shared<Resampled>(dim, 3, 5, true));
  }
  torch::Tensor encode(const torch::Tensor& pooled) { return ln11(pooled.reshape({pooled.size(0), -1})); }
  torch::Tensor generate(const torch::Tensor& z) {
    auto x = ln1(z).view({-1, 8 * dim, s0, s0});
    x = up1->conv->forward(Up2(x));
    x = rb4->forward(rb3->forward(rb2->forward(rb1->forward(x))));
    return up2->conv->forward(Up2(torch::relu(bn(x))));
  }
  int64_t dim, s0;
  nn::Linear ln11{nullptr}, ln1{nullptr};
  std::shared_ptr<Resampled> up1, up2;
  std::shared_ptr<UpBlock> rb1, rb2, rb3, rb4;
  nn::BatchNorm2d bn{nullptr};
};

// VisualDiscriminator256 at side `side` (the official's hw = DIM / 2, / 4, / 8, / 16 for DIM = 256).
struct Discriminator : nn::Module {
  Discriminator(int64_t dim, int64_t side) : dim(dim), s1(side / 64) {
    conv1 = register_module("conv1", std::make_shared<ConvBox>(3, dim, 5, 2, true));
    rb1 = register_module("rb1", std::make_shared<DownBlock>(dim, 2 * dim, side / 2));
    rb2 = register_module("rb2", std::make_shared<DownBlock>(2 * dim, 4 * dim, side / 4));
    rb3 = register_module("rb3", std::make_shared<DownBlock>(4 * dim, 8 * dim, side / 8));
    rb4 = register_module("rb4", std::make_shared<DownBlock>(8 * dim, 8 * dim, side / 16));
    conv2 = register_module("conv2", std::make_shared<ConvBox>(8 * dim, 8 * dim, 3, 2, true));
    ln1 = register_module("ln1", nn::Linear(s1 * s1 * 8 * dim, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto o = conv1->forward(x);
    o = rb4->forward(rb3->forward(rb2->forward(rb1->forward(o))));
    o = conv2->forward(o);
    return ln1(o.reshape({o.size(0), -1})).view({-1});
  }
  int64_t dim, s1;
  std::shared_ptr<ConvBox> conv1, conv2;
  std::shared_ptr<DownBlock> rb1, rb2, rb3, rb4;
  nn::Linear ln1{nullptr};
};

struct IgdNet : nn::Module {
  std::shared_ptr<Generator> generator;
  std::shared_ptr<Discriminator> discriminator;
  torch::Tensor c, sigma;
};

// pytorch_msssim's separable Gaussian window (_fspecial_gauss_1d), [1, 1, 1, size].
torch::Tensor GaussianWindow(int64_t size, double sigma) {
  auto coords = torch::arange(size, torch::kFloat32) - static_cast<double>(size / 2);
  auto g = torch::exp(-(coords * coords) / (2 * sigma * sigma));
  return (g / g.sum()).view({1, 1, 1, size});
}

// pytorch_msssim gaussian_filter: along H, then along W, each skipped when the side is below the window.
torch::Tensor GaussianFilter(const torch::Tensor& x, const torch::Tensor& win) {
  const int64_t c = x.size(1), k = win.size(3);
  auto out = x;
  auto w = win.to(x.device()).repeat({c, 1, 1, 1});
  if (out.size(2) >= k) out = F::conv2d(out, w.transpose(2, 3), F::Conv2dFuncOptions().groups(c));
  if (out.size(3) >= k) out = F::conv2d(out, w, F::Conv2dFuncOptions().groups(c));
  return out;
}

// pytorch_msssim ms_ssim(X, Y, data_range, win_size=11, weights) before its averaging: [n, C]. The op sequence is
// the library's (five filterings per level, in its order), so that the gradients are the official's to the bit.
torch::Tensor MsSsim(torch::Tensor x, torch::Tensor y, double range, const torch::Tensor& win, const std::vector<double>& weights) {
  const double c1 = (0.01 * range) * (0.01 * range), c2 = (0.03 * range) * (0.03 * range);
  std::vector<torch::Tensor> levels;
  torch::Tensor ssim;
  for (size_t i = 0; i < weights.size(); i++) {
    auto mu1 = GaussianFilter(x, win), mu2 = GaussianFilter(y, win);
    auto mu1sq = mu1.pow(2), mu2sq = mu2.pow(2), mu12 = mu1 * mu2;
    auto s1 = GaussianFilter(x * x, win) - mu1sq, s2 = GaussianFilter(y * y, win) - mu2sq, s12 = GaussianFilter(x * y, win) - mu12;
    // Left to right, as Python evaluates the library's expressions (see Step on why the order counts).
    auto csTop = 2 * s12 + c2;
    auto cs = csTop / (s1 + s2 + c2);
    auto lumTop = 2 * mu12 + c1;
    auto map = (lumTop / (mu1sq + mu2sq + c1)) * cs;
    if (i + 1 < weights.size()) {
      levels.push_back(torch::relu(cs.flatten(2).mean(-1)));
      const int64_t ph = x.size(2) % 2, pw = x.size(3) % 2;
      auto pool = F::AvgPool2dFuncOptions(2).padding({ph, pw});
      x = F::avg_pool2d(x, pool);
      y = F::avg_pool2d(y, pool);
    } else {
      ssim = torch::relu(map.flatten(2).mean(-1));
    }
  }
  levels.push_back(ssim);
  auto w = torch::tensor(weights, x.options()).view({-1, 1, 1});
  return torch::stack(levels, 0).pow(w).prod(0);
}

NamedArray StepArray(const std::string& name, int64_t step) {
  NamedArray a;
  a.name = "step:" + name;
  a.shape = {2};
  a.values = {static_cast<float>(step >> 24), static_cast<float>(step & 0xFFFFFF)};
  return a;
}

class Igd : public Model {
 public:
  explicit Igd(const ModelConfig& config) : config_(config), device_(TrainDevice(config.device)) {
    if (config.teacherChannels.size() != 1 || config.teacherChannels[0] < 1) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected IGD's one pooled feature level with a positive channel count");
    }
    if (config.threads < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least one thread");
    side_ = static_cast<int64_t>(Extra(config, "size", {256})[0]);
    if (side_ < 64 || side_ % 64 != 0) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected an IGD image side that is a multiple of 64 (64, 128, 256, ...) but received " + std::to_string(side_));
    }
    const auto latent = static_cast<int64_t>(Extra(config, "latent", {128})[0]);
    const auto dim = static_cast<int64_t>(Extra(config, "dim", {64})[0]);
    if (latent < 1 || dim < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected positive IGD latent and dim sizes");
    range_ = Extra(config, "range", {2.1179 + 2.6400})[0];
    gWeightDecay_ = Extra(config, "generatorWeightDecay", {1e-6})[0];
    steps_ = static_cast<int64_t>(Extra(config, "steps", {1})[0]);
    auto net = std::make_shared<IgdNet>();
    torch::manual_seed(config.seed);  // PyTorch's default initialisation (the caller holds the seed lock)
    net->generator = net->register_module("generator", std::make_shared<Generator>(config.teacherChannels[0], latent, dim, side_));
    net->discriminator = net->register_module("discriminator", std::make_shared<Discriminator>(dim, side_));
    net->c = net->register_buffer("c", torch::zeros({1, latent}));
    net->sigma = net->register_buffer("sigma", torch::zeros({1}));
    net->eval();  // the generator's BatchNorm keeps its initial statistics (see the header comment)
    net->to(device_);
    net_ = net;
    optG_ = std::make_unique<torch::optim::Adam>(net_->generator->parameters(),
                                                 torch::optim::AdamOptions(config.lr).betas({config.beta1, config.beta2}).weight_decay(gWeightDecay_));
    optD_ = std::make_unique<torch::optim::Adam>(net_->discriminator->parameters(), torch::optim::AdamOptions(config.lr).betas({config.beta1, config.beta2}));
    window_ = GaussianWindow(11, 1.5).to(device_);
    gen_ = at::detail::createCPUGenerator(config.seed);
  }

  void Configure(const std::string& key, const std::vector<double>& values) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (key != "fit" || values.size() != 2 || values[0] < 1 || values[1] < 0) {
      throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Expected IGD's setting fit = [steps >= 1, fit index >= 0] but received " + key);
    }
    // A new fit: its own poly schedule from lr, a descriptor computed afresh, alpha drawn from seed + fit index.
    steps_ = static_cast<int64_t>(values[0]);
    iteration_ = 0;
    hasC_ = hasSigma_ = false;
    passOpen_ = false;
    gen_ = at::detail::createCPUGenerator(config_.seed + static_cast<uint64_t>(values[1]));
  }

  void Calibrate(const std::vector<View>& features, bool reset, const RunControl& control) override {
    OnTrainingThread([&] {
      CheckFeatures(features);
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      if (reset || !passOpen_) {
        FinishPass();
        sumZ_ = torch::zeros_like(net_->c);
        sumSigma_ = torch::zeros({}, net_->c.options());
        count_ = 0;
        batches_ = 0;
        passOpen_ = true;
      }
      auto z = net_->generator->encode(ViewTensor(features[0], device_));
      sumZ_ += z.sum(0, true);
      count_ += z.size(0);
      if (hasC_) {
        auto t = (z - net_->c).pow(2).sum(1).mean();
        sumSigma_ += t.item<double>() < 1 ? torch::ones_like(t) : t;
        batches_ += 1;
      }
    });
  }

  double Step(const View& images, const std::vector<View>& features, const RunControl& control) override {
    double result = 0;
    OnTrainingThread([&] {
      CheckFeatures(features);
      CheckImages(images, features[0].n);
      FinishPass();
      RequireDescriptor();
      control.throwIfCancelled();
      if (iteration_ <= steps_) {
        const double lr = config_.lr * std::pow(1.0 - static_cast<double>(iteration_) / static_cast<double>(steps_), 0.9);
        for (auto* opt : {optG_.get(), optD_.get()}) {
          for (auto& group : opt->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
        }
      }
      iteration_ += 1;
      auto& g = *net_->generator;
      auto& d = *net_->discriminator;
      auto x = ViewTensor(images, device_);
      auto f = ViewTensor(features[0], device_);
      const int64_t n = x.size(0);
      // Generator and encoder head. The discriminator's weights take no gradient here (the official's are zeroed
      // before its own step), which spares their backward pass.
      for (auto& p : d.parameters()) p.requires_grad_(false);
      auto z = g.encode(f);
      auto fake = g.generate(z);
      // One statement per term, in the official's order: the order in which autograd nodes are created decides the
      // order in which the backward pass adds their gradients (C++ leaves the order of a sum's operands open).
      auto msTerm = 1 - MsSsim(x, fake, range_, window_, kWeights).mean();
      auto l1Term = (x - fake).abs().mean() / range_;
      auto rec = 0.85 * msTerm;
      rec = rec + 0.15 * l1Term;
      auto alpha = torch::empty({n, 1}, torch::kFloat32).uniform_(0, 0.5, gen_).to(device_);
      auto flipped = z.flip({0});
      auto mix = alpha * z;
      mix = mix + (1 - alpha) * flipped;
      auto gmix = g.generate(mix);
      auto inter = d.forward(gmix).pow(2).mean();
      auto svdd = (1 - torch::exp(-(z - net_->c).pow(2).sum(1) / net_->sigma)).mean();
      auto lossG = rec + svdd;
      lossG = lossG + 0.1 * inter;
      const double valueG = lossG.item<double>();
      for (auto& p : d.parameters()) p.requires_grad_(true);
      if (!std::isfinite(valueG)) {
        result = valueG;
        return;
      }
      optG_->zero_grad();
      lossG.backward();
      optG_->step();
      // Discriminator, on the updated generator's images.
      torch::Tensor g2, tmp;
      {
        torch::NoGradGuard guard;
        auto mixed = mix.detach();
        g2 = g.generate(mixed);
        auto recon = g.generate(g.encode(f));
        tmp = recon + 0.2 * (x - recon);
      }
      auto lossD = (d.forward(g2) - alpha).pow(2).mean();
      lossD = lossD + d.forward(tmp).pow(2).mean();
      const double valueD = lossD.item<double>();
      if (!std::isfinite(valueD)) {
        result = valueD;
        return;
      }
      optD_->zero_grad();
      lossD.backward();
      optD_->step();
      result = valueG + valueD;
    });
    return result;
  }

  void Maps(const View& images, const std::vector<View>& features, int64_t outSize, float* out, const RunControl& control) override {
    OnTrainingThread([&] {
      CheckFeatures(features);
      CheckImages(images, features[0].n);
      FinishPass();
      control.throwIfCancelled();
      c10::InferenceMode guard;
      auto x = ViewTensor(images, device_);
      auto recon = net_->generator->generate(net_->generator->encode(ViewTensor(features[0], device_)));
      auto map = (x - recon).abs().mean(1, true) / range_;
      CopyOut(outSize == side_ ? map : Upsample(map, outSize, false), out);
    });
  }

  bool ImageScores(const View& images, const std::vector<View>& features, float* out, const RunControl& control) override {
    OnTrainingThread([&] {
      CheckFeatures(features);
      CheckImages(images, features[0].n);
      FinishPass();
      RequireDescriptor();
      control.throwIfCancelled();
      c10::InferenceMode guard;
      auto x = ViewTensor(images, device_);
      auto z = net_->generator->encode(ViewTensor(features[0], device_));
      auto recon = net_->generator->generate(z);
      auto rec = 0.85 * (1 - MsSsim(x, recon, range_, window_, kWeights).mean(1)) + 0.15 * ((x - recon).abs().flatten(1).mean(1) / range_);
      auto gauss = 1 - torch::exp(-(z - net_->c).pow(2).sum(1) / net_->sigma);
      CopyOut(0.5 * rec + 0.5 * gauss, out);
    });
    return true;
  }

  bool Scores(const std::vector<View>&, float*, const RunControl&) override {
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "IGD's image scores need the images as well as their features");
  }

  // Closes an open calibration pass first, so that the state holds the descriptor it computed.
  std::vector<NamedArray> State() override {
    std::lock_guard<std::mutex> lock(mutex_);
    FinishPass();
    return ModuleState(*net_);
  }

  void LoadState(const std::vector<NamedArray>& state) override {
    std::lock_guard<std::mutex> lock(mutex_);
    LoadModuleState(*net_, state);
    passOpen_ = false;
    hasC_ = hasSigma_ = net_->sigma.item<double>() > 0;
  }

  std::vector<NamedArray> OptimizerState() override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<NamedArray> out;
    for (auto& p : net_->named_parameters()) {
      for (auto* opt : {optG_.get(), optD_.get()}) {
        auto it = opt->state().find(OptimizerKey(p.value()));
        if (it == opt->state().end()) continue;
        auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
        out.push_back(Named("exp_avg:" + p.key(), s.exp_avg()));
        out.push_back(Named("exp_avg_sq:" + p.key(), s.exp_avg_sq()));
        out.push_back(StepArray(p.key(), s.step()));
      }
    }
    return out;
  }

  void LoadOptimizerState(const std::vector<NamedArray>& state) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, const NamedArray*> byName;
    for (auto& a : state) byName[a.name] = &a;
    // Parsed in full before either optimiser is touched: a bad checkpoint leaves them as they were.
    std::vector<std::tuple<torch::optim::Optimizer*, std::string, std::unique_ptr<torch::optim::AdamParamState>>> parsed;
    size_t used = 0;
    auto parse = [&](torch::optim::Optimizer* opt, const std::string& prefix, nn::Module& module) {
      for (auto& p : module.named_parameters()) {
        const std::string name = prefix + p.key();
        auto it = byName.find("step:" + name);
        if (it == byName.end()) continue;
        if (it->second->values.size() != 2) throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser step of " + name + " is not two numbers");
        used++;
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step((static_cast<int64_t>(it->second->values[0]) << 24) + static_cast<int64_t>(it->second->values[1]));
        s->exp_avg(Restore(byName, "exp_avg:" + name, p.value(), &used));
        s->exp_avg_sq(Restore(byName, "exp_avg_sq:" + name, p.value(), &used));
        parsed.emplace_back(opt, OptimizerKey(p.value()), std::move(s));
      }
    };
    parse(optG_.get(), "generator.", *net_->generator);
    parse(optD_.get(), "discriminator.", *net_->discriminator);
    if (used != state.size()) {
      throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser state holds " + std::to_string(state.size()) + " tensors but the model's parameters use " +
                                                        std::to_string(used));
    }
    optG_->state().clear();
    optD_->state().clear();
    for (auto& t : parsed) std::get<0>(t)->state()[std::get<1>(t)] = std::move(std::get<2>(t));
  }

  int64_t ParameterCount() override { return TrainableCount(*net_); }

 private:
  static inline const std::vector<double> kWeights = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};

  void OnTrainingThread(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, fn);
  }

  void CheckFeatures(const std::vector<View>& features) {
    const int64_t c = config_.teacherChannels[0];
    if (features.size() != 1 || features[0].c != c || features[0].h != 1 || features[0].w != 1) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected IGD's pooled features as one level of [n, " + std::to_string(c) + ", 1, 1]");
    }
  }

  void CheckImages(const View& images, int64_t n) {
    if (images.data == nullptr || images.n != n || images.c != 3 || images.h != side_ || images.w != side_) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected IGD's images as [" + std::to_string(n) + ", 3, " + std::to_string(side_) + ", " + std::to_string(side_) +
                                                  "] beside their features");
    }
  }

  void RequireDescriptor() {
    if (!hasC_ || !hasSigma_) {
      throw InvalidArgument("ERR_IMIAD_STATE", "IGD's Gaussian descriptor is not set: calibrate on the training normals (two passes) first");
    }
  }

  // Closes an open calibration pass: sigma from the old centre (when there was one), then the new centre.
  void FinishPass() {
    if (!passOpen_) return;
    passOpen_ = false;
    torch::NoGradGuard guard;
    if (hasC_ && batches_ > 0) {
      net_->sigma.copy_((sumSigma_ / static_cast<double>(batches_)).view({1}));
      hasSigma_ = true;
    }
    auto c = sumZ_ / static_cast<double>(count_);
    const double eps = 0.1;
    c.masked_fill_((c.abs() < eps) & (c < 0), -eps);
    c.masked_fill_((c.abs() < eps) & (c > 0), eps);
    net_->c.copy_(c);
    hasC_ = true;
  }

  ModelConfig config_;
  torch::Device device_;
  std::mutex mutex_;
  std::shared_ptr<IgdNet> net_;
  std::unique_ptr<torch::optim::Adam> optG_, optD_;
  torch::Tensor window_;
  at::Generator gen_;
  int64_t side_ = 256;
  double range_ = 4.7579, gWeightDecay_ = 1e-6;
  int64_t steps_ = 1, iteration_ = 0;
  // The descriptor and the calibration pass in progress.
  bool hasC_ = false, hasSigma_ = false, passOpen_ = false;
  torch::Tensor sumZ_, sumSigma_;
  int64_t count_ = 0, batches_ = 0;
};

}  // namespace

std::unique_ptr<Model> CreateIgdModel(const ModelConfig& config) { return std::make_unique<Igd>(config); }

}  // namespace train
}  // namespace imiad
