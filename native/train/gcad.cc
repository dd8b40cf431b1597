// GCAD follows Bergmann et al., "Beyond Dents and Scratches: Logical Constraints in Unsupervised Anomaly Detection
// and Localization" (IJCV 130:947-969, 2022), section 5. No official code exists (not at MVTec, in anomalib or in
// open-iad), so this is a re-implementation from the paper's text; docs/detectors-gcad.md lists the choices it makes.
//
// What the paper fixes: a frozen teacher gives dense descriptors; they are normalised per channel with the mean and
// standard deviation over the training set; a local branch (a student network with a limited receptive field) and a
// global branch (a convolutional auto-encoder whose bottleneck is a low-dimensional vector, so that it must encode the
// whole image) both regress the normalised descriptors with a squared error, on normal images only; each branch's
// anomaly map is its per-position squared error, normalised with the mean and standard deviation of that branch's
// maps on normal validation images; the two are averaged; the image score is the map's maximum.
//
// Choices made here (the paper leaves them open, or its teacher cannot be had):
// - The teacher is the project's ONNX backbone (the TypeScript side taps it): level 0 fixes the grid, deeper levels
//   are normalised on their own grid, then upsampled bilinearly (align_corners=False) to it and concatenated (the
//   normalisation is affine per channel, so it commutes with the interpolation).
// - A channel whose standard deviation over the training set is below 1e-3 times the channels' mean standard
//   deviation is divided by that floor (a ReLU channel that never fires on the training images would otherwise turn
//   any activation at test time into an unbounded error).
// - Local student: conv 4x4/2 (3 -> 64), conv 4x4/2 (-> 128), conv 4x4/2 (-> 256), conv 3x3 (-> 256), conv 1x1
//   (-> D), ReLU between them, biases: stride 8 (the grid of ResNet layer2), receptive field 38 x 38 pixels.
// - Global auto-encoder: encoder conv 4x4/2 3 -> 32 -> 32 -> 64 -> 64 -> 64 (ReLU), then one conv whose kernel is the
//   remaining spatial size (8 x 8 at 256 px) to a 1 x 1 x B code, B = 64, no activation; decoder: bilinear
//   upsampling to ceil(g/8), ceil(g/4), ceil(g/2) and g of the grid g, each followed by conv 3x3 (-> 64) and ReLU,
//   then conv 3x3 (64 -> 64), ReLU, conv 3x3 (64 -> D). No dropout (the training stays deterministic).
// - Loss = mean squared error of the local branch + that of the global branch, one Adam over both (lr 1e-4,
//   weight decay 1e-5 by default; set by the caller).
// - Map statistics: mean and standard deviation over every position of every validation image's map, on the grid
//   (before upsampling, which is affine and commutes with the normalisation).
#include "gcad.h"

#include <cmath>
#include <functional>

#include "blocks.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

// In place: a convolution's backward pass needs its input, not its output, so the ReLU may overwrite it (as
// torchvision's ReLU(inplace=True)); the same values with fewer tensors.
nn::ReLU Relu() { return nn::ReLU(nn::ReLUOptions(true)); }

torch::Tensor Resize(const torch::Tensor& x, int64_t h, int64_t w) {
  if (x.size(2) == h && x.size(3) == w) return x;
  return F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kBilinear).align_corners(false));
}

// Side after the encoder's five 4x4 stride-2 convs with padding 1: floor(s / 2) five times.
int64_t EncodedSide(int64_t s) {
  for (int i = 0; i < 5; i++) s = (s + 2 - 4) / 2 + 1;
  return s;
}

struct LocalStudentImpl : nn::Module {
  nn::Sequential net{nullptr};
  explicit LocalStudentImpl(int64_t d) {
    net = register_module("net", nn::Sequential(ConvBias(3, 64, 4, 2, 1), Relu(), ConvBias(64, 128, 4, 2, 1), Relu(), ConvBias(128, 256, 4, 2, 1), Relu(),
                                                ConvBias(256, 256, 3, 1, 1), Relu(), ConvBias(256, d, 1, 1, 0)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return net->forward(x); }
};
TORCH_MODULE(LocalStudent);

struct GlobalAutoencoderImpl : nn::Module {
  nn::Sequential encoder{nullptr};
  nn::ModuleList decoder{nullptr};
  std::vector<std::pair<int64_t, int64_t>> sizes;
  GlobalAutoencoderImpl(int64_t d, int64_t bottleneck, int64_t imageH, int64_t imageW, int64_t gridH, int64_t gridW) {
    const int64_t eh = EncodedSide(imageH), ew = EncodedSide(imageW);
    encoder = register_module("encoder", nn::Sequential(ConvBias(3, 32, 4, 2, 1), Relu(), ConvBias(32, 32, 4, 2, 1), Relu(), ConvBias(32, 64, 4, 2, 1), Relu(),
                                                        ConvBias(64, 64, 4, 2, 1), Relu(), ConvBias(64, 64, 4, 2, 1), Relu(),
                                                        nn::Conv2d(nn::Conv2dOptions(64, bottleneck, {eh, ew}))));
    decoder = register_module("decoder", nn::ModuleList());
    auto up = [](int64_t g, int64_t f) { return (g + f - 1) / f; };
    for (int64_t f : {8, 4, 2, 1}) sizes.emplace_back(up(gridH, f), up(gridW, f));
    decoder->push_back(ConvBias(bottleneck, 64, 3, 1, 1));
    for (int i = 0; i < 4; i++) decoder->push_back(ConvBias(64, 64, 3, 1, 1));
    decoder->push_back(ConvBias(64, d, 3, 1, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = encoder->forward(x);
    for (size_t i = 0; i < sizes.size(); i++) {
      h = Resize(h, sizes[i].first, sizes[i].second);
      h = decoder[i]->as<nn::Conv2d>()->forward(h).relu_();
    }
    h = decoder[4]->as<nn::Conv2d>()->forward(h).relu_();
    return decoder[5]->as<nn::Conv2d>()->forward(h);
  }
};
TORCH_MODULE(GlobalAutoencoder);

struct GcadNet : nn::Module {
  LocalStudent local{nullptr};
  GlobalAutoencoder global{nullptr};
  // Per channel of the concatenated teacher levels; std 0 = not calibrated yet.
  torch::Tensor teacherMean, teacherStd;
  // Per branch (local, global) on the validation normals; std 0 = not calibrated yet.
  torch::Tensor mapMean, mapStd;
};

// Running mean and sum of squared deviations, merged batch by batch in double (Chan et al.'s pairwise update).
struct Moments {
  torch::Tensor mean, m2;
  double count = 0;
  void reset() {
    mean = torch::Tensor();
    m2 = torch::Tensor();
    count = 0;
  }
  // x: [channels, values] in double.
  void add(const torch::Tensor& x) {
    const double n = static_cast<double>(x.size(1));
    auto bm = x.mean(1);
    auto bm2 = (x - bm.unsqueeze(1)).pow(2).sum(1);
    if (count == 0) {
      mean = bm;
      m2 = bm2;
    } else {
      auto delta = bm - mean;
      const double total = count + n;
      mean = mean + delta * (n / total);
      m2 = m2 + bm2 + delta.pow(2) * (count * n / total);
    }
    count += n;
  }
  torch::Tensor std() const { return (m2 / count).sqrt(); }
};

class Gcad : public HeadModel {
 public:
  explicit Gcad(const ModelConfig& config) : HeadModel(config) {
    auto image = Extra(config, "image", {});
    auto grid = Extra(config, "grid", {});
    if (image.size() != 2 || grid.size() != 2) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected GCAD's image sides (h, w) and teacher grid sides (h, w)");
    imageH_ = static_cast<int64_t>(image[0]);
    imageW_ = static_cast<int64_t>(image[1]);
    gridH_ = static_cast<int64_t>(grid[0]);
    gridW_ = static_cast<int64_t>(grid[1]);
    if (imageH_ < 32 || imageW_ < 32) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected GCAD images of at least 32 x 32 pixels (the global encoder halves them five times) but received " +
                                                   std::to_string(imageH_) + " x " + std::to_string(imageW_));
    }
    if (gridH_ < 1 || gridW_ < 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected a teacher grid of at least 1 x 1");
    const int64_t bottleneck = static_cast<int64_t>(Extra(config, "bottleneck", {64})[0]);
    if (bottleneck < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected a bottleneck of at least 1 channel");
    if (config.teacherChannels.empty()) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected at least one teacher level");
    for (auto c : config.teacherChannels) {
      if (c < 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected positive teacher channel counts");
      d_ += c;
    }
    auto net = std::make_shared<GcadNet>();
    torch::manual_seed(config.seed);  // PyTorch's default conv init (the caller holds the seed lock)
    net->local = net->register_module("local", LocalStudent(d_));
    net->global = net->register_module("global", GlobalAutoencoder(d_, bottleneck, imageH_, imageW_, gridH_, gridW_));
    net->teacherMean = net->register_buffer("teacher_mean", torch::zeros({d_}));
    net->teacherStd = net->register_buffer("teacher_std", torch::zeros({d_}));
    net->mapMean = net->register_buffer("map_mean", torch::zeros({2}));
    net->mapStd = net->register_buffer("map_std", torch::zeros({2}));
    net_ = net.get();
    auto optimizer = std::make_unique<FusedAdam>(
        TrainableParameters(*net),
        torch::optim::AdamOptions(config.lr).betas(std::make_tuple(config.beta1, config.beta2)).weight_decay(config.weightDecay));
    Finish(net, std::move(optimizer));
  }

  double Step(const View& images, const std::vector<View>& teacher, const RunControl& control) override {
    double result = 0;
    Run([&] {
      Check(images, teacher, true);
      RequireTeacherStats();
      control.throwIfCancelled();
      net_->train();
      torch::Tensor target;
      {
        torch::NoGradGuard guard;
        target = Target(teacher);
      }
      auto x = ViewTensor(images, device_);
      auto local = Resize(net_->local(x), gridH_, gridW_);
      auto global = net_->global(x);
      auto loss = torch::mse_loss(local, target) + torch::mse_loss(global, target);
      result = loss.item<double>();
      if (!std::isfinite(result)) return;  // the weights stay as they were; the caller stops training
      loss.backward();
      optimizer_->step();
      // Gradients set to none right after the step instead of zeroed before the next backward pass (PyTorch's
      // zero_grad() in the peer): the next backward pass stores each gradient instead of adding it to zeros (the
      // same values), and no gradient memory is held between steps.
      for (auto& group : optimizer_->param_groups()) {
        for (auto& p : group.params()) p.mutable_grad().reset();
      }
    });
    return result;
  }

  void Maps(const View& images, const std::vector<View>& teacher, int64_t outSize, float* out, const RunControl& control) override {
    Run([&] {
      Check(images, teacher, true);
      RequireTeacherStats();
      if (net_->mapStd.min().item<float>() <= 0) {
        throw InvalidArgument("ERR_IMIAD_STATE", "GCAD's map statistics are missing: calibrate on normal validation images first");
      }
      control.throwIfCancelled();
      c10::InferenceMode guard;
      net_->eval();
      auto maps = BranchMaps(images, teacher);
      auto m = ((maps.first - net_->mapMean[0]) / net_->mapStd[0] + (maps.second - net_->mapMean[1]) / net_->mapStd[1]) * 0.5;
      CopyOut(Resize(m, outSize, outSize), out);
    });
  }

  void CalibrateStage(const std::string& stage, const View& images, const std::vector<View>& teacher, bool reset, const RunControl& control) override {
    Run([&] {
      if (stage == "teacher") {
        Check(images, teacher, false);
        control.throwIfCancelled();
        torch::NoGradGuard guard;
        // Each level's channels over that level's own positions (its grid), merged batch by batch.
        if (reset) levelMoments_.clear();
        if (levelMoments_.empty()) levelMoments_.assign(teacher.size(), Moments());
        std::vector<torch::Tensor> means, stds;
        for (size_t l = 0; l < teacher.size(); l++) {
          auto t = ViewTensor(teacher[l], device_).to(torch::kFloat64);
          levelMoments_[l].add(t.transpose(0, 1).reshape({teacher[l].c, -1}));
          means.push_back(levelMoments_[l].mean);
          stds.push_back(levelMoments_[l].std());
        }
        auto std = torch::cat(stds);
        const double floor = 1e-3 * std.mean().item<double>();
        std = floor > 0 ? std.clamp_min(floor) : torch::ones_like(std);
        net_->teacherMean.copy_(torch::cat(means).to(torch::kFloat32));
        net_->teacherStd.copy_(std.to(torch::kFloat32));
      } else if (stage == "maps") {
        Check(images, teacher, true);
        RequireTeacherStats();
        control.throwIfCancelled();
        c10::InferenceMode guard;
        net_->eval();
        if (reset) {
          for (auto& m : mapMoments_) m.reset();
        }
        auto maps = BranchMaps(images, teacher);
        mapMoments_[0].add(maps.first.to(torch::kFloat64).reshape({1, -1}));
        mapMoments_[1].add(maps.second.to(torch::kFloat64).reshape({1, -1}));
        for (int b = 0; b < 2; b++) {
          const double mean = mapMoments_[b].mean.item<double>();
          double std = mapMoments_[b].std().item<double>();
          // A branch whose maps never vary would divide by 0: it then counts unscaled.
          if (!(std > 1e-12)) std = 1;
          net_->mapMean[b].fill_(mean);
          net_->mapStd[b].fill_(std);
        }
      } else {
        throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Expected GCAD's calibration stage 'teacher' or 'maps' but received " + stage);
      }
    });
  }

 private:
  // Every call of this model on the training thread (runtime.h), one at a time.
  void Run(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, fn);
  }

  void Check(const View& images, const std::vector<View>& teacher, bool needImages) {
    CheckLevels(teacher, config_.teacherChannels, {});
    if (teacher[0].h != gridH_ || teacher[0].w != gridW_) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected GCAD's first teacher level on a " + std::to_string(gridH_) + " x " + std::to_string(gridW_) +
                                                  " grid but received " + std::to_string(teacher[0].h) + " x " + std::to_string(teacher[0].w));
    }
    if (!needImages) return;
    if (images.data == nullptr || images.c != 3 || images.n != teacher[0].n || images.h != imageH_ || images.w != imageW_) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected GCAD's image batch [" + std::to_string(teacher[0].n) + ", 3, " + std::to_string(imageH_) + ", " +
                                                  std::to_string(imageW_) + "] (the teacher's images)");
    }
  }

  void RequireTeacherStats() {
    if (net_->teacherStd.min().item<float>() <= 0) {
      throw InvalidArgument("ERR_IMIAD_STATE", "GCAD's teacher statistics are missing: calibrate on the training images first");
    }
  }

  // The normalised teacher descriptors on the grid, [n, D, gh, gw].
  torch::Tensor Target(const std::vector<View>& teacher) {
    std::vector<torch::Tensor> parts;
    int64_t offset = 0;
    for (const View& v : teacher) {
      auto t = ViewTensor(v, device_);
      auto mean = net_->teacherMean.narrow(0, offset, v.c).view({1, v.c, 1, 1});
      auto std = net_->teacherStd.narrow(0, offset, v.c).view({1, v.c, 1, 1});
      parts.push_back(Resize((t - mean) / std, gridH_, gridW_));
      offset += v.c;
    }
    return parts.size() == 1 ? parts[0] : torch::cat(parts, 1);
  }

  // Each branch's squared error averaged over the channels, [n, 1, gh, gw] (local, global).
  std::pair<torch::Tensor, torch::Tensor> BranchMaps(const View& images, const std::vector<View>& teacher) {
    auto target = Target(teacher);
    auto x = ViewTensor(images, device_);
    auto local = Resize(net_->local(x), gridH_, gridW_);
    auto global = net_->global(x);
    return {(local - target).pow(2).mean(1, true), (global - target).pow(2).mean(1, true)};
  }

  GcadNet* net_ = nullptr;
  int64_t imageH_ = 0, imageW_ = 0, gridH_ = 0, gridW_ = 0, d_ = 0;
  // The calibration stages' running moments (not part of the state: only their results are).
  std::vector<Moments> levelMoments_;
  Moments mapMoments_[2];
};

}  // namespace

std::unique_ptr<Model> CreateGcadModel(const ModelConfig& config) { return std::make_unique<Gcad>(config); }

}  // namespace train
}  // namespace imiad
