// DRAEM follows Zavrtanik et al., "DRAEM - A discriminatively trained reconstruction embedding for surface anomaly
// detection" (ICCV 2021) and its official code VitjanZ/DRAEM (model_unet.py, loss.py, train_DRAEM.py,
// test_DRAEM.py):
// - ReconstructiveSubNetwork(base_width 128): an encoder of 5 stages [conv3x3-BN-ReLU] x 2 with widths b, 2b, 4b, 8b,
//   8b and 4 max-pools, a decoder of 4 x (bilinear x2 with align_corners=True, conv-BN-ReLU, then 2 conv-BN-ReLU),
//   then a 3x3 conv to 3 channels; no skip connections.
// - DiscriminativeSubNetwork(base_channels 64, in 6 = cat(reconstruction, augmented), out 2): a 6-stage encoder
//   (5 pools) and a decoder with skip connections, a 3x3 conv to 2 logits.
// - weights_init: conv weights N(0, 0.02) (conv biases keep PyTorch's default init), BN weight N(1, 0.02), bias 0.
// - loss = MSE(rec, clean) + (1 - SSIM(rec, clean)) + Focal(softmax(logits), mask), where SSIM uses an 11 x 11
//   Gaussian window (sigma 1.5, zero padding 5, per channel) and the value range L guessed from the reconstruction
//   as the official does (1, or 2 while the reconstruction dips below -0.5, as early in training), and the focal loss has gamma 2, alpha 1 and label smoothing
//   1e-5 (loss.py FocalLoss: one-hot clamped to [1e-5, 1 - 1e-5], pt = sum(one_hot * p) + 1e-5).
// - One Adam (betas 0.9, 0.999, eps 1e-8) over both networks; the learning rate of each step is handed in with the
//   batch (lib/methods/draem.ts applies MultiStepLR(0.8, 0.9 of the epochs; gamma 0.2) per epoch).
// - Map = softmax(logits)[:, 1] at the input size (no blur); the image score (max of the 21 x 21 average-pooled map)
//   is taken in lib/methods/draem.ts.
//
// Batches: Step(images = the clean images [n, 3, s, s], views = {augmented [n, 3, s, s], mask [n, 1, s, s],
// learning rate [1, 1, 1, 1]}); Maps(images ignored, views = {images [n, 3, s, s]}). s must be a multiple of 32.
#include "draem.h"

#include <cmath>

#include "blocks.h"
#include "focal.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

nn::Conv2d Conv3(int64_t in, int64_t out) { return nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1)); }

// [conv3x3-BN-ReLU] x 2 (indices 0..5 as the official nn.Sequential).
nn::Sequential DoubleConv(int64_t in, int64_t mid, int64_t out) {
  return nn::Sequential(Conv3(in, mid), nn::BatchNorm2d(mid), nn::ReLU(nn::ReLUOptions(true)), Conv3(mid, out), nn::BatchNorm2d(out),
                        nn::ReLU(nn::ReLUOptions(true)));
}

// Bilinear x2 (align_corners=True), conv3x3-BN-ReLU (indices 0..3).
nn::Sequential Up(int64_t in, int64_t out) {
  return nn::Sequential(nn::Upsample(nn::UpsampleOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kBilinear).align_corners(true)), Conv3(in, out),
                        nn::BatchNorm2d(out), nn::ReLU(nn::ReLUOptions(true)));
}

torch::Tensor Pool(const torch::Tensor& x) { return MaxPool2d(x, 2, 2, 0); }

struct EncoderImpl : nn::Module {
  std::vector<nn::Sequential> blocks;
  // widths: the output width of each stage.
  EncoderImpl(int64_t in, const std::vector<int64_t>& widths) {
    for (size_t i = 0; i < widths.size(); i++) {
      blocks.push_back(register_module("block" + std::to_string(i + 1), DoubleConv(in, widths[i], widths[i])));
      in = widths[i];
    }
  }
  std::vector<torch::Tensor> forward(torch::Tensor x) {
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < blocks.size(); i++) {
      x = blocks[i]->forward(i == 0 ? x : Pool(x));
      out.push_back(x);
    }
    return out;
  }
};
TORCH_MODULE(Encoder);

struct ReconstructiveImpl : nn::Module {
  Encoder encoder{nullptr};
  nn::Sequential up1{nullptr}, db1{nullptr}, up2{nullptr}, db2{nullptr}, up3{nullptr}, db3{nullptr}, up4{nullptr}, db4{nullptr}, fin{nullptr};
  explicit ReconstructiveImpl(int64_t b) {
    encoder = register_module("encoder", Encoder(3, std::vector<int64_t>{b, 2 * b, 4 * b, 8 * b, 8 * b}));
    auto decoder = register_module("decoder", std::make_shared<nn::Module>());
    up1 = decoder->register_module("up1", Up(8 * b, 8 * b));
    db1 = decoder->register_module("db1", DoubleConv(8 * b, 8 * b, 4 * b));
    up2 = decoder->register_module("up2", Up(4 * b, 4 * b));
    db2 = decoder->register_module("db2", DoubleConv(4 * b, 4 * b, 2 * b));
    up3 = decoder->register_module("up3", Up(2 * b, 2 * b));
    db3 = decoder->register_module("db3", DoubleConv(2 * b, 2 * b, b));
    up4 = decoder->register_module("up4", Up(b, b));
    db4 = decoder->register_module("db4", DoubleConv(b, b, b));
    fin = decoder->register_module("fin_out", nn::Sequential(Conv3(b, 3)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = encoder->forward(x).back();
    h = db1->forward(up1->forward(h));
    h = db2->forward(up2->forward(h));
    h = db3->forward(up3->forward(h));
    h = db4->forward(up4->forward(h));
    return fin->forward(h);
  }
};
TORCH_MODULE(Reconstructive);

struct DiscriminativeImpl : nn::Module {
  Encoder encoder{nullptr};
  std::vector<nn::Sequential> ups, dbs;
  nn::Sequential fin{nullptr};
  explicit DiscriminativeImpl(int64_t b) {
    encoder = register_module("encoder_segment", Encoder(6, std::vector<int64_t>{b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b}));
    auto decoder = register_module("decoder_segment", std::make_shared<nn::Module>());
    // (name, up in, up out, skip width, block out) from the deepest level up.
    const std::vector<std::tuple<std::string, int64_t, int64_t, int64_t, int64_t>> levels = {
        {"b", 8 * b, 8 * b, 8 * b, 8 * b}, {"1", 8 * b, 4 * b, 8 * b, 4 * b}, {"2", 4 * b, 2 * b, 4 * b, 2 * b}, {"3", 2 * b, b, 2 * b, b}, {"4", b, b, b, b}};
    for (auto& l : levels) {
      const std::string suffix = std::get<0>(l);
      ups.push_back(decoder->register_module(suffix == "b" ? "up_b" : "up" + suffix, Up(std::get<1>(l), std::get<2>(l))));
      const int64_t in = std::get<2>(l) + std::get<3>(l);
      dbs.push_back(decoder->register_module(suffix == "b" ? "db_b" : "db" + suffix, DoubleConv(in, std::get<4>(l), std::get<4>(l))));
    }
    fin = decoder->register_module("fin_out", nn::Sequential(Conv3(b, 2)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto e = encoder->forward(x);  // b1..b6
    auto h = e[5];
    for (size_t i = 0; i < ups.size(); i++) h = dbs[i]->forward(torch::cat({ups[i]->forward(h), e[4 - i]}, 1));
    return fin->forward(h);
  }
};
TORCH_MODULE(Discriminative);

struct DraemNet : nn::Module {
  Reconstructive recon{nullptr};
  Discriminative seg{nullptr};
  torch::Tensor window;  // the SSIM window [3, 1, 11, 11] (a constant, not saved: registered nowhere)
};

// train_DRAEM.py weights_init.
void WeightsInit(nn::Module& root) {
  torch::NoGradGuard guard;
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      conv->weight.normal_(0.0, 0.02);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      bn->weight.normal_(1.0, 0.02);
      bn->bias.fill_(0);
    }
  }
}

// loss.py create_window(11, channel): a normalised Gaussian (sigma 1.5) as float32, its outer product.
torch::Tensor SsimWindow(int64_t size, int64_t channels) {
  std::vector<float> g(size);
  for (int64_t x = 0; x < size; x++) g[x] = static_cast<float>(std::exp(-std::pow(static_cast<double>(x - size / 2), 2) / (2 * 1.5 * 1.5)));
  auto t = torch::tensor(g, torch::kFloat32);
  t = (t / t.sum()).unsqueeze(1);
  return t.mm(t.t()).unsqueeze(0).unsqueeze(0).expand({channels, 1, size, size}).contiguous();
}

// loss.py ssim(img1, img2, window_size=11, val_range=None): the mean SSIM, with the value range L guessed from img1
// (the reconstruction) as the official does: max 255 if max(img1) > 128 else 1, min -1 if min(img1) < -0.5 else 0.
torch::Tensor Ssim(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& window) {
  const int64_t c = a.size(1), pad = window.size(2) / 2;
  double l = 1;
  {
    torch::NoGradGuard guard;
    const double maxVal = a.max().item<double>() > 128 ? 255 : 1;
    const double minVal = a.min().item<double>() < -0.5 ? -1 : 0;
    l = maxVal - minVal;
  }
  auto conv = [&](const torch::Tensor& x) { return F::conv2d(x, window, F::Conv2dFuncOptions().padding(pad).groups(c)); };
  auto mu1 = conv(a), mu2 = conv(b);
  auto mu1sq = mu1.pow(2), mu2sq = mu2.pow(2), mu12 = mu1 * mu2;
  auto s1 = conv(a * a) - mu1sq, s2 = conv(b * b) - mu2sq, s12 = conv(a * b) - mu12;
  const double c1 = (0.01 * l) * (0.01 * l), c2 = (0.03 * l) * (0.03 * l);
  auto v1 = 2.0 * s12 + c2, v2 = s1 + s2 + c2;
  return (((2 * mu12 + c1) * v1) / ((mu1sq + mu2sq + c1) * v2)).mean();
}

class Draem : public HeadModel {
 public:
  explicit Draem(const ModelConfig& config) : HeadModel(config) {
    auto widths = Extra(config, "widths", {128, 64});
    if (widths.size() != 2 || widths[0] < 1 || widths[1] < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected DRAEM's two base widths (reconstructive, discriminative) of at least 1");
    auto net = std::make_shared<DraemNet>();
    torch::manual_seed(config.seed);  // the caller holds the seed lock
    net->recon = net->register_module("recon", Reconstructive(static_cast<int64_t>(widths[0])));
    net->seg = net->register_module("seg", Discriminative(static_cast<int64_t>(widths[1])));
    WeightsInit(*net);
    net_ = net.get();
    auto optimizer = std::make_unique<FusedAdam>(TrainableParameters(*net), torch::optim::AdamOptions(config.lr));
    Finish(net, std::move(optimizer));
    window_ = SsimWindow(11, 3).to(device_);
  }

  double Step(const View& images, const std::vector<View>& views, const RunControl& control) override {
    std::lock_guard<std::mutex> lock(mutex_);
    double result = 0;
    runtime::Run(config_.threads, [&] {
      if (views.size() != 3) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected DRAEM's augmented images, masks and learning rate");
      CheckImages(images, "clean images", 3);
      CheckImages(views[0], "augmented images", 3);
      CheckImages(views[1], "masks", 1);
      if (views[0].n != images.n || views[1].n != images.n || views[0].h != images.h || views[1].h != images.h) {
        throw InvalidArgument("ERR_IMIAD_DIMS", "Expected DRAEM's clean images, augmented images and masks of the same count and size");
      }
      if (views[2].data == nullptr || views[2].n * views[2].c * views[2].h * views[2].w != 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected DRAEM's learning rate as one number");
      const double lr = views[2].data[0];
      for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
      control.throwIfCancelled();
      net_->train();
      auto clean = ViewTensor(images, device_), aug = ViewTensor(views[0], device_), mask = ViewTensor(views[1], device_);
      // The official's order of operations (autograd's backward order, hence the order in which the gradients of
      // the reconstruction's three uses are summed, follows it).
      auto rec = net_->recon->forward(aug);
      auto joined = torch::cat({rec, aug}, 1);
      auto probabilities = torch::softmax(net_->seg->forward(joined), 1);
      auto l2 = F::mse_loss(rec, clean);
      auto ssim = 1.0 - Ssim(rec, clean, window_);
      auto focal = FocalLoss(probabilities, mask, 2);  // loss.py FocalLoss(gamma 2, alpha None, smooth 1e-5)
      auto loss = l2 + ssim + focal;
      result = loss.item<double>();
      if (!std::isfinite(result)) return;  // the weights stay as they were; the caller stops with the epoch and step
      loss.backward();
      optimizer_->step();
      for (auto& group : optimizer_->param_groups()) {
        for (auto& p : group.params()) p.mutable_grad().reset();
      }
    });
    return result;
  }

  void Maps(const View&, const std::vector<View>& views, int64_t outSize, float* out, const RunControl& control) override {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, [&] {
      if (views.size() != 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected DRAEM's images");
      CheckImages(views[0], "images", 3);
      control.throwIfCancelled();
      c10::InferenceMode guard;
      net_->eval();
      auto x = ViewTensor(views[0], device_);
      auto rec = net_->recon->forward(x);
      auto map = torch::softmax(net_->seg->forward(torch::cat({rec, x}, 1)), 1).narrow(1, 1, 1);
      if (map.size(2) != outSize || map.size(3) != outSize) map = Upsample(map, outSize, false);
      CopyOut(map, out);
    });
  }

 private:
  static void CheckImages(const View& v, const char* what, int64_t channels) {
    if (v.data == nullptr || v.c != channels || v.h != v.w || v.h % 32 != 0 || v.h < 32) {
      throw InvalidArgument("ERR_IMIAD_DIMS", std::string("Expected DRAEM's ") + what + " [n, " + std::to_string(channels) + ", s, s] with s a multiple of 32 but received [" +
                                                  std::to_string(v.n) + ", " + std::to_string(v.c) + ", " + std::to_string(v.h) + ", " + std::to_string(v.w) + "]");
    }
  }

  DraemNet* net_ = nullptr;
  torch::Tensor window_;
};

}  // namespace

std::unique_ptr<Model> CreateDraemModel(const ModelConfig& config) {
  if (config.kind == "draem") return std::make_unique<Draem>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown image model kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
