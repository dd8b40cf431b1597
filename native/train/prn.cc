// PRN follows Zhang et al., "Prototypical Residual Networks for Anomaly Detection and Localization" (CVPR 2023). No
// official code exists; this is the reference implementation xcyao00/PRNet (models/prnet.py, models/modules.py,
// models/attention.py, utils.py, losses/, create_proto_feature_maps.py), with the parameter names of its state dict:
// - Inputs: the frozen ResNet-18's layers 1..4 (c1..c4 channels at sides h, h/2, h/4, h/8; ONNX Runtime computes
//   them, eval mode) and, per level 1..3, K prototype feature maps (k-means centres of the flattened normal training
//   maps, fixed buffers proto1..proto3 [K, c, h, w]).
// - Per level the nearest prototype map (L2 over the whole map; utils.get_prototype_features: pairwise_distance with
//   eps 1e-6, argmin), the residual r = (f - p)^2.
// - ms_fuser1 (MultiScaleFusion(c1, c2, c3)) applied to the features and, with the same weights, to the residuals:
//   out_i = x_i + the other levels brought to level i (deeper: bilinear x2/x4 with align_corners=True then a 1x1
//   conv; shallower: grouped strided convs 3x3/2 or 5x5/4 with groups = the source's channels).
// - Per level cat(features, residuals) (2 c_i channels), then 3 MultiSizeAttention layers: patchify at patch sides
//   h_i, h_i/2, h_i/4, h_i/8 (each at least 1: at the reference's 256 px they are all >= 2; smaller inputs clamp the
//   deepest to 1), q, k, v = per-element affine projections (the reference's Conv1d(d, d, 1, groups=d), computed as
//   x * w + b in the grouped convolution's arithmetic, ProjectionFunction below), softmax(q k^T / d) v, unpatchify, cat of the 4,
//   ResidualBlock(4 C -> C). Then ms_fuser2 (MultiScaleFusion(2 c1, 2 c2, 2 c3)).
// - Decoder from layer4: up (bilinear x2, align_corners=True; conv3x3; BN; ReLU), cat with the fused level, conv_block
//   (2 x conv3x3-BN-ReLU) for levels 3, 2, 1; up1_to_0 (x4), conv_out 3x3 to 1 logit at the input side 4 h.
// - Loss: SmoothL1(sigmoid(logit), mask) (beta 1, mean) + lambda (5) * FocalLoss(alpha 0.5, gamma 4) on
//   [1 - p, p]. Adam(lr, weight decay as L2 in the gradient, betas 0.9, 0.999). PyTorch's default initialisation
//   (the projections: U(-1, 1), as kaiming_uniform(a = sqrt 5) with fan-in 1 gives).
// - Map = sigmoid(logit) (the image score, the mean of the top 100 pixels, is taken in lib/methods/prn.ts).
//
// The prototypes (create_proto_feature_maps.py: sklearn KMeans(K, random_state=0), K = 10 % of the training images):
// CalibrateStage("features", levels 1..3 [+ 4]) collects the normal training features, CalibrateStage("prototypes")
// collects its batch too (the last one) and runs k-means on them per level (k-means++ seeding and Lloyd iterations until no assignment changes, at most 300;
// the best of `kmeansInit` (default 10, sklearn's n_init) seeded runs by inertia; an empty cluster keeps its centre)
// and drops them.
//
// CalibrateStage("batchnorm", levels 1..4) re-estimates every batch norm's running statistics at the final weights
// (lib/methods/prn.ts feeds it training batches after the last epoch; see there why).
//
// Batches: Step(images ignored, views = {layer1, layer2, layer3, layer4, mask [n, 1, 4h, 4h]}); Maps(images ignored,
// views = {layer1 .. layer4}).
#include "prn.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "blocks.h"
#include "focal.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

nn::Upsample Up(double scale) {
  return nn::Upsample(nn::UpsampleOptions().scale_factor(std::vector<double>{scale, scale}).mode(torch::kBilinear).align_corners(true));
}

// modules.UpsampleConv: bilinear upsampling (align_corners=True), then a 1x1 conv.
struct UpsampleConvImpl : nn::Module {
  nn::Upsample upsample{nullptr};
  nn::Conv2d conv{nullptr};
  UpsampleConvImpl(int64_t in, int64_t out, double scale) {
    upsample = register_module("upsample", Up(scale));
    conv = register_module("conv", ConvBias(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv(upsample(x)); }
};
TORCH_MODULE(UpsampleConv);

// modules.MultiScaleFusion. One operation per statement, in Python's left-to-right order: the autograd engine runs
// backward nodes in reverse creation order, so the order in which the terms are made is the order in which their
// gradients are summed (C++ leaves the order of a sum's operands open).
struct FusionImpl : nn::Module {
  UpsampleConv l2_to_l1{nullptr}, l3_to_l1{nullptr}, l3_to_l2{nullptr};
  nn::Conv2d l1_to_l2{nullptr}, l1_to_l3{nullptr}, l2_to_l3{nullptr};
  explicit FusionImpl(const std::vector<int64_t>& c) {
    l2_to_l1 = register_module("l2_to_l1", UpsampleConv(c[1], c[0], 2));
    l3_to_l1 = register_module("l3_to_l1", UpsampleConv(c[2], c[0], 4));
    l1_to_l2 = register_module("l1_to_l2", ConvBias(c[0], c[1], 3, 2, 1, c[0]));
    l3_to_l2 = register_module("l3_to_l2", UpsampleConv(c[2], c[1], 2));
    l1_to_l3 = register_module("l1_to_l3", ConvBias(c[0], c[2], 5, 4, 2, c[0]));
    l2_to_l3 = register_module("l2_to_l3", ConvBias(c[1], c[2], 3, 2, 1, c[1]));
  }
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& x) {
    auto out1 = x[0] + l2_to_l1(x[1]);
    out1 = out1 + l3_to_l1(x[2]);
    auto out2 = x[1] + l1_to_l2(x[0]);
    out2 = out2 + l3_to_l2(x[2]);
    auto out3 = x[2] + l1_to_l3(x[0]);
    out3 = out3 + l2_to_l3(x[1]);
    return {out1, out2, out3};
  }
};
TORCH_MODULE(Fusion);

// attention.ResidualBlock.
struct ResidualBlockImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, downsample{nullptr};
  nn::BatchNorm2d norm1{nullptr}, norm2{nullptr};
  ResidualBlockImpl(int64_t in, int64_t c) {
    conv1 = register_module("conv1", ConvBias(in, c, 3, 1, 1));
    norm1 = register_module("norm1", nn::BatchNorm2d(c));
    conv2 = register_module("conv2", ConvBias(c, c, 3, 1, 1));
    norm2 = register_module("norm2", nn::BatchNorm2d(c));
    downsample = register_module("downsample", ConvBias(in, c, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto identity = downsample(x);
    auto out = norm1(conv1(x)).relu();
    out = norm2(conv2(out));
    return (out + identity).relu();
  }
};
TORCH_MODULE(ResidualBlock);

// The reference's depthwise Conv1d(d, d, 1, groups=d) on t [B, d, L] (weight [d, 1, 1], bias [d]) without a convolution
// of d groups (PyTorch runs one small convolution per group there: most of the reference's training time), in the
// arithmetic of the convolution PyTorch 1.13 picks, so that the numbers are the reference's to the last bit. For a 1x1
// kernel it takes oneDNN's when the batch is 16 or more or more than one thread runs, else its own (Slow2d: one GEMM
// per group and image):
// - forward: oneDNN y = fma(t, w, b); Slow2d y = t * w, rounded, + b (the bias is the GEMM's initial output);
// - d/dt = g * w;
// - d/dw[j]: oneDNN one chain of fused multiply-adds over the images and positions in order; Slow2d the sum over the
//   images, in order, of each image's dot product over L (a chain of fused multiply-adds, the BLAS kernel's k loop);
// - d/db[j]: oneDNN one chain of additions in the same order; Slow2d the sum of g[:, j, :] as one contiguous
//   reduction (each group's copied output summed; one thread, so ATen reduces serially).
// Measured against torch.nn.functional.conv1d: identical at 1 and 2 threads, batches 4-48 (docs/detectors-prn.md).
class ProjectionFunction : public torch::autograd::Function<ProjectionFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& t, const torch::Tensor& w, const torch::Tensor& b) {
    ctx->save_for_backward({t, w});
    const bool cpu = t.is_cpu() && t.scalar_type() == torch::kFloat32;
    const bool dnnl = t.size(0) >= 16 || at::get_num_threads() > 1;
    ctx->saved_data["dnnl"] = dnnl;
    if (!cpu || !dnnl) return t * w.view({1, -1, 1}) + b.view({1, -1, 1});
    auto tc = t.contiguous();
    auto y = torch::empty_like(tc);
    const int64_t n = tc.size(0), d = tc.size(1), l = tc.size(2);
    const float* tp = tc.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* bp = b.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, n * d, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, l)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; r++) {
        const int64_t j = r % d;
        for (int64_t k = 0; k < l; k++) yp[r * l + k] = std::fma(tp[r * l + k], wp[j], bp[j]);
      }
    });
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& t = saved[0];
    const auto& w = saved[1];
    const bool dnnl = ctx->saved_data["dnnl"].toBool();
    auto g = grads[0].contiguous();
    auto gt = g * w.view({1, -1, 1});
    if (!g.is_cpu() || g.scalar_type() != torch::kFloat32) {
      return {gt, (g * t).sum(std::vector<int64_t>{0, 2}).view({-1, 1, 1}), g.sum(std::vector<int64_t>{0, 2})};
    }
    auto tc = t.contiguous();
    const int64_t n = g.size(0), d = g.size(1), l = g.size(2);
    auto gw = torch::empty({d, 1, 1}, g.options());
    auto gb = dnnl ? torch::empty({d}, g.options()) : g.permute({1, 0, 2}).contiguous().sum(std::vector<int64_t>{1, 2});
    const float* gp = g.data_ptr<float>();
    const float* tp = tc.data_ptr<float>();
    float* wout = gw.data_ptr<float>();
    float* bout = dnnl ? gb.data_ptr<float>() : nullptr;
    at::parallel_for(0, d, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, n * l)), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; j++) {
        float accW = 0, accB = 0;
        for (int64_t i = 0; i < n; i++) {
          const float* gr = gp + (i * d + j) * l;
          const float* tr = tp + (i * d + j) * l;
          if (dnnl) {
            for (int64_t k = 0; k < l; k++) {
              accW = std::fma(gr[k], tr[k], accW);
              accB += gr[k];
            }
          } else {
            float dot = 0;
            for (int64_t k = 0; k < l; k++) dot = std::fma(gr[k], tr[k], dot);
            accW += dot;
          }
        }
        wout[j] = accW;
        if (dnnl) bout[j] = accB;
      }
    });
    return {gt, gw, gb};
  }
};

// The projection's parameters, named as the reference's Conv1d.
struct ProjectionImpl : nn::Module {
  torch::Tensor weight, bias;
  explicit ProjectionImpl(int64_t d) {
    weight = register_parameter("weight", torch::empty({d, 1, 1}).uniform_(-1, 1));
    bias = register_parameter("bias", torch::empty({d}).uniform_(-1, 1));
  }
  // t [B, d, L] -> [B, d, L].
  torch::Tensor forward(const torch::Tensor& t) { return ProjectionFunction::apply(t, weight, bias); }
};
TORCH_MODULE(Projection);

// attention.MultiSizeAttention.
struct MsaImpl : nn::Module {
  int64_t c;
  std::vector<int64_t> ps;
  std::vector<Projection> q, k, v;
  ResidualBlock residual{nullptr};
  MsaImpl(int64_t channels, int64_t height) : c(channels) {
    for (int i = 0; i < 4; i++) {
      const int64_t p = std::max<int64_t>(1, height >> i);
      const int64_t d = c * p * p;
      ps.push_back(p);
      q.push_back(register_module("q_proj" + std::to_string(i + 1), Projection(d)));
      k.push_back(register_module("k_proj" + std::to_string(i + 1), Projection(d)));
      v.push_back(register_module("v_proj" + std::to_string(i + 1), Projection(d)));
    }
    residual = register_module("residual_block", ResidualBlock(4 * c, c));
  }
  // attention.MultiSizeAttention.patchify / unpatchify, with the reference's einsum permutations.
  static torch::Tensor Patchify(const torch::Tensor& x, int64_t p, int64_t c) {
    const int64_t n = x.size(0), h = x.size(2) / p;
    auto y = torch::einsum("nchpwq->nhwcpq", {x.reshape({n, c, h, p, h, p})});
    return y.reshape({n, h * h, c * p * p});
  }
  static torch::Tensor Unpatchify(const torch::Tensor& x, int64_t p, int64_t c) {
    const int64_t n = x.size(0), h = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(x.size(1)))));
    auto y = torch::einsum("nhwcpq->nchpwq", {x.reshape({n, h, h, c, p, p})});
    return y.reshape({n, c, h * p, h * p});
  }
  torch::Tensor forward(const torch::Tensor& x) {
    std::vector<torch::Tensor> outs;
    for (size_t i = 0; i < ps.size(); i++) {
      const int64_t p = ps[i];
      auto t = Patchify(x, p, c).permute({0, 2, 1}).contiguous();  // [B, d, L]
      auto qi = q[i](t).permute({0, 2, 1});
      auto ki = k[i](t).permute({0, 2, 1});
      auto vi = v[i](t).permute({0, 2, 1});
      auto scores = torch::einsum("ble,bse->bls", {qi, ki}) * (1.0 / static_cast<double>(c * p * p));
      auto attn = torch::softmax(scores, -1);
      outs.push_back(Unpatchify(torch::einsum("bls,bsd->bld", {attn, vi}), p, c));
    }
    return residual(torch::cat(outs, 1));
  }
};
TORCH_MODULE(Msa);

nn::Sequential UpBlock(int64_t in, int64_t out, double scale) {
  return nn::Sequential(Up(scale), ConvBias(in, out, 3, 1, 1), nn::BatchNorm2d(out), nn::ReLU(nn::ReLUOptions(true)));
}

nn::Sequential ConvBlock(int64_t in, int64_t out) {
  return nn::Sequential(ConvBias(in, out, 3, 1, 1), nn::BatchNorm2d(out), nn::ReLU(nn::ReLUOptions(true)), ConvBias(out, out, 3, 1, 1), nn::BatchNorm2d(out),
                        nn::ReLU(nn::ReLUOptions(true)));
}

struct PrnNet : nn::Module {
  Fusion fuser1{nullptr}, fuser2{nullptr};
  std::vector<nn::Sequential> msa;  // per level 1..3
  nn::Sequential up4_to_3{nullptr}, conv_block3{nullptr}, up3_to_2{nullptr}, conv_block2{nullptr}, up2_to_1{nullptr}, conv_block1{nullptr}, up1_to_0{nullptr};
  nn::Conv2d conv_out{nullptr};
  std::vector<torch::Tensor> protos;  // proto1..proto3 [K, c, h, w]
  torch::Tensor fitted;               // [1]: 1 once the prototypes are set

  PrnNet(const std::vector<int64_t>& c, const std::vector<int64_t>& h, int64_t k, int64_t layers) {
    fuser1 = register_module("ms_fuser1", Fusion(std::vector<int64_t>{c[0], c[1], c[2]}));
    fuser2 = register_module("ms_fuser2", Fusion(std::vector<int64_t>{2 * c[0], 2 * c[1], 2 * c[2]}));
    auto attn = register_module("attn_module", std::make_shared<nn::Module>());
    for (int l = 0; l < 3; l++) {
      nn::Sequential s;
      for (int64_t i = 0; i < layers; i++) s->push_back(Msa(2 * c[l], h[l]));
      msa.push_back(attn->register_module("layer" + std::to_string(l + 1) + "_msa", s));
    }
    up4_to_3 = register_module("up4_to_3", UpBlock(c[3], c[2], 2));
    conv_block3 = register_module("conv_block3", ConvBlock(3 * c[2], c[2]));
    up3_to_2 = register_module("up3_to_2", UpBlock(c[2], c[1], 2));
    conv_block2 = register_module("conv_block2", ConvBlock(3 * c[1], c[1]));
    up2_to_1 = register_module("up2_to_1", UpBlock(c[1], c[0], 2));
    conv_block1 = register_module("conv_block1", ConvBlock(3 * c[0], c[0]));
    up1_to_0 = register_module("up1_to_0", UpBlock(c[0], c[0], 4));
    conv_out = register_module("conv_out", ConvBias(c[0], 1, 3, 1, 1));
    for (int l = 0; l < 3; l++) protos.push_back(register_buffer("proto" + std::to_string(l + 1), torch::zeros({k, c[l], h[l], h[l]})));
    fitted = register_buffer("prototypes_fitted", torch::zeros({1}));
  }

  // utils.get_prototype_features + get_residual_features: (f - p)^2 to the nearest prototype map.
  static torch::Tensor Residual(const torch::Tensor& f, const torch::Tensor& protos) {
    const int64_t b = f.size(0), k = protos.size(0);
    auto flat = f.reshape({b, -1});
    auto dist = torch::empty({b, k}, f.options());
    for (int64_t j = 0; j < k; j++) dist.select(1, j).copy_((flat - protos[j].reshape({1, -1}) + 1e-6).pow(2).sum(1));
    auto matched = protos.index_select(0, dist.argmin(1));
    return (f - matched).pow(2);
  }

  torch::Tensor forward(const std::vector<torch::Tensor>& f) {
    std::vector<torch::Tensor> features{f[0], f[1], f[2]}, residuals;
    {
      torch::NoGradGuard guard;
      for (int l = 0; l < 3; l++) residuals.push_back(Residual(f[l], protos[l]));
    }
    auto a = fuser1->forward(features);
    auto r = fuser1->forward(residuals);
    std::vector<torch::Tensor> joined, attended;
    for (int l = 0; l < 3; l++) joined.push_back(torch::cat({a[l], r[l]}, 1));
    for (int l = 0; l < 3; l++) attended.push_back(msa[l]->forward(joined[l]));
    auto fused = fuser2->forward(attended);
    auto x3 = conv_block3->forward(torch::cat({fused[2], up4_to_3->forward(f[3])}, 1));
    auto x2 = conv_block2->forward(torch::cat({fused[1], up3_to_2->forward(x3)}, 1));
    auto x1 = conv_block1->forward(torch::cat({fused[0], up2_to_1->forward(x2)}, 1));
    return conv_out(up1_to_0->forward(x1));
  }
};

// Squared distances [n, k] of rows x [n, d] to centres c [k, d] (|x|^2 - 2 x c^T + |c|^2).
torch::Tensor SquaredDistances(const torch::Tensor& x, const torch::Tensor& xx, const torch::Tensor& c) {
  return (xx.unsqueeze(1) - 2 * torch::matmul(x, c.t()) + c.pow(2).sum(1).unsqueeze(0)).clamp_min(0);
}

// k-means++ seeding then Lloyd iterations (see the header comment); the best of `inits` runs; centres [k, d].
torch::Tensor KMeans(const torch::Tensor& x, int64_t k, int64_t inits, uint64_t seed, const RunControl& control) {
  const int64_t n = x.size(0);
  std::mt19937_64 gen(seed);
  auto uniform = [&] { return static_cast<double>(gen() >> 11) * (1.0 / 9007199254740992.0); };
  auto xx = x.pow(2).sum(1);
  torch::Tensor best;
  double bestInertia = INFINITY;
  for (int64_t run = 0; run < inits; run++) {
    std::vector<int64_t> chosen{std::min<int64_t>(n - 1, static_cast<int64_t>(uniform() * static_cast<double>(n)))};
    auto closest = SquaredDistances(x, xx, x[chosen[0]].unsqueeze(0)).squeeze(1).to(torch::kFloat64);
    while (static_cast<int64_t>(chosen.size()) < k) {
      control.throwIfCancelled();
      const double total = closest.sum().item<double>();
      int64_t pick = -1;
      auto d = closest.accessor<double, 1>();
      if (total > 0) {
        const double r = uniform() * total;
        double acc = 0;
        for (int64_t i = 0; i < n; i++) {
          acc += d[i];
          if (acc > r && d[i] > 0) {
            pick = i;
            break;
          }
        }
        if (pick < 0) {
          for (int64_t i = n - 1; i >= 0 && pick < 0; i--) if (d[i] > 0) pick = i;
        }
      } else {
        // Every row coincides with a chosen centre: the next row not chosen yet.
        for (int64_t i = 0; i < n && pick < 0; i++) if (std::find(chosen.begin(), chosen.end(), i) == chosen.end()) pick = i;
      }
      chosen.push_back(pick);
      closest = torch::minimum(closest, SquaredDistances(x, xx, x[pick].unsqueeze(0)).squeeze(1).to(torch::kFloat64));
    }
    auto centres = x.index_select(0, torch::tensor(chosen, torch::kInt64)).clone();
    torch::Tensor assign;
    for (int it = 0; it < 300; it++) {
      control.throwIfCancelled();
      auto next = SquaredDistances(x, xx, centres).argmin(1);
      if (assign.defined() && torch::equal(assign, next)) break;
      assign = next;
      for (int64_t j = 0; j < k; j++) {
        auto members = (assign == j).nonzero().squeeze(1);
        if (members.numel() > 0) centres[j].copy_(x.index_select(0, members).mean(0));
      }
    }
    const double inertia = std::get<0>(SquaredDistances(x, xx, centres).min(1)).to(torch::kFloat64).sum().item<double>();
    if (inertia < bestInertia) {
      bestInertia = inertia;
      best = centres;
    }
  }
  return best;
}

class Prn : public HeadModel {
 public:
  explicit Prn(const ModelConfig& config) : HeadModel(config) {
    const auto& c = config.teacherChannels;
    if (c.size() != 4) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected PRN's 4 feature levels (ResNet-18 layers 1..4)");
    auto sides = Extra(config, "sides", {});
    if (sides.size() != 4) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected PRN's 4 level sides");
    for (int l = 0; l < 4; l++) {
      h_.push_back(static_cast<int64_t>(sides[l]));
      if (h_[l] < 1 || (l > 0 && h_[l] * 2 != h_[l - 1])) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected PRN's level sides to halve from level to level");
    }
    k_ = static_cast<int64_t>(Extra(config, "k", {1})[0]);
    if (k_ < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least one prototype");
    const int64_t layers = static_cast<int64_t>(Extra(config, "attentionLayers", {3})[0]);
    if (layers < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least one attention layer");
    inits_ = static_cast<int64_t>(Extra(config, "kmeansInit", {10})[0]);
    lambda_ = Extra(config, "focalWeight", {5})[0];
    torch::manual_seed(config.seed);  // the caller holds the seed lock
    auto net = std::make_shared<PrnNet>(c, h_, k_, layers);
    net_ = net.get();
    auto optimizer = std::make_unique<torch::optim::Adam>(
        TrainableParameters(*net), torch::optim::AdamOptions(config.lr).betas(std::make_tuple(config.beta1, config.beta2)).weight_decay(config.weightDecay));
    Finish(net, std::move(optimizer));
  }

  void CalibrateStage(const std::string& stage, const View&, const std::vector<View>& features, bool reset, const RunControl& control) override {
    OnTrainingThread([&] {
      control.throwIfCancelled();
      if (stage == "batchnorm") {
        // Precise batch-norm statistics: the plain average over the batches fed (momentum None) of the training-mode
        // batch statistics at the final weights; `reset` starts over. The weights do not change.
        auto f = Levels(features);
        torch::NoGradGuard guard;
        std::vector<nn::BatchNorm2dImpl*> norms;
        for (auto& m : net_->modules(/*include_self=*/false)) {
          if (auto* bn = m->as<nn::BatchNorm2d>()) norms.push_back(bn);
        }
        for (auto* bn : norms) {
          if (reset) bn->reset_running_stats();
          bn->options.momentum(c10::nullopt);
        }
        net_->train();
        net_->forward(f);
        for (auto* bn : norms) bn->options.momentum(0.1);
        return;
      }
      if (stage != "features" && stage != "prototypes") throw InvalidArgument("ERR_IMIAD_ARGUMENT", "PRN has no calibration stage " + stage);
      if (features.size() < 3) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected PRN's feature levels 1..3 for its prototypes");
      std::vector<View> three(features.begin(), features.begin() + 3);
      std::vector<int64_t> sides;
      for (int l = 0; l < 3; l++) sides.insert(sides.end(), {h_[l], h_[l]});
      CheckLevels(three, std::vector<int64_t>(config_.teacherChannels.begin(), config_.teacherChannels.begin() + 3), sides);
      if (reset || store_.size() != 3) store_.assign(3, {});
      for (int l = 0; l < 3; l++) store_[l].push_back(ViewTensor(three[l], torch::kCPU).reshape({three[l].n, -1}).clone());
      if (stage == "features") return;
      const int64_t n = store_.empty() ? 0 : torch::cat(store_[0], 0).size(0);
      if (n < k_) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least " + std::to_string(k_) + " training images' features for " + std::to_string(k_) + " prototypes but received " + std::to_string(n));
      torch::NoGradGuard guard;
      for (int l = 0; l < 3; l++) {
        auto x = torch::cat(store_[l], 0);
        store_[l].clear();
        auto centres = KMeans(x, k_, inits_, config_.seed + static_cast<uint64_t>(l), control);
        net_->protos[l].copy_(centres.reshape(net_->protos[l].sizes()).to(device_));
      }
      store_.clear();
      net_->fitted.fill_(1);
    });
  }

  double Step(const View&, const std::vector<View>& views, const RunControl& control) override {
    return OnTrainingThread([&] {
      if (views.size() != 5) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected PRN's 4 feature levels and the masks");
      auto f = Levels(std::vector<View>(views.begin(), views.begin() + 4));
      const View& m = views[4];
      const int64_t s = 4 * h_[0];
      if (m.data == nullptr || m.n != views[0].n || m.c != 1 || m.h != s || m.w != s) {
        throw InvalidArgument("ERR_IMIAD_DIMS", "Expected PRN's masks [" + std::to_string(views[0].n) + ", 1, " + std::to_string(s) + ", " + std::to_string(s) + "]");
      }
      control.throwIfCancelled();
      net_->train();
      auto mask = ViewTensor(m, device_);
      auto p = torch::sigmoid(net_->forward(f));
      // losses/smooth_l1_loss.py (beta 1, mean), then the focal term: one operation per statement, in Python's order.
      auto diff = torch::abs(p - mask);
      auto below = diff < 1.0;
      auto quadratic = 0.5 * diff;
      quadratic = quadratic * diff;
      quadratic = quadratic / 1.0;
      auto linear = diff - 0.5;
      auto loss = torch::where(below, quadratic, linear).mean();
      auto complement = 1 - p;
      auto focal = FocalLoss(torch::cat({complement, p}, 1), mask, 4, 0.5);
      loss = loss + lambda_ * focal;
      const double value = loss.item<double>();
      if (!std::isfinite(value)) return value;  // the weights stay as they were; the caller stops
      loss.backward();
      optimizer_->step();
      for (auto& group : optimizer_->param_groups()) {
        for (auto& q : group.params()) q.mutable_grad().reset();
      }
      return value;
    });
  }

  void Maps(const View&, const std::vector<View>& views, int64_t outSize, float* out, const RunControl& control) override {
    OnTrainingThread([&] {
      auto f = Levels(views);
      control.throwIfCancelled();
      c10::InferenceMode guard;
      net_->eval();
      auto map = torch::sigmoid(net_->forward(f));
      if (map.size(2) != outSize || map.size(3) != outSize) map = Upsample(map, outSize, false);
      CopyOut(map, out);
    });
  }

 private:
  std::vector<torch::Tensor> Levels(const std::vector<View>& views) {
    std::vector<int64_t> sides;
    for (int l = 0; l < 4; l++) sides.insert(sides.end(), {h_[l], h_[l]});
    CheckLevels(views, config_.teacherChannels, sides);
    if (net_->fitted.item<float>() != 1) throw InvalidArgument("ERR_IMIAD_STATE", "PRN's prototypes are not set (calibrate the 'features' and 'prototypes' stages first)");
    std::vector<torch::Tensor> f;
    for (auto& v : views) f.push_back(ViewTensor(v, device_));
    return f;
  }

  PrnNet* net_ = nullptr;
  std::vector<int64_t> h_;
  int64_t k_ = 1, inits_ = 10;
  double lambda_ = 5;
  std::vector<std::vector<torch::Tensor>> store_;
};

}  // namespace

std::unique_ptr<Model> CreatePrnModel(const ModelConfig& config) {
  if (config.kind == "prn") return std::make_unique<Prn>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown model kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
