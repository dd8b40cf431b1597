// CFA follows Lee et al., "CFA: Coupled-hypersphere-based Feature Adaptation for Target-Oriented Anomaly
// Localization" (IEEE Access 2022) and its official code sungwool/CFA_for_anomaly_localization (utils/cfa.py,
// utils/coordconv.py): the frozen backbone's three pre-activation levels, each through leaky_relu and avg_pool2d(3, 1,
// 1), the deeper two upsampled bilinearly (align_corners=False) to the first level's size and concatenated; the
// patch descriptor is a CoordConv 1x1 (row and column coordinates in [-1, 1] appended, then Conv2d(c + 2 -> c) with
// bias); the memory bank C is the per-position mean of the UNTRAINED descriptor's output over the training set (the
// running mean of batch means, _init_centroid; gamma_c = 1: no k-means). Loss with the K + J nearest centres by
// squared distance d: L_att = mean(relu(d[:K] - r^2)) / nu, L_rep = mean(relu(r^2 - d[J:K+J] - alpha)) / nu, r a
// parameter starting at 1e-5; AdamW with amsgrad. Map: the K nearest Euclidean distances (clamped at 0 before the
// root), softmin(d)[0] * d[0] per position, upsampled bilinearly to the image (align_corners=False).
#include "feature_heads.h"

#include "blocks.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

struct CfaNet : nn::Module {
  nn::Conv2d descriptor{nullptr};
  torch::Tensor radius, bank, batches;
};

class Cfa : public HeadModel {
 public:
  explicit Cfa(const ModelConfig& config) : HeadModel(config) {
    auto sides = Extra(config, "sides", {});
    if (sides.size() != 2) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected CFA's first level sides (h, w)");
    h_ = static_cast<int64_t>(sides[0]);
    w_ = static_cast<int64_t>(sides[1]);
    k_ = static_cast<int64_t>(Extra(config, "k", {3})[0]);
    j_ = static_cast<int64_t>(Extra(config, "j", {3})[0]);
    nu_ = Extra(config, "nu", {1e-3})[0];
    alpha_ = Extra(config, "alpha", {0.1})[0];
    if (k_ < 1 || j_ < 1 || k_ + j_ > h_ * w_) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected K, J >= 1 and K + J <= the memory bank's size");
    int64_t dim = 0;
    for (auto c : config.teacherChannels) dim += c;
    auto net = std::make_shared<CfaNet>();
    torch::manual_seed(config.seed);  // the descriptor's default init (the caller holds the seed lock)
    net->descriptor = net->register_module("descriptor", nn::Conv2d(nn::Conv2dOptions(dim + 2, dim, 1)));
    net->radius = net->register_parameter("r", torch::full({1}, 1e-5));
    net->bank = net->register_buffer("memory_bank", torch::zeros({h_ * w_, dim}));
    net->batches = net->register_buffer("bank_batches", torch::zeros({1}));
    net_ = net.get();
    auto optimizer = std::make_unique<torch::optim::AdamW>(TrainableParameters(*net),
                                                           torch::optim::AdamWOptions(config.lr).weight_decay(config.weightDecay).amsgrad(true));
    Finish(net, std::move(optimizer));
  }

  // _init_centroid: the running mean, over batches, of the untrained descriptor's batch-mean output.
  void Calibrate(const std::vector<View>& features, bool reset, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, {});
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      if (reset) {
        net_->bank.zero_();
        net_->batches.zero_();
      }
      auto phi = Describe(features);  // [n, h w, dim]
      const double i = net_->batches.item<double>();
      net_->bank.copy_((net_->bank * i + phi.mean(0)) / (i + 1));
      net_->batches.add_(1);
    });
  }

  double Step(const View&, const std::vector<View>& features, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, {});
      RequireBank();
      control.throwIfCancelled();
      net_->train();
      auto d = std::get<0>(SquaredDistances(Describe(features)).topk(k_ + j_, -1, /*largest=*/false));
      auto r2 = net_->radius.pow(2);
      auto att = F::relu(d.narrow(-1, 0, k_) - r2).mean() / nu_;
      // The official slices dist[:, :, J:], the K + J - J nearest after the first J.
      auto rep = F::relu(r2 - d.narrow(-1, j_, k_ + j_ - j_) - alpha_).mean() / nu_;
      return Apply(att + rep);
    });
  }

  void Maps(const View&, const std::vector<View>& features, int64_t outSize, float* out, const RunControl& control) override {
    return OnTrainingThread([&] {
      CheckLevels(features, config_.teacherChannels, {});
      RequireBank();
      control.throwIfCancelled();
      torch::NoGradGuard guard;
      net_->eval();
      auto d = std::get<0>(SquaredDistances(Describe(features)).clamp_min(0).sqrt().topk(k_, -1, /*largest=*/false));
      auto score = torch::softmax(-d, -1).select(-1, 0) * d.select(-1, 0);  // softmin(d)  // [n, h w]
      auto map = score.reshape({features[0].n, 1, h_, w_});
      CopyOut(Upsample(map, outSize, false), out);
    });
  }

 private:
  void RequireBank() {
    if (net_->batches.item<double>() < 1) throw InvalidArgument("ERR_IMIAD_STATE", "CFA's memory bank is empty: calibrate on the training normals first");
  }

  // The descriptor's output phi(p), [n, h w, dim].
  torch::Tensor Describe(const std::vector<View>& features) {
    torch::Tensor sample;
    for (const View& v : features) {
      auto o = F::avg_pool2d(F::leaky_relu(ViewTensor(v, device_)), F::AvgPool2dFuncOptions(3).stride(1).padding(1));
      if (!sample.defined()) {
        if (v.h != h_ || v.w != w_) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected CFA's first level of " + std::to_string(h_) + " x " + std::to_string(w_));
        sample = o;
      } else {
        sample = torch::cat({sample, F::interpolate(o, F::InterpolateFuncOptions().size(std::vector<int64_t>{h_, w_}).mode(torch::kBilinear).align_corners(false))}, 1);
      }
    }
    const int64_t n = sample.size(0);
    // AddCoords: channel c = the row, c + 1 = the column, each scaled to [-1, 1].
    auto opts = sample.options();
    auto rows = (torch::arange(h_, opts) / static_cast<double>(std::max<int64_t>(h_ - 1, 1)) * 2 - 1).view({1, 1, h_, 1}).expand({n, 1, h_, w_});
    auto cols = (torch::arange(w_, opts) / static_cast<double>(std::max<int64_t>(w_ - 1, 1)) * 2 - 1).view({1, 1, 1, w_}).expand({n, 1, h_, w_});
    auto phi = net_->descriptor(torch::cat({sample, rows, cols}, 1));
    return phi.reshape({n, phi.size(1), h_ * w_}).transpose(1, 2);
  }

  // |phi|^2 + |c|^2 - 2 phi . c against every centre, [n, h w, h w].
  torch::Tensor SquaredDistances(const torch::Tensor& phi) {
    auto features = phi.pow(2).sum(2, true);
    auto centres = net_->bank.pow(2).sum(1).view({1, 1, -1});
    return features + centres - 2 * torch::matmul(phi, net_->bank.t());
  }

  CfaNet* net_ = nullptr;
  int64_t h_ = 0, w_ = 0, k_ = 3, j_ = 3;
  double nu_ = 1e-3, alpha_ = 0.1;
};

}  // namespace

std::unique_ptr<Model> CreateFeatureHeadModel(const ModelConfig& config) {
  if (config.kind == "cfa") return std::make_unique<Cfa>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown feature head kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
