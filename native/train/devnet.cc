// DevNet follows Pang, Ding, Shen & van den Hengel, "Explainable Deep Few-shot Anomaly Detection with Deviation
// Networks" (the image version of Deviation Networks, KDD 2019) and its official code Choubo/deviation-network-image
// (modeling/net.py SemiADNet, modeling/layers/deviation_loss.py, train.py): an ImageNet ResNet-18 through layer4,
// fine-tuned end to end, a Conv2d(512 -> 1, 1x1, with bias) scoring head; per input scale (the image and its
// nearest-neighbour half, F.interpolate(size=side // 2)) the mean of the top 10 % of |score| over the positions, then
// the mean over the scales; the deviation loss with margin 5 against 5000 reference draws from N(0, 1); Adam
// (lr 2e-4, weight decay 1e-5) over the backbone AND the head (open-iad's port hands only the backbone to its
// optimiser, so its head stays random: not copied), the gradients' global norm clipped to 1, StepLR(10, 0.1)
// stepped after each epoch of 20 balanced steps. The balanced batches, the RandomRotation(180) augmentation and the
// reference draws come from the caller (lib/methods/devnet.ts).
#include "devnet.h"

#include <cmath>
#include <mutex>

#include "runtime.h"

namespace imiad {
namespace train {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

torch::Tensor TopkMeanAbs(const torch::Tensor& map, double rate) {
  auto flat = map.reshape({map.size(0), -1});
  const int64_t k = std::max<int64_t>(static_cast<int64_t>(static_cast<double>(flat.size(1)) * rate), 1);
  return std::get<0>(flat.abs().topk(k, 1)).mean(1);
}

torch::Tensor DeviationLoss(const torch::Tensor& scores, const torch::Tensor& targets, const torch::Tensor& reference, double margin) {
  auto dev = (scores - reference.mean()) / reference.std();
  auto inlier = dev.abs();
  auto outlier = (margin - dev).clamp_min(0).abs();
  return ((1 - targets) * inlier + targets * outlier).mean();
}

torch::Tensor InputScale(const torch::Tensor& x, int64_t scale) {
  if (scale == 0) return x;
  const int64_t side = x.size(2) / (int64_t{1} << scale);
  return F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<int64_t>{side, side}).mode(torch::kNearest));
}

namespace {

int64_t IntExtra(const ModelConfig& config, const std::string& key, int64_t fallback, int64_t min) {
  const double v = Extra(config, key, {static_cast<double>(fallback)})[0];
  if (!std::isfinite(v) || v < static_cast<double>(min) || v != std::floor(v)) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected an integer >= " + std::to_string(min) + " for extra." + key + " but received " + std::to_string(v));
  }
  return static_cast<int64_t>(v);
}

}  // namespace

LabelledImageModel::LabelledImageModel(const ModelConfig& config) : HeadModel(config) {
  scales_ = IntExtra(config, "scales", 2, 1);
  stepsPerEpoch_ = IntExtra(config, "stepsPerEpoch", 20, 1);
  decayEvery_ = IntExtra(config, "decayEvery", 10, 1);
  decayShift_ = IntExtra(config, "decayShift", 0, 0);
  side_ = IntExtra(config, "side", 448, 1);
  gamma_ = Extra(config, "gamma", {0.1})[0];
  topk_ = Extra(config, "topk", {0.1})[0];
  margin_ = Extra(config, "margin", {5})[0];
  clipNorm_ = Extra(config, "clipNorm", {1})[0];
  baseLr_ = config.lr;
  if (!(gamma_ > 0) || !(topk_ > 0 && topk_ <= 1) || !(margin_ > 0) || !(clipNorm_ >= 0)) {
    throw InvalidArgument("ERR_IMIAD_RANGE", "Expected gamma > 0, topk in (0, 1], margin > 0 and clipNorm >= 0");
  }
  if (side_ % (int64_t{32} << (scales_ - 1)) != 0) {
    throw InvalidArgument("ERR_IMIAD_DIMS", "Expected an image side divisible by 32 at every one of the " + std::to_string(scales_) +
                                                " input scales (a multiple of " + std::to_string(int64_t{32} << (scales_ - 1)) + ") but received " +
                                                std::to_string(side_));
  }
  // torchvision's initialisation, then the imported weights (the caller's ONNX backbone); the heads that the
  // subclass adds next draw their default initialisation from the same seeded generator.
  torch::manual_seed(config.seed);
  net_ = std::make_shared<nn::Module>();
  backbone_ = net_->register_module("backbone", ResNet18(4, ChannelsLast(config)));
  if (!config.weights.empty()) backbone_->loadWeights(WeightTensors(config.weights));
  steps_ = net_->register_buffer("schedule_steps", torch::zeros({1}));
}

void LabelledImageModel::FinishModel() {
  auto optimizer = std::make_unique<FusedAdam>(net_->parameters(), torch::optim::AdamOptions(config_.lr).weight_decay(config_.weightDecay));
  Finish(net_, std::move(optimizer));
}

torch::Tensor LabelledImageModel::Features(const torch::Tensor& x) { return backbone_->forward(x).back(); }

void LabelledImageModel::RunOnTrainingThread(const std::function<void()>& fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  runtime::Run(config_.threads, fn);
}

double LabelledImageModel::Step(const View& images, const std::vector<View>& inputs, const RunControl& control) {
  double result = 0;
  RunOnTrainingThread([&] {
    const int64_t refs = ReferenceImages();
    if (inputs.size() != 2) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected the labels and the reference draws");
    const View& labels = inputs[0];
    const View& reference = inputs[1];
    if (images.data == nullptr || images.c != 3 || images.h != side_ || images.w != side_) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected images [n, 3, " + std::to_string(side_) + ", " + std::to_string(side_) + "]");
    }
    if (labels.c * labels.h * labels.w != 1 || labels.n + refs != images.n || labels.n < 1) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected one label per image" + std::string(refs ? " after the " + std::to_string(refs) + " reference images" : "") +
                                                  " (" + std::to_string(images.n - refs) + ") but received " + std::to_string(labels.n));
    }
    if (reference.n * reference.c * reference.h != ReferenceRows() || reference.w < 2) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected " + std::to_string(ReferenceRows()) + " rows of at least 2 reference draws");
    }
    control.throwIfCancelled();
    auto y = ViewTensor(labels, device_).reshape({labels.n});
    if (!(y.ge(0).all().item<bool>() && y.le(static_cast<double>(MaxLabel())).all().item<bool>() && y.eq(y.round()).all().item<bool>())) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected labels in 0.." + std::to_string(MaxLabel()));
    }
    // StepLR(decayEvery, gamma) on the epoch the step belongs to (DRA's loop steps its scheduler before the epoch).
    const int64_t done = static_cast<int64_t>(steps_.item<double>());
    const int64_t epoch = done / stepsPerEpoch_;
    const double lr = baseLr_ * std::pow(gamma_, static_cast<double>((epoch + decayShift_) / decayEvery_));
    for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    net_->train();
    auto loss = Loss(ViewTensor(images, device_), y, ViewTensor(reference, device_).reshape({ReferenceRows(), reference.w}));
    result = loss.item<double>();
    // A loss that is not finite leaves the weights and the schedule as they were (the caller stops training).
    if (!std::isfinite(result)) return;
    loss.backward();
    if (clipNorm_ > 0) nn::utils::clip_grad_norm_(net_->parameters(), clipNorm_);
    optimizer_->step();
    // Gradients set to none instead of zeroed before the next backward pass (train.cc ClearGradients): same values.
    for (auto& p : net_->parameters()) p.mutable_grad().reset();
    torch::NoGradGuard guard;
    steps_.add_(1);
  });
  return result;
}

void LabelledImageModel::Maps(const View&, const std::vector<View>&, int64_t, float*, const RunControl&) {
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "The " + config_.kind + " model scores images only (no anomaly maps)");
}

bool LabelledImageModel::Scores(const std::vector<View>& features, float* out, const RunControl& control) {
  RunOnTrainingThread([&] {
    if (features.size() != 1 || features[0].c != 3 || features[0].h != side_ || features[0].w != side_) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected one image batch [n, 3, " + std::to_string(side_) + ", " + std::to_string(side_) + "]");
    }
    control.throwIfCancelled();
    c10::InferenceMode guard;
    net_->eval();
    CopyOut(Score(ViewTensor(features[0], device_)).to(torch::kFloat32), out);
  });
  return true;
}

namespace {

class DevNet : public LabelledImageModel {
 public:
  explicit DevNet(const ModelConfig& config) : LabelledImageModel(config) {
    head_ = net_->register_module("conv", nn::Conv2d(nn::Conv2dOptions(512, 1, 1)));
    FinishModel();
  }

 protected:
  int64_t ReferenceRows() const override { return 1; }
  int64_t MaxLabel() const override { return 1; }

  // SemiADNet.forward: per scale the top-k mean of |conv(layer4)|, then the mean over the scales; [n].
  torch::Tensor Forward(const torch::Tensor& images) {
    std::vector<torch::Tensor> perScale;
    for (int64_t s = 0; s < scales_; s++) perScale.push_back(TopkMeanAbs(head_(Features(InputScale(images, s))), topk_));
    return torch::stack(perScale, 1).mean(1);
  }

  torch::Tensor Loss(const torch::Tensor& images, const torch::Tensor& labels, const torch::Tensor& reference) override {
    return DeviationLoss(Forward(images), labels, reference[0], margin_);
  }

  torch::Tensor Score(const torch::Tensor& images) override { return Forward(images); }

 private:
  nn::Conv2d head_{nullptr};
};

}  // namespace

std::unique_ptr<Model> CreateDevNetModel(const ModelConfig& config) {
  if (config.kind == "devnet") return std::make_unique<DevNet>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown supervised model kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
