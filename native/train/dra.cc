// DRA follows Ding, Pang & Shen, "Catching Both Gray and Black Swans: Open-set Supervised Anomaly Detection" (CVPR
// 2022) and its official code Choubo/DRA (modeling/net.py, train.py): an ImageNet ResNet-18 through layer4,
// fine-tuned end to end, and four heads on the 512-channel maps, each evaluated per input scale (the image and its
// nearest-neighbour half) and averaged over the scales:
// - holistic (normality): global average pool, Linear(512, 256), ReLU, Linear(256, 1), |.| (its dropout has p = 0);
// - seen: Conv2d(512 -> 1, 1x1) then the mean of the top 10 % of |.| (PlainHead), trained on the labels != 2;
// - pseudo: the same structure, trained on the labels != 1;
// - composite: the residual mean(reference features) - features, Conv2d(512, 512, 3, padding 1), BatchNorm2d, ReLU,
//   then a PlainHead.
// Training batch = the reference normals (their features feed the composite head only, and their batch statistics
// the backbone's batch norm, as the official concatenation does) followed by the labelled batch (0 normal, 1 seen
// anomaly, 2 pseudo-anomaly). Loss = the sum over the heads of the deviation loss (margin 5, each head its own 5000
// reference draws) with the targets y == 0, (y != 0)[y != 2], (y != 0)[y != 1] and y != 0. Adam (lr 2e-4, weight
// decay 1e-5) over the backbone AND the heads (open-iad's port hands only the backbone to its optimiser: not
// copied), the gradients' global norm clipped to 1, StepLR(10, 0.1) stepped at the START of each epoch as the
// official loop does (so the first decay comes after 9 epochs). Test score = -holistic + seen + pseudo + composite;
// the composite head compares with the mean features of reference normals fixed by Calibrate (the official test
// loop draws new, augmented references for every batch of 48; fixed ones make a score depend on its image only).
// The batches (balanced 2/3 : 1/3, CutMix pseudo-anomalies, RandomRotation(180)) come from lib/methods/dra.ts.
#include "dra.h"

#include <mutex>

#include "devnet.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

struct HolisticHeadImpl : nn::Module {
  nn::Linear fc1{nullptr}, fc2{nullptr};
  explicit HolisticHeadImpl(int64_t in) {
    fc1 = register_module("fc1", nn::Linear(in, 256));
    fc2 = register_module("fc2", nn::Linear(256, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto pooled = F::adaptive_avg_pool2d(x, F::AdaptiveAvgPool2dFuncOptions(1)).flatten(1);
    return fc2(fc1(pooled).relu()).abs().reshape({x.size(0)});
  }
};
TORCH_MODULE(HolisticHead);

struct PlainHeadImpl : nn::Module {
  nn::Conv2d scoring{nullptr};
  double rate;
  PlainHeadImpl(int64_t in, double topk) : rate(topk) { scoring = register_module("scoring", nn::Conv2d(nn::Conv2dOptions(in, 1, 1))); }
  torch::Tensor forward(const torch::Tensor& x) { return TopkMeanAbs(scoring(x), rate); }
};
TORCH_MODULE(PlainHead);

// CompositeHead(PlainHead): `scoring` is made first (PlainHead.__init__), then `conv`.
struct CompositeHeadImpl : nn::Module {
  nn::Conv2d scoring{nullptr};
  nn::Sequential conv{nullptr};
  double rate;
  CompositeHeadImpl(int64_t in, double topk) : rate(topk) {
    scoring = register_module("scoring", nn::Conv2d(nn::Conv2dOptions(in, 1, 1)));
    conv = register_module("conv", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, in, 3).padding(1)), nn::BatchNorm2d(in), nn::ReLU()));
  }
  // `reference`: the mean reference features [1, c, h, w].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& reference) { return TopkMeanAbs(scoring(conv->forward(reference - x)), rate); }
};
TORCH_MODULE(CompositeHead);

class Dra : public LabelledImageModel {
 public:
  explicit Dra(const ModelConfig& config) : LabelledImageModel(config) {
    refs_ = static_cast<int64_t>(Extra(config, "references", {5})[0]);
    if (refs_ < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least one reference image for DRA");
    holistic_ = net_->register_module("holistic_head", HolisticHead(512));
    seen_ = net_->register_module("seen_head", PlainHead(512, topk_));
    pseudo_ = net_->register_module("pseudo_head", PlainHead(512, topk_));
    composite_ = net_->register_module("composite_head", CompositeHead(512, topk_));
    // The reference normals' mean layer4 features per scale (Calibrate), and whether they were set.
    for (int64_t s = 0; s < scales_; s++) {
      const int64_t side = side_ / (int64_t{32} << s);
      referenceMeans_.push_back(net_->register_buffer("reference_mean_" + std::to_string(s), torch::zeros({1, 512, side, side})));
    }
    referencesSet_ = net_->register_buffer("reference_set", torch::zeros({1}));
    FinishModel();
  }

  void Calibrate(const std::vector<View>& features, bool reset, const RunControl& control) override {
    (void)reset;  // the references are set in one call
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, [&] {
      if (features.size() != 1 || features[0].n != refs_ || features[0].c != 3 || features[0].h != side_ || features[0].w != side_) {
        throw InvalidArgument("ERR_IMIAD_DIMS", "Expected DRA's " + std::to_string(refs_) + " reference images [" + std::to_string(refs_) + ", 3, " +
                                                    std::to_string(side_) + ", " + std::to_string(side_) + "]");
      }
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      net_->eval();
      auto images = ViewTensor(features[0], device_);
      for (int64_t s = 0; s < scales_; s++) referenceMeans_[s].copy_(Features(InputScale(images, s)).mean(0, true));
      referencesSet_.fill_(1);
    });
  }

 protected:
  int64_t ReferenceRows() const override { return 4; }
  int64_t ReferenceImages() const override { return refs_; }
  int64_t MaxLabel() const override { return 2; }

  torch::Tensor Loss(const torch::Tensor& images, const torch::Tensor& labels, const torch::Tensor& reference) override {
    auto seenRows = labels.ne(2);
    auto pseudoRows = labels.ne(1);
    std::vector<torch::Tensor> heads[4];
    for (int64_t s = 0; s < scales_; s++) {
      auto all = Features(InputScale(images, s));
      auto ref = all.narrow(0, 0, refs_);
      auto f = all.narrow(0, refs_, all.size(0) - refs_);
      heads[0].push_back(holistic_(f));
      heads[1].push_back(seen_(f.index({seenRows})));
      heads[2].push_back(pseudo_(f.index({pseudoRows})));
      heads[3].push_back(composite_(f, ref.mean(0, true)));
    }
    auto anomalous = labels.ne(0).to(torch::kFloat32);
    const torch::Tensor targets[4] = {labels.eq(0).to(torch::kFloat32), anomalous.index({seenRows}), anomalous.index({pseudoRows}), anomalous};
    torch::Tensor loss;
    for (int i = 0; i < 4; i++) {
      auto term = DeviationLoss(torch::stack(heads[i], 1).mean(1), targets[i], reference[i], margin_);
      loss = i == 0 ? term : loss + term;
    }
    return loss;
  }

  torch::Tensor Score(const torch::Tensor& images) override {
    if (referencesSet_.item<double>() < 1) throw InvalidArgument("ERR_IMIAD_STATE", "DRA's reference images are not set: calibrate with them first");
    std::vector<torch::Tensor> heads[4];
    for (int64_t s = 0; s < scales_; s++) {
      auto f = Features(InputScale(images, s));
      heads[0].push_back(holistic_(f));
      heads[1].push_back(seen_(f));
      heads[2].push_back(pseudo_(f));
      heads[3].push_back(composite_(f, referenceMeans_[s]));
    }
    auto mean = [&](int i) { return torch::stack(heads[i], 1).mean(1); };
    return -mean(0) + mean(1) + mean(2) + mean(3);
  }

 private:
  int64_t refs_ = 5;
  HolisticHead holistic_{nullptr};
  PlainHead seen_{nullptr}, pseudo_{nullptr};
  CompositeHead composite_{nullptr};
  std::vector<torch::Tensor> referenceMeans_;
  torch::Tensor referencesSet_;
};

}  // namespace

std::unique_ptr<Model> CreateDraModel(const ModelConfig& config) {
  if (config.kind == "dra") return std::make_unique<Dra>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown supervised model kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
