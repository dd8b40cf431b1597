// CutPaste follows Li, Sohn, Yoon & Pfister, "CutPaste: Self-Supervised Learning for Anomaly Detection and
// Localization" (CVPR 2021), as Runinho/pytorch-cutpaste (model.py ProjectionNet, density.py GaussianDensityTorch)
// and open-iad (arch/cutpaste.py, whose schedule and optimiser the IM-IAD paper's Table V uses) implement it:
//
// - Network: torchvision's ResNet-18 (resnet18.h; weights imported from the user's ONNX backbone) whose pooled
//   512-d output is the embedding, then the projection head [Linear(d_in, d), BatchNorm1d(d), ReLU] for each d of
//   headDims (default 512, 128: Runinho's head_layer = 1), then Linear(128, classes) giving the logits.
// - Loss: cross-entropy of the logits over {normal, cut-paste, scar} (3-way): the batch is the three views
//   concatenated in that order, an equal number each. open-iad applies softmax before CrossEntropyLoss (a double
//   softmax); here the logits go in once.
// - Optimiser: Adam(lr, weight decay) over every parameter (backbone included); the caller sets each step's
//   learning rate (SetLearningRate: lib/methods/cutpaste.ts computes open-iad's CosineAnnealingWarmRestarts).
// - Density: after training, a Gaussian of the L2-normalised EVAL-mode embeddings of the training images (Calibrate:
//   mean, and the precision of the Ledoit-Wolf shrunk covariance exactly as sklearn.covariance.LedoitWolf computes
//   it, in float64). open-iad fits it on train-mode embeddings collected over every epoch (stale features); not here.
// - Score: the Mahalanobis distance of a test image's L2-normalised eval-mode embedding (Scores). No pixel map.
#include "cutpaste.h"

#include <cfloat>
#include <cmath>
#include <mutex>

#include "blocks.h"
#include "resnet18.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

constexpr int64_t kEmbeddingDims = 512;

struct CutPasteNetImpl : nn::Module {
  CutPasteNetImpl(const std::vector<int64_t>& headDims, int64_t classes, bool channelsLast) {
    backbone = register_module("backbone", ResNet18(4, channelsLast));
    head = register_module("head", nn::Sequential());
    int64_t last = kEmbeddingDims;
    for (auto d : headDims) {
      head->push_back(nn::Linear(last, d));
      head->push_back(nn::BatchNorm1d(d));
      head->push_back(nn::ReLU(nn::ReLUOptions(true)));
      last = d;
    }
    out = register_module("out", nn::Linear(last, classes));
    mean = register_buffer("density_mean", torch::zeros({kEmbeddingDims}));
    precision = register_buffer("density_precision", torch::zeros({kEmbeddingDims, kEmbeddingDims}));
    count = register_buffer("density_count", torch::zeros({1}));
  }

  // The pooled embedding [n, 512] (torchvision's avgpool + flatten) and the logits [n, classes].
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    auto e = torch::adaptive_avg_pool2d(backbone->forward(x).back(), {1, 1}).flatten(1);
    return {e, out(head->forward(e))};
  }

  ResNet18 backbone{nullptr};
  nn::Sequential head{nullptr};
  nn::Linear out{nullptr};
  torch::Tensor mean, precision, count;
};
TORCH_MODULE(CutPasteNet);

// sklearn.covariance.LedoitWolf().fit(e).precision_ for the rows of e [n, p] (float64): the covariance of the
// centred rows shrunk towards mu I by the Ledoit-Wolf coefficient (ledoit_wolf_shrinkage), then its pseudo-inverse
// (scipy's pinvh: eigenvalues below p * eps * the largest are dropped).
torch::Tensor LedoitWolfPrecision(const torch::Tensor& e) {
  const double n = static_cast<double>(e.size(0)), p = static_cast<double>(e.size(1));
  auto x = e - e.mean(0, true);
  auto x2 = x.pow(2);
  auto empTrace = x2.sum(0) / n;
  const double traceSum = empTrace.sum().item<double>();
  const double mu = traceSum / p;
  const double betaSum = torch::matmul(x2.t(), x2).sum().item<double>();
  auto cov = torch::matmul(x.t(), x) / n;
  const double deltaSum = cov.pow(2).sum().item<double>();
  double beta = 1.0 / (p * n) * (betaSum / n - deltaSum);
  const double delta = (deltaSum - 2 * mu * traceSum + p * mu * mu) / p;
  beta = std::min(beta, delta);
  const double shrinkage = beta == 0 ? 0 : beta / delta;
  auto shrunk = (1 - shrinkage) * cov;
  shrunk.diagonal().add_(shrinkage * mu);
  return torch::linalg::pinv(shrunk, p * DBL_EPSILON, /*hermitian=*/true);
}

class CutPaste : public HeadModel {
 public:
  explicit CutPaste(const ModelConfig& config) : HeadModel(config) {
    classes_ = static_cast<int64_t>(Extra(config, "classes", {3})[0]);
    std::vector<int64_t> headDims;
    for (double d : Extra(config, "headDims", {512, 128})) headDims.push_back(static_cast<int64_t>(d));
    if (classes_ < 2) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected CutPaste's classes to be at least 2");
    for (auto d : headDims) {
      if (d < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected CutPaste's head widths to be positive");
    }
    torch::manual_seed(config.seed);  // the head's default init (the caller holds the seed lock)
    auto net = std::make_shared<CutPasteNetImpl>(headDims, classes_, ChannelsLast(config));
    if (!config.weights.empty()) net->backbone->loadWeights(WeightTensors(config.weights));
    net_ = net.get();
    auto optimizer = std::make_unique<FusedAdam>(net->parameters(), torch::optim::AdamOptions(config.lr).weight_decay(config.weightDecay));
    Finish(net, std::move(optimizer));
  }

  void SetLearningRate(double lr) override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  }

  double Step(const View& images, const std::vector<View>&, const RunControl& control) override {
    double result = 0;
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, [&] {
      CheckImages(images, true);
      control.throwIfCancelled();
      net_->train();
      const int64_t per = images.n / classes_;
      auto labels = torch::arange(classes_, torch::TensorOptions().dtype(torch::kLong)).repeat_interleave(per).to(device_);
      // cross_entropy(logits, labels) written as log_softmax times the one-hot labels: the same value, and its
      // backward has no nll_loss_backward (atomicAdd on CUDA, refused under the deterministic algorithms).
      auto logp = torch::log_softmax(net_->forward(ViewTensor(images, device_)).second, 1);
      auto loss = -(logp * F::one_hot(labels, classes_).to(logp.scalar_type())).sum(1).mean();
      result = loss.item<double>();
      if (!std::isfinite(result)) return;  // the weights stay as they were; the caller stops
      loss.backward();
      optimizer_->step();
      // Gradients set to none rather than zeroed (as train.cc's ClearGradients: the next backward stores them).
      for (auto& group : optimizer_->param_groups()) {
        for (auto& p : group.params()) p.mutable_grad().reset();
      }
    });
    return result;
  }

  void Maps(const View&, const std::vector<View>&, int64_t, float*, const RunControl&) override {
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "CutPaste scores images only (no anomaly maps)");
  }

  // features[0] = a batch of training images; `reset` starts a new set. The Gaussian is refitted on every image
  // given since the last reset, so it is ready (and in the state) after each call.
  void Calibrate(const std::vector<View>& features, bool reset, const RunControl& control) override {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, [&] {
      if (features.size() != 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected one image batch for CutPaste's density");
      CheckImages(features[0], false);
      control.throwIfCancelled();
      if (reset) embeddings_.clear();
      embeddings_.push_back(Embed(features[0]).to(torch::kCPU, torch::kFloat64));
      auto all = torch::cat(embeddings_, 0);
      if (all.size(0) < 2) throw InvalidArgument("ERR_IMIAD_EMPTY", "Expected at least 2 training images for CutPaste's Gaussian");
      torch::NoGradGuard guard;
      net_->mean.copy_(all.mean(0).to(torch::kFloat32));
      net_->precision.copy_(LedoitWolfPrecision(all).to(torch::kFloat32));
      net_->count.fill_(static_cast<double>(all.size(0)));
    });
  }

  bool Scores(const std::vector<View>& features, float* out, const RunControl& control) override {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, [&] {
      if (features.size() != 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected one image batch for CutPaste's scores");
      CheckImages(features[0], false);
      if (net_->count.item<double>() < 2) throw InvalidArgument("ERR_IMIAD_STATE", "CutPaste's Gaussian is not fitted: calibrate on the training images first");
      control.throwIfCancelled();
      auto d = Embed(features[0]) - net_->mean;
      auto m = (torch::matmul(d, net_->precision) * d).sum(1).clamp_min(0).sqrt();
      CopyOut(m, out);
    });
    return true;
  }

  std::vector<NamedArray> Forward(const View& images, const RunControl& control) override {
    std::vector<NamedArray> out;
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, [&] {
      CheckImages(images, false);
      control.throwIfCancelled();
      c10::InferenceMode guard;
      net_->eval();
      auto r = net_->forward(ViewTensor(images, device_));
      out.push_back(Named("embedding", r.first));
      out.push_back(Named("logits", r.second));
    });
    return out;
  }

 private:
  void CheckImages(const View& images, bool training) const {
    if (images.data == nullptr || images.c != 3) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected CutPaste's image batch [n, 3, h, w]");
    if (training && images.n % classes_ != 0) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected CutPaste's training batch to hold " + std::to_string(classes_) +
                                                  " equal parts (normal, cut-paste, scar) but it has " + std::to_string(images.n) + " images");
    }
  }

  // The L2-normalised eval-mode embeddings [n, 512].
  torch::Tensor Embed(const View& images) {
    c10::InferenceMode guard;
    net_->eval();
    return F::normalize(net_->forward(ViewTensor(images, device_)).first, F::NormalizeFuncOptions().p(2).dim(1));
  }

  CutPasteNetImpl* net_ = nullptr;
  int64_t classes_ = 3;
  std::vector<torch::Tensor> embeddings_;
};

}  // namespace

std::unique_ptr<Model> CreateCutPasteModel(const ModelConfig& config) { return std::make_unique<CutPaste>(config); }

}  // namespace train
}  // namespace imiad
