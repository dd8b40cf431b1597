// The normalizing-flow heads on frozen features (flows.h): the coupling block of the old FrEIA versions and two
// detectors built from it.
//
// FastFlow follows Yu et al., "FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows"
// (2021) as gathierry/FastFlow implements it (the official code was never released; open-iad copies gathierry):
// per tapped level, LayerNorm([c, h, w]) with affine weights, then 8 AllInOneBlocks with a conv subnet (3x3 on even,
// 1x1 on odd blocks, hidden ratio 1), clamp 2, hard permutation; loss = sum over levels of
// mean_b(0.5 sum_chw z^2 - logdet); Adam. Map = mean over levels of -exp(-0.5 mean_c z^2), each upsampled bilinearly
// (align_corners=False).
//
// CFlow follows Gudovskiy et al., "CFLOW-AD" (WACV 2022) and gudovskiy/cflow-ad: per level one conditional flow of
// 8 AllInOneBlocks over the feature vectors ("fibers"), subnet Linear(c1 + P -> 2(c1 + P)), ReLU, Linear(-> 2 c2),
// clamp 1.9, a random orthogonal permutation, condition = 2-D sin/cos encoding with P = 128. Per batch and level the
// fibers are shuffled (seeded) and fed in chunks of N = 256 with one Adam step per chunk;
// loss = -logsigmoid(log p / C). The learning rate warms up linearly from lr/10 over 2 meta-epochs, then follows
// a cosine per meta-epoch down to lr 1e-3 (warmup_learning_rate / adjust_learning_rate). Map per level:
// exp(log p / C - m_l), m_l the maximum over the TRAINING normals (the official code takes it over the test set),
// upsampled bilinearly (align_corners=True) and summed; map = levels - sum.
//
// BGAD (Yao et al., "Explicit Boundary Guided Semi-Push-Pull Contrastive Learning for Supervised Anomaly Detection",
// CVPR 2023; xcyao00/BGAD engines/bgad_fas_train_engine.py, losses/losses.py) is CFlow's decoder with another loss
// (kind "bgad"): Step's `images` are the batch's pixel masks [n, 1, S, S] (null: all normal), downsampled (nearest)
// to each level; chunks of N = 4096 fibers. Meta-epoch 0 (Configure("epoch", {0})): chunks holding no anomalous fiber,
// -logsigmoid(log p / C); chunks with one are skipped. Later meta-epochs: a chunk without anomalous fibers takes the
// focal-weighted ML loss mean(-logsigmoid(l) w_n(l)); a chunk with some takes mean over its normal fibers of
// -logsigmoid(l) w_n(l) plus lambda (L_n + L_a): b_n = the floor(beta count_n)-th smallest normal l, / 10; b_a = b_n - tau;
// L_n = mean over normal l / 10 <= b_n of (b_n - l / 10) w_n; L_a = mean over anomalous l / 10 >= b_a of
// (l / 10 - b_a) w_a (weights detached). Focal weights (normal_fl_weighting, abnormal_fl_weighting) of q = l / 10:
// w_n = 1 where q > -0.2, else 11.7 (1 - e^q)^0.5 |q|; w_a = 1 where q <= -1, else 0.53 (1 + e^q)^2 / |q|. An empty L_a
// (no anomalous fiber above b_a) counts 0: the official loss value is then NaN, its gradient the same. The caller sets
// the learning rate before every batch (SetLearningRate: the official warm-up + cosine, lib/methods/bgad.ts).
#include "flows.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <mutex>

#include "blocks.h"

namespace imiad {
namespace train {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

AllInOneBlockImpl::AllInOneBlockImpl(const CouplingOptions& o) : options_(o) {
  const int64_t c = o.channels;
  split1_ = c - c / 2;
  split2_ = c / 2;
  const int64_t in = split1_ + o.conditionChannels;
  if (o.rank == 2) {
    const int64_t hidden = static_cast<int64_t>(static_cast<double>(in) * o.hiddenRatio);
    const int64_t pad = o.kernel / 2;
    subnet_ = register_module("subnet", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, hidden, o.kernel).padding(pad)), nn::ReLU(),
                                                       nn::Conv2d(nn::Conv2dOptions(hidden, 2 * split2_, o.kernel).padding(pad))));
  } else {
    subnet_ = register_module("subnet", nn::Sequential(nn::Linear(in, 2 * in), nn::ReLU(), nn::Linear(2 * in, 2 * split2_)));
  }
  std::vector<int64_t> shape = {1, c};
  if (o.rank == 2) shape = {1, c, 1, 1};
  globalScale_ = register_parameter("global_scale", torch::full(shape, 2.0 * std::log(std::exp(5.0) - 1.0)));
  globalOffset_ = register_parameter("global_offset", torch::zeros(shape));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  if (o.softPermutation) {
    // A Haar-random orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal moved into Q.
    auto g = torch::randn({c, c}, gen, torch::TensorOptions().dtype(torch::kFloat64));
    auto qr = torch::linalg_qr(g);
    auto q = std::get<0>(qr) * torch::sign(torch::diagonal(std::get<1>(qr))).unsqueeze(0);
    permutation_ = register_buffer("w_perm", q.to(torch::kFloat32).contiguous());
  } else {
    permutation_ = register_buffer("perm", torch::randperm(c, gen, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32));
  }
}

std::pair<torch::Tensor, torch::Tensor> AllInOneBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& condition) {
  auto parts = torch::split(x, {split1_, split2_}, 1);
  auto x1 = parts[0], x2 = parts[1];
  torch::Tensor a;
  if (options_.splitCondition && options_.rank == 1 && condition.defined()) {
    // The first Linear split by columns: no gradient for the condition's columns in backward.
    auto first = subnet_[0]->as<nn::Linear>();
    auto w = first->weight;
    auto h = F::linear(x1, w.narrow(1, 0, split1_), first->bias) + F::linear(condition, w.narrow(1, split1_, options_.conditionChannels));
    a = subnet_[2]->as<nn::Linear>()->forward(torch::relu(h)) * 0.1;
  } else {
    a = subnet_->forward(condition.defined() ? torch::cat({x1, condition}, 1) : x1) * 0.1;
  }
  auto s = options_.clamp * torch::tanh(a.narrow(1, 0, split2_));
  x2 = x2 * torch::exp(s) + a.narrow(1, split2_, split2_);
  std::vector<int64_t> sumDims;
  for (int64_t d = 1; d < x.dim(); d++) sumDims.push_back(d);
  auto logdet = s.sum(sumDims);
  auto g = 0.1 * F::softplus(globalScale_, F::SoftplusFuncOptions().beta(0.5));
  auto y = torch::cat({x1, x2}, 1) * g + globalOffset_;
  if (options_.softPermutation) {
    y = options_.rank == 2 ? torch::conv2d(y, permutation_.view({options_.channels, options_.channels, 1, 1})) : torch::linear(y, permutation_);
  } else {
    y = torch::index_select(y, 1, permutation_.to(torch::kInt64));
  }
  const double pixels = options_.rank == 2 ? static_cast<double>(x.size(2) * x.size(3)) : 1.0;
  logdet = logdet + pixels * torch::log(g).sum();
  return {y, logdet};
}

FlowSequenceImpl::FlowSequenceImpl(int64_t blocks, CouplingOptions options, const std::function<int64_t(int64_t)>& kernelOfBlock) {
  const uint64_t seed = options.seed;
  for (int64_t i = 0; i < blocks; i++) {
    options.kernel = kernelOfBlock(i);
    options.seed = seed * 1000003ULL + static_cast<uint64_t>(i);
    blocks_.push_back(register_module(std::to_string(i), AllInOneBlock(options)));
  }
}

std::pair<torch::Tensor, torch::Tensor> FlowSequenceImpl::forward(const torch::Tensor& x, const torch::Tensor& condition) {
  torch::Tensor z = x, logdet = torch::zeros({x.size(0)}, x.options());
  for (auto& b : blocks_) {
    auto out = b->forward(z, condition);
    z = out.first;
    logdet = logdet + out.second;
  }
  return {z, logdet};
}

CrossConvolutionsImpl::CrossConvolutionsImpl(int64_t in, int64_t out, int64_t hidden, int64_t kernel) {
  const int64_t pad = kernel / 2;
  auto conv = [&](int64_t a, int64_t b, int64_t stride) { return nn::Conv2d(nn::Conv2dOptions(a, b, kernel).padding(pad).stride(stride)); };
  for (int i = 0; i < 3; i++) first_.push_back(register_module("conv_scale" + std::to_string(i) + "_0", conv(in, hidden, 1)));
  for (int i = 0; i < 3; i++) second_.push_back(register_module("conv_scale" + std::to_string(i) + "_1", conv(hidden, out, 1)));
  up10_ = register_module("up_conv10", conv(hidden, out, 1));
  up21_ = register_module("up_conv21", conv(hidden, out, 1));
  down01_ = register_module("down_conv01", conv(hidden, out, 2));
  down12_ = register_module("down_conv12", conv(hidden, out, 2));
  for (int i = 0; i < 3; i++) gamma_.push_back(register_parameter("gamma" + std::to_string(i), torch::zeros({1})));
}

std::vector<torch::Tensor> CrossConvolutionsImpl::forward(const std::vector<torch::Tensor>& x) {
  std::vector<torch::Tensor> y(3), out(3);
  for (int i = 0; i < 3; i++) y[i] = F::leaky_relu(first_[i](x[i]), F::LeakyReLUFuncOptions().negative_slope(0.1));
  for (int i = 0; i < 3; i++) out[i] = second_[i](y[i]);
  auto up = [](const torch::Tensor& t) {
    return F::interpolate(t, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kBilinear).align_corners(false));
  };
  auto y1Up = up10_(up(y[1]));
  auto y2Up = up21_(up(y[2]));
  auto y0Down = down01_(y[0]);
  auto y1Down = down12_(y[1]);
  out[0] = (out[0] + y1Up) * gamma_[0];
  out[1] = (out[1] + y0Down + y2Up) * gamma_[1];
  out[2] = (out[2] + y1Down) * gamma_[2];
  return out;
}

CrossScaleBlockImpl::CrossScaleBlockImpl(int64_t channels, int64_t hidden, int64_t kernel, double clamp, uint64_t seed) : clamp_(clamp) {
  split1_ = channels / 2;
  split2_ = channels - channels / 2;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (int i = 0; i < 3; i++) {
    auto perm = torch::randperm(channels, gen, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32);
    permutations_.push_back(register_buffer("perm" + std::to_string(i), perm));
  }
  s1_ = register_module("s1", CrossConvolutions(split1_, 2 * split2_, hidden, kernel));
  s2_ = register_module("s2", CrossConvolutions(split2_, 2 * split1_, hidden, kernel));
}

std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> CrossScaleBlockImpl::forward(const std::vector<torch::Tensor>& x) {
  auto logE = [&](const torch::Tensor& s) { return clamp_ * 0.636 * torch::atan(s / clamp_); };
  std::vector<torch::Tensor> a(3), b(3), ya(3), s2(3), y(3), logdet(3);
  for (int i = 0; i < 3; i++) {
    auto p = torch::index_select(x[i], 1, permutations_[i].to(torch::kInt64));
    a[i] = p.narrow(1, 0, split1_);
    b[i] = p.narrow(1, split1_, split2_);
  }
  auto r2 = s2_->forward(b);
  for (int i = 0; i < 3; i++) {
    s2[i] = r2[i].narrow(1, 0, split1_);
    ya[i] = torch::exp(logE(s2[i])) * a[i] + r2[i].narrow(1, split1_, split1_);
  }
  auto r1 = s1_->forward(ya);
  for (int i = 0; i < 3; i++) {
    auto s1 = r1[i].narrow(1, 0, split2_);
    auto yb = torch::exp(logE(s1)) * b[i] + r1[i].narrow(1, split2_, split2_);
    y[i] = torch::clamp(torch::cat({ya[i], yb}, 1), -1e6, 1e6);
    logdet[i] = logE(s1).sum({1, 2, 3}) + logE(s2[i]).sum({1, 2, 3});
  }
  return {y, logdet};
}

namespace {

struct FastFlowNet : nn::Module {
  std::vector<nn::LayerNorm> norms;
  std::vector<FlowSequence> flows;
  nn::ModuleList normList = register_module("norms", nn::ModuleList());
  nn::ModuleList flowList = register_module("flows", nn::ModuleList());
};

class FastFlow : public HeadModel {
 public:
  explicit FastFlow(const ModelConfig& config) : HeadModel(config) {
    sides_.clear();
    for (double s : Extra(config, "sides", {})) sides_.push_back(static_cast<int64_t>(s));
    if (sides_.size() != 2 * config.teacherChannels.size()) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected FastFlow's feature sides (h, w per level)");
    }
    const int64_t blocks = static_cast<int64_t>(Extra(config, "blocks", {8})[0]);
    const double clamp = Extra(config, "clamp", {2.0})[0];
    const bool conv3x3Only = Extra(config, "conv3x3Only", {0})[0] != 0;
    const double hiddenRatio = Extra(config, "hiddenRatio", {1.0})[0];
    auto net = std::make_shared<FastFlowNet>();
    torch::manual_seed(config.seed);  // the conv subnets' default init (the caller holds the seed lock)
    for (size_t i = 0; i < config.teacherChannels.size(); i++) {
      const int64_t c = config.teacherChannels[i];
      net->norms.push_back(nn::LayerNorm(nn::LayerNormOptions({c, sides_[2 * i], sides_[2 * i + 1]}).elementwise_affine(true)));
      net->normList->push_back(net->norms.back());
      CouplingOptions o;
      o.channels = c;
      o.rank = 2;
      o.clamp = clamp;
      o.hiddenRatio = hiddenRatio;
      o.seed = config.seed + 7919ULL * (i + 1);
      net->flows.push_back(FlowSequence(blocks, o, [&](int64_t b) { return (b % 2 == 1 && !conv3x3Only) ? 1 : 3; }));
      net->flowList->push_back(net->flows.back());
    }
    net_ = net.get();
    Finish(net, std::make_unique<torch::optim::Adam>(TrainableParameters(*net), torch::optim::AdamOptions(config.lr).weight_decay(config.weightDecay)));
  }

  double Step(const View&, const std::vector<View>& features, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, sides_);
      control.throwIfCancelled();
      net_->train();
      torch::Tensor loss = torch::zeros({}, torch::TensorOptions().device(device_));
      for (size_t i = 0; i < features.size(); i++) {
        auto out = net_->flows[i]->forward(net_->norms[i]->forward(ViewTensor(features[i], device_)));
        loss = loss + (0.5 * out.first.pow(2).sum({1, 2, 3}) - out.second).mean();
      }
      return Apply(loss);
    });
  }

  void Maps(const View&, const std::vector<View>& features, int64_t outSize, float* out, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, sides_);
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      net_->eval();
      auto map = torch::zeros({features[0].n, 1, outSize, outSize}, torch::TensorOptions().device(device_));
      for (size_t i = 0; i < features.size(); i++) {
        auto z = net_->flows[i]->forward(net_->norms[i]->forward(ViewTensor(features[i], device_))).first;
        auto prob = torch::exp(-0.5 * z.pow(2).mean(1, true));
        map = map + Upsample(-prob, outSize, false);
      }
      CopyOut(map / static_cast<double>(features.size()), out);
    });
  }

 private:
  FastFlowNet* net_ = nullptr;
  std::vector<int64_t> sides_;
};

struct CFlowNet : nn::Module {
  std::vector<FlowSequence> flows;
  nn::ModuleList flowList = register_module("flows", nn::ModuleList());
  // Per level, the maximum of log p / C over the training normals (-inf until calibrated).
  torch::Tensor levelMax;
};

class CFlow : public HeadModel {
 public:
  explicit CFlow(const ModelConfig& config) : HeadModel(config), generator_(at::make_generator<at::CPUGeneratorImpl>(config.seed ^ 0x5f1b3d)) {
    const int64_t blocks = static_cast<int64_t>(Extra(config, "blocks", {8})[0]);
    const double clamp = Extra(config, "clamp", {1.9})[0];
    condition_ = static_cast<int64_t>(Extra(config, "condition", {128})[0]);
    bgad_ = config.kind == "bgad";
    fibers_ = static_cast<int64_t>(Extra(config, "fibers", {bgad_ ? 4096.0 : 256.0})[0]);
    // BGAD: beta, tau, normaliser, lambda, focal weighting (0/1); README / scripts.sh: beta 0.01 with focal weights.
    auto boundary = Extra(config, "boundary", {0.01, 0.1, 10, 1, 1});
    if (boundary.size() != 5 || !(boundary[0] >= 0 && boundary[0] < 1) || !(boundary[2] > 0)) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected BGAD's boundary settings {beta in [0, 1), tau, normaliser > 0, lambda, focal 0/1}");
    }
    beta_ = boundary[0], tau_ = boundary[1], normalizer_ = boundary[2], lambda_ = boundary[3], focal_ = boundary[4] != 0;
    auto schedule = Extra(config, "schedule", {1, 25, 8, 2});  // steps per sub-epoch, meta-epochs, sub-epochs, warm-up
    stepsPerEpoch_ = static_cast<int64_t>(schedule.at(0));
    metaEpochs_ = static_cast<int64_t>(schedule.at(1));
    subEpochs_ = static_cast<int64_t>(schedule.at(2));
    warmEpochs_ = static_cast<int64_t>(schedule.at(3));
    if (condition_ % 4 != 0 || fibers_ < 1 || stepsPerEpoch_ < 1 || metaEpochs_ < 1 || subEpochs_ < 1 || warmEpochs_ < 0) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected CFlow's condition size to be a multiple of 4 and a positive fiber batch and schedule");
    }
    auto net = std::make_shared<CFlowNet>();
    torch::manual_seed(config.seed);
    for (size_t i = 0; i < config.teacherChannels.size(); i++) {
      CouplingOptions o;
      o.channels = config.teacherChannels[i];
      o.rank = 1;
      o.clamp = clamp;
      o.softPermutation = true;
      o.conditionChannels = condition_;
      o.splitCondition = bgad_;
      o.seed = config.seed + 7919ULL * (i + 1);
      net->flows.push_back(FlowSequence(blocks, o, [](int64_t) { return 1; }));
      net->flowList->push_back(net->flows.back());
    }
    net->levelMax = net->register_buffer("level_max", torch::full({static_cast<int64_t>(config.teacherChannels.size())}, -std::numeric_limits<float>::infinity()));
    net_ = net.get();
    auto adam = torch::optim::AdamOptions(config.lr).weight_decay(config.weightDecay);
    if (bgad_) {
      Finish(net, std::make_unique<FusedAdam>(TrainableParameters(*net), adam));
    } else {
      Finish(net, std::make_unique<torch::optim::Adam>(TrainableParameters(*net), adam));
    }
  }

  double Step(const View& masks, const std::vector<View>& features, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, {});
      if (bgad_) {
        CheckMasks(masks, features[0].n);
      } else {
        SetLearningRate();
      }
      net_->train();
      double sum = 0;
      int64_t count = 0;
      for (size_t l = 0; l < features.size(); l++) {
        torch::Tensor e, c;
        Fibers(features[l], &e, &c);
        const int64_t total = e.size(0);
        torch::Tensor m;
        if (bgad_) m = LevelMask(masks, features[l]);
        auto order = torch::randperm(total, generator_, torch::TensorOptions().dtype(torch::kInt64)).to(device_);
        // The official loop drops the remainder (E // N chunks); a level with fewer than N fibers is one chunk.
        const int64_t chunk = std::min(fibers_, total);
        for (int64_t f = 0; f + chunk <= total; f += chunk) {
          control.throwIfCancelled();
          auto idx = order.narrow(0, f, chunk);
          auto out = net_->flows[l]->forward(e.index_select(0, idx), c.index_select(0, idx));
          auto logp = GaussianLogLikelihood(out.first, out.second) / static_cast<double>(e.size(1));
          torch::Tensor loss;
          if (!bgad_) {
            loss = -F::logsigmoid(logp).mean();
          } else {
            loss = BgadLoss(logp, m.index_select(0, idx));
            if (!loss.defined()) continue;
          }
          const double value = Apply(loss);
          if (!std::isfinite(value)) return value;
          sum += value * static_cast<double>(chunk);
          count += chunk;
        }
      }
      step_++;
      // A BGAD batch whose every chunk was skipped (anomalous chunks in meta-epoch 0) trained nothing: loss 0.
      return count == 0 ? 0.0 : sum / static_cast<double>(count);
    });
  }

  // BGAD's epochs: {meta-epoch} (0: normals only).
  void Configure(const std::string& key, const std::vector<double>& values) override {
    if (!bgad_ || key != "epoch" || values.size() != 1 || !(values[0] >= 0)) {
      throw InvalidArgument("ERR_IMIAD_ARGUMENT", "This model takes no setting " + key + (bgad_ ? " (BGAD takes epoch = {meta-epoch >= 0})" : ""));
    }
    epoch_ = static_cast<int64_t>(values[0]);
  }

  void SetLearningRate(double lr) override {
    if (!bgad_) throw InvalidArgument("ERR_IMIAD_ARGUMENT", "This model keeps its own learning-rate schedule");
    OnTrainingThread([&] {
      for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    });
  }

  void Calibrate(const std::vector<View>& features, bool reset, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, {});
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      net_->eval();
      if (reset) net_->levelMax.fill_(-std::numeric_limits<float>::infinity());
      for (size_t l = 0; l < features.size(); l++) {
        auto m = LogLikelihoodMap(l, features[l]).max();
        net_->levelMax[l] = torch::maximum(net_->levelMax[l], m);
      }
    });
  }

  void Maps(const View&, const std::vector<View>& features, int64_t outSize, float* out, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, {});
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      net_->eval();
      if (!torch::isfinite(net_->levelMax).all().item<bool>()) {
        throw InvalidArgument("ERR_IMIAD_STATE", std::string(bgad_ ? "BGAD" : "CFlow") + "'s normalising maxima are not fixed: calibrate on the training normals first");
      }
      auto sum = torch::zeros({features[0].n, 1, outSize, outSize}, torch::TensorOptions().device(device_));
      for (size_t l = 0; l < features.size(); l++) {
        auto prob = torch::exp(LogLikelihoodMap(l, features[l]) - net_->levelMax[l]);
        sum = sum + Upsample(prob, outSize, true);
      }
      CopyOut(static_cast<double>(features.size()) - sum, out);
    });
  }

 private:
  // The level's fibers [n h w, c] and their positional encodings [n h w, P], in (image, row, column) order.
  void Fibers(const View& v, torch::Tensor* e, torch::Tensor* c) {
    auto x = ViewTensor(v, device_);
    *e = x.reshape({v.n, v.c, v.h * v.w}).transpose(1, 2).reshape({v.n * v.h * v.w, v.c});
    auto p = PositionalEncoding2d(condition_, v.h, v.w).to(device_);
    *c = p.reshape({condition_, v.h * v.w}).transpose(0, 1).repeat({v.n, 1});
  }

  // log p / C of every position of the level, [n, 1, h, w], computed in chunks of N fibers.
  torch::Tensor LogLikelihoodMap(size_t l, const View& v) {
    torch::Tensor e, c;
    Fibers(v, &e, &c);
    std::vector<torch::Tensor> parts;
    for (int64_t f = 0; f < e.size(0); f += fibers_) {
      const int64_t m = std::min(fibers_, e.size(0) - f);
      auto out = net_->flows[l]->forward(e.narrow(0, f, m), c.narrow(0, f, m));
      parts.push_back(GaussianLogLikelihood(out.first, out.second) / static_cast<double>(v.c));
    }
    return torch::cat(parts).reshape({v.n, 1, v.h, v.w});
  }

  void CheckMasks(const View& masks, int64_t n) {
    if (masks.data == nullptr) return;
    if (masks.n != n || masks.c != 1 || masks.h < 1 || masks.w < 1) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected BGAD's masks as [" + std::to_string(n) + ", 1, h, w] but received [" + std::to_string(masks.n) + ", " +
                                                  std::to_string(masks.c) + ", " + std::to_string(masks.h) + ", " + std::to_string(masks.w) + "]");
    }
  }

  // The batch's masks at the level's size (F.interpolate's default 'nearest'), flattened in fiber order [n h w];
  // zeros without masks.
  torch::Tensor LevelMask(const View& masks, const View& v) {
    if (masks.data == nullptr) return torch::zeros({v.n * v.h * v.w}, torch::TensorOptions().device(device_));
    auto m = ViewTensor(masks, device_);
    return F::interpolate(m, F::InterpolateFuncOptions().size(std::vector<int64_t>{v.h, v.w}).mode(torch::kNearest)).reshape({-1});
  }

  // normal_fl_weighting / abnormal_fl_weighting of losses/losses.py on detached log-likelihoods.
  torch::Tensor NormalWeights(const torch::Tensor& logp) const {
    auto q = logp / normalizer_;
    auto w = 11.7 * (1 - torch::exp(q)).pow(0.5) * torch::abs(q);
    return torch::where(q > -0.2, torch::ones_like(q), w);
  }

  torch::Tensor AbnormalWeights(const torch::Tensor& logp) const {
    auto q = logp / normalizer_;
    auto w = 0.53 * (1 + torch::exp(q)).pow(2) * (1 / torch::abs(q));
    return torch::where(q <= -1.0, torch::ones_like(q), w);
  }

  // The chunk's BGAD loss (see the file comment); undefined when the chunk is skipped.
  torch::Tensor BgadLoss(const torch::Tensor& logp, const torch::Tensor& mask) {
    const bool anomalous = mask.sum().item<float>() > 0;
    if (epoch_ == 0) return anomalous ? torch::Tensor() : -F::logsigmoid(logp).mean();
    auto detached = logp.detach();
    if (!anomalous) return focal_ ? (-F::logsigmoid(logp) * NormalWeights(detached)).mean() : -F::logsigmoid(logp).mean();
    auto normal = mask == 0, abnormal = mask == 1;
    auto normalLogp = detached.masked_select(normal);
    if (normalLogp.numel() == 0) return {};  // the official code fails on a chunk without normal fibers
    const auto k = static_cast<int64_t>((normal.sum() * beta_).item<float>());
    auto bn = std::get<0>(normalLogp.sort()).index({k}) / normalizer_;
    auto ba = bn - tau_;
    auto q = logp / normalizer_;
    auto qn = q.masked_select(normal), qa = q.masked_select(abnormal);
    torch::Tensor wn, wa;
    auto ml = -F::logsigmoid(logp.masked_select(normal));
    if (focal_) {
      wn = NormalWeights(normalLogp);
      wa = AbnormalWeights(detached.masked_select(abnormal));
      ml = ml * wn;
    }
    auto inN = qn <= bn, inA = qa >= ba;
    auto ln = bn - qn.masked_select(inN);
    auto la = qa.masked_select(inA) - ba;
    if (focal_) {
      ln = ln * wn.masked_select(inN);
      la = la * wa.masked_select(inA);
    }
    auto boundary = ln.mean();
    if (la.numel() > 0) boundary = boundary + la.mean();
    return ml.mean() + lambda_ * boundary;
  }

  // cflow-ad's warmup_learning_rate and adjust_learning_rate on the step counter.
  void SetLearningRate() {
    const double lr = config_.lr, etaMin = lr * 1e-3;
    const double perMeta = static_cast<double>(stepsPerEpoch_ * subEpochs_);
    const int64_t meta = static_cast<int64_t>(static_cast<double>(step_) / perMeta);
    auto cosine = [&](double epoch) { return etaMin + (lr - etaMin) * (1 + std::cos(M_PI * epoch / static_cast<double>(metaEpochs_))) / 2; };
    double value = cosine(static_cast<double>(meta));
    if (meta < warmEpochs_) {
      const double from = lr / 10, to = cosine(static_cast<double>(warmEpochs_));
      value = from + (static_cast<double>(step_) / (static_cast<double>(warmEpochs_) * perMeta)) * (to - from);
    }
    for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(value);
  }

  CFlowNet* net_ = nullptr;
  at::Generator generator_;
  int64_t condition_ = 128, fibers_ = 256;
  int64_t stepsPerEpoch_ = 1, metaEpochs_ = 25, subEpochs_ = 8, warmEpochs_ = 2;
  int64_t step_ = 0;
  bool bgad_ = false, focal_ = true;
  double beta_ = 0.01, tau_ = 0.1, normalizer_ = 10, lambda_ = 1;
  int64_t epoch_ = 0;
};

// CS-Flow (Rudolph et al., "Fully Convolutional Cross-Scale-Flows for Image-based Defect Detection", WACV 2022;
// marco-rudolph/cs-flow): one tapped level at three input scales; 4 cross-scale blocks (kernels 3, 3, 3, 5, hidden
// 1024, clamp 3); loss = mean_b(0.5 sum z^2 - log-det) / D over all scales' dims; Adam (eps 1e-4), gradient norm
// clipped to 1. Image score = mean z^2 over all dims; map = product over scales of mean_c z^2 upsampled bilinearly
// (align_corners=False; anomalib's "all" mode: the official code has no map).
struct CsFlowNet : nn::Module {
  std::vector<CrossScaleBlock> blocks;
  nn::ModuleList blockList = register_module("blocks", nn::ModuleList());
};

class CsFlow : public HeadModel {
 public:
  explicit CsFlow(const ModelConfig& config) : HeadModel(config) {
    const auto& c = config.teacherChannels;
    if (c[0] != c[1] || c[1] != c[2]) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected CS-Flow's three scales of one level");
    const int64_t blocks = static_cast<int64_t>(Extra(config, "blocks", {4})[0]);
    const int64_t hidden = static_cast<int64_t>(Extra(config, "hidden", {1024})[0]);
    const double clamp = Extra(config, "clamp", {3})[0];
    auto kernels = Extra(config, "kernels", {3, 3, 3, 5});
    if (blocks < 1 || hidden < 1 || static_cast<int64_t>(kernels.size()) < blocks) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected CS-Flow's blocks >= 1, hidden >= 1 and one kernel size per block");
    }
    auto net = std::make_shared<CsFlowNet>();
    torch::manual_seed(config.seed);
    for (int64_t k = 0; k < blocks; k++) {
      net->blocks.push_back(CrossScaleBlock(c[0], hidden, static_cast<int64_t>(kernels[k]), clamp, config.seed * 1000003ULL + static_cast<uint64_t>(k)));
      net->blockList->push_back(net->blocks.back());
    }
    net_ = net.get();
    clipNorm_ = Extra(config, "clipNorm", {1})[0];
    auto options = torch::optim::AdamOptions(config.lr).eps(Extra(config, "eps", {1e-4})[0]).weight_decay(config.weightDecay);
    Finish(net, std::make_unique<torch::optim::Adam>(TrainableParameters(*net), options));
  }

  double Step(const View&, const std::vector<View>& features, const RunControl& control) override {
    return OnTrainingThread([&] {
      Check(features);
      control.throwIfCancelled();
      net_->train();
      auto out = Forward(features);
      torch::Tensor sq, logdet;
      int64_t dims = 0;
      for (int i = 0; i < 3; i++) {
        auto q = out.first[i].pow(2).sum({1, 2, 3});
        sq = i == 0 ? q : sq + q;
        logdet = i == 0 ? out.second[i] : logdet + out.second[i];
        dims += out.first[i].numel() / out.first[i].size(0);
      }
      return Apply((0.5 * sq - logdet).mean() / static_cast<double>(dims));
    });
  }

  bool Scores(const std::vector<View>& features, float* out, const RunControl& control) override {
    return OnTrainingThread([&] {
      Check(features);
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      net_->eval();
      auto z = Forward(features).first;
      const int64_t n = features[0].n;
      auto flat = torch::cat({z[0].reshape({n, -1}), z[1].reshape({n, -1}), z[2].reshape({n, -1})}, 1);
      CopyOut(flat.pow(2).mean(1), out);
      return true;
    });
  }

  void Maps(const View&, const std::vector<View>& features, int64_t outSize, float* out, const RunControl& control) override {
    return OnTrainingThread([&] {
      Check(features);
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      net_->eval();
      auto z = Forward(features).first;
      auto map = torch::ones({features[0].n, 1, outSize, outSize}, torch::TensorOptions().device(device_));
      for (int i = 0; i < 3; i++) map = map * Upsample(z[i].pow(2).mean(1, true), outSize, false);
      CopyOut(map, out);
    });
  }

 private:
  void Check(const std::vector<View>& features) {
    CheckLevels(features, config_.teacherChannels, {});
    for (int i = 1; i < 3; i++) {
      if (features[i].h * 2 != features[i - 1].h || features[i].w * 2 != features[i - 1].w) {
        throw InvalidArgument("ERR_IMIAD_DIMS", "Expected CS-Flow's scale " + std::to_string(i + 1) + " at half the size of scale " + std::to_string(i) +
                                                    " but received " + std::to_string(features[i].h) + " x " + std::to_string(features[i].w) + " after " +
                                                    std::to_string(features[i - 1].h) + " x " + std::to_string(features[i - 1].w));
      }
    }
  }

  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> Forward(const std::vector<View>& features) {
    std::vector<torch::Tensor> x;
    for (auto& v : features) x.push_back(ViewTensor(v, device_));
    std::vector<torch::Tensor> logdet = {torch::zeros({features[0].n}, x[0].options()), torch::zeros({features[0].n}, x[0].options()),
                                         torch::zeros({features[0].n}, x[0].options())};
    for (auto& b : net_->blocks) {
      auto out = b->forward(x);
      x = out.first;
      for (int i = 0; i < 3; i++) logdet[i] = logdet[i] + out.second[i];
    }
    return {x, logdet};
  }

  CsFlowNet* net_ = nullptr;
};

}  // namespace

std::unique_ptr<Model> CreateFlowModel(const ModelConfig& config) {
  if (config.kind == "fastflow") return std::make_unique<FastFlow>(config);
  if (config.kind == "csflow") return std::make_unique<CsFlow>(config);
  if (config.kind == "cflow" || config.kind == "bgad") return std::make_unique<CFlow>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown flow model kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
