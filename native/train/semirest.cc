// SemiREST (Li, Wu, Chen, Wang, Shen, "Efficient Anomaly Detection with Budget Annotation Using Semi-Supervised
// Residual Transformer", arXiv 2306.03492; no public code): the trainable part, a small sliding-window (Swin-like)
// transformer over the map of position-constrained patch-matching residuals, with a classifier per block (one
// feature cell = one 8 x 8-pixel block at stride 8). The residuals are computed in lib/methods/semirest.ts (frozen
// PatchCore features, the addon's k-NN per position); this file only sees residual maps and block labels.
// Every choice below is ours where the paper gives none (docs/detectors-semirest.md lists them):
// - Embedding: Linear(C -> dim) per cell, then LayerNorm (Swin's patch embedding norm; the cells are the tokens).
// - depth blocks, each x + WindowAttention(LN(x)) then x + MLP(LN(x)) (pre-norm, GELU, ratio mlpRatio), the odd
//   blocks on windows shifted by window/2 with Swin's attention mask (-100 between regions) and a cyclic roll;
//   relative position bias per head ((2w - 1)^2 table, normal(0, 0.02) init as Swin's trunc_normal_); linear layers
//   normal(0, 0.02) with zero bias, LayerNorm weight 1, bias 0 (Swin's _init_weights). No dropout, no drop-path.
//   lib/methods/semirest.ts makes the window at most the grid side; a grid that is not a multiple of it is
//   zero-padded on the right and the bottom (as Swin pads, no mask) and cropped back. The shift applies only when
//   the grid is larger than one window.
// - Head: LayerNorm, Linear(dim -> 2): the logits of "normal" and "anomalous" per block.
// - Loss: focal loss (gamma, default 2; no alpha) of the softmax against the block labels, mean over blocks.
// - AdamW (betas 0.9, 0.999, weight decay as configured, Swin's 0.05 by default in the caller); the learning rate is
//   set by the caller (SetLearningRate).
// - Map = softmax channel 1 per block [n, gh, gw], bilinear to outSize when it differs (align_corners=False).
//
// Batches: Step(images unused, views = {residuals [n, C, gh, gw], block labels [n, 1, gh, gw] 0/1});
// Maps(images unused, views = {residuals [n, C, gh, gw]}, outSize).
#include "semirest.h"

#include <cmath>

#include "blocks.h"
#include "runtime.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

// Swin's window_partition: [n, H, W, C] -> [n * nW, w * w, C].
torch::Tensor WindowPartition(const torch::Tensor& x, int64_t w) {
  const int64_t n = x.size(0), h = x.size(1), wd = x.size(2), c = x.size(3);
  return x.view({n, h / w, w, wd / w, w, c}).permute({0, 1, 3, 2, 4, 5}).contiguous().view({-1, w * w, c});
}

// Swin's window_reverse: [n * nW, w * w, C] -> [n, H, W, C].
torch::Tensor WindowReverse(const torch::Tensor& windows, int64_t w, int64_t h, int64_t wd) {
  const int64_t n = windows.size(0) / ((h / w) * (wd / w));
  return windows.view({n, h / w, wd / w, w, w, -1}).permute({0, 1, 3, 2, 4, 5}).contiguous().view({n, h, wd, -1});
}

struct WindowAttentionImpl : nn::Module {
  int64_t dim, heads, window;
  double scale;
  nn::Linear qkv{nullptr}, proj{nullptr};
  // The relative position bias table [(2w-1)^2, heads] (a parameter) and the one-hot of Swin's
  // relative_position_index [w^2 * w^2, (2w-1)^2] (a constant, not saved, made on the first call's device): the bias is
  // onehot x table, a matrix product, so that its gradient is deterministic on CUDA too (index_select's is not).
  torch::Tensor table, onehot;
  WindowAttentionImpl(int64_t dim_, int64_t heads_, int64_t window_) : dim(dim_), heads(heads_), window(window_) {
    scale = 1.0 / std::sqrt(static_cast<double>(dim / heads));
    qkv = register_module("qkv", nn::Linear(dim, 3 * dim));
    proj = register_module("proj", nn::Linear(dim, dim));
    table = register_parameter("relative_position_bias_table", torch::zeros({(2 * window - 1) * (2 * window - 1), heads}));
    auto coords = torch::stack(torch::meshgrid({torch::arange(window), torch::arange(window)}, "ij")).flatten(1);  // [2, w^2]
    auto rel = (coords.unsqueeze(2) - coords.unsqueeze(1)).permute({1, 2, 0}).contiguous();  // [w^2, w^2, 2]
    rel = rel + (window - 1);
    auto idx = rel.select(2, 0) * (2 * window - 1) + rel.select(2, 1);
    onehot = F::one_hot(idx.flatten(), (2 * window - 1) * (2 * window - 1)).to(torch::kFloat32);
  }
  // x [B, N, C]; mask [nW, N, N] or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    const int64_t b = x.size(0), n = x.size(1);
    auto q3 = qkv->forward(x).view({b, n, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
    auto q = q3[0] * scale, k = q3[1], v = q3[2];
    auto attn = q.matmul(k.transpose(-2, -1));  // [B, heads, N, N]
    if (onehot.device() != x.device()) onehot = onehot.to(x.device());
    auto bias = onehot.mm(table).view({n, n, heads}).permute({2, 0, 1});
    attn = attn + bias.unsqueeze(0);
    if (mask.defined()) {
      const int64_t nw = mask.size(0);
      attn = attn.view({b / nw, nw, heads, n, n}) + mask.unsqueeze(1).unsqueeze(0);
      attn = attn.view({b, heads, n, n});
    }
    attn = torch::softmax(attn, -1);
    auto out = attn.matmul(v).transpose(1, 2).reshape({b, n, dim});
    return proj->forward(out);
  }
};
TORCH_MODULE(WindowAttention);

struct SwinBlockImpl : nn::Module {
  int64_t window, shift;
  nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  WindowAttention attn{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
  SwinBlockImpl(int64_t dim, int64_t heads, int64_t window_, int64_t shift_, int64_t hidden) : window(window_), shift(shift_) {
    norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({dim})));
    attn = register_module("attn", WindowAttention(dim, heads, window));
    norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({dim})));
    fc1 = register_module("fc1", nn::Linear(dim, hidden));
    fc2 = register_module("fc2", nn::Linear(hidden, dim));
  }
  // x [n, H, W, C] with H, W multiples of the window; mask for the shifted windows (undefined when shift is 0).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    const int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
    auto y = norm1->forward(x);
    if (shift > 0) y = torch::roll(y, {-shift, -shift}, {1, 2});
    auto windows = attn->forward(WindowPartition(y, window), shift > 0 ? mask : torch::Tensor());
    y = WindowReverse(windows, window, h, w);
    if (shift > 0) y = torch::roll(y, {shift, shift}, {1, 2});
    auto out = x + y.view({n, h, w, c});
    return out + fc2->forward(F::gelu(fc1->forward(norm2->forward(out))));
  }
};
TORCH_MODULE(SwinBlock);

struct SemiRestNet : nn::Module {
  nn::Linear embed{nullptr}, head{nullptr};
  nn::LayerNorm embedNorm{nullptr}, headNorm{nullptr};
  std::vector<SwinBlock> blocks;
};

// Swin's attention mask of the shifted windows on an H x W grid: [nW, w^2, w^2], 0 within a region, -100 across.
torch::Tensor ShiftMask(int64_t h, int64_t w, int64_t window, int64_t shift) {
  auto img = torch::zeros({1, h, w, 1});
  int64_t cnt = 0;
  const std::vector<std::pair<int64_t, int64_t>> slices = {{0, h - window}, {h - window, h - shift}, {h - shift, h}};
  const std::vector<std::pair<int64_t, int64_t>> wslices = {{0, w - window}, {w - window, w - shift}, {w - shift, w}};
  for (auto& hs : slices) {
    for (auto& ws : wslices) {
      if (hs.second > hs.first && ws.second > ws.first) {
        img.narrow(1, hs.first, hs.second - hs.first).narrow(2, ws.first, ws.second - ws.first).fill_(static_cast<double>(cnt));
      }
      cnt++;
    }
  }
  auto mw = WindowPartition(img, window).squeeze(-1);  // [nW, w^2]
  auto diff = mw.unsqueeze(1) - mw.unsqueeze(2);
  return torch::where(diff != 0, torch::full_like(diff, -100.0), torch::zeros_like(diff));
}

class SemiRest : public HeadModel {
 public:
  explicit SemiRest(const ModelConfig& config) : HeadModel(config) {
    if (config.teacherChannels.size() != 1 || config.teacherChannels[0] < 1) {
      throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Expected SemiREST's residual channels as one positive number");
    }
    channels_ = config.teacherChannels[0];
    auto arch = Extra(config, "arch", {96, 4, 3, 8, 4});  // dim, depth, heads, window, mlp ratio
    auto gamma = Extra(config, "gamma", {2});
    if (arch.size() != 5 || arch[0] < 1 || arch[1] < 1 || arch[2] < 1 || arch[3] < 1 || arch[4] < 1 || static_cast<int64_t>(arch[0]) % static_cast<int64_t>(arch[2]) != 0) {
      throw InvalidArgument("ERR_IMIAD_RANGE", "Expected SemiREST's architecture as (dim, depth, heads, window, mlp ratio), positive, dim a multiple of heads");
    }
    if (gamma.size() != 1 || !(gamma[0] >= 0)) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected SemiREST's focal gamma >= 0");
    gamma_ = gamma[0];
    dim_ = static_cast<int64_t>(arch[0]);
    const int64_t depth = static_cast<int64_t>(arch[1]), heads = static_cast<int64_t>(arch[2]);
    window_ = static_cast<int64_t>(arch[3]);
    const int64_t hidden = static_cast<int64_t>(arch[4]) * dim_;
    torch::manual_seed(config.seed);  // the caller holds the seed lock
    auto net = std::make_shared<SemiRestNet>();
    net->embed = net->register_module("embed", nn::Linear(channels_, dim_));
    net->embedNorm = net->register_module("embed_norm", nn::LayerNorm(nn::LayerNormOptions({dim_})));
    for (int64_t i = 0; i < depth; i++) {
      // The shift is decided per call (it needs the grid); the block stores half a window as its shift.
      net->blocks.push_back(net->register_module("block" + std::to_string(i), SwinBlock(dim_, heads, window_, i % 2 == 1 ? window_ / 2 : 0, hidden)));
    }
    net->headNorm = net->register_module("head_norm", nn::LayerNorm(nn::LayerNormOptions({dim_})));
    net->head = net->register_module("head", nn::Linear(dim_, 2));
    {
      torch::NoGradGuard guard;
      for (auto& m : net->modules(/*include_self=*/false)) {
        if (auto* lin = m->as<nn::Linear>()) {
          lin->weight.normal_(0.0, 0.02);
          lin->bias.zero_();
        } else if (auto* ln = m->as<nn::LayerNorm>()) {
          ln->weight.fill_(1);
          ln->bias.zero_();
        }
      }
      for (auto& b : net->blocks) b->attn->table.normal_(0.0, 0.02);
    }
    net_ = net.get();
    auto optimizer = std::make_unique<torch::optim::AdamW>(TrainableParameters(*net), torch::optim::AdamWOptions(config.lr).betas({config.beta1, config.beta2}).weight_decay(config.weightDecay));
    Finish(net, std::move(optimizer));
  }

  void SetLearningRate(double lr) override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }

  double Step(const View&, const std::vector<View>& views, const RunControl& control) override {
    return OnTrainingThread([&]() -> double {
      if (views.size() != 2) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected SemiREST's residual maps and block labels");
      CheckResiduals(views[0]);
      const View& y = views[1];
      if (y.data == nullptr || y.n != views[0].n || y.c != 1 || y.h != views[0].h || y.w != views[0].w) {
        throw InvalidArgument("ERR_IMIAD_DIMS", "Expected SemiREST's block labels [n, 1, gh, gw] matching the residual maps");
      }
      control.throwIfCancelled();
      net_->train();
      auto logits = Forward(ViewTensor(views[0], device_));  // [n, gh, gw, 2]
      auto labels = ViewTensor(y, device_).squeeze(1);       // [n, gh, gw]
      auto logp = torch::log_softmax(logits, -1);
      auto lp = torch::where(labels > 0.5, logp.select(-1, 1), logp.select(-1, 0));
      auto loss = gamma_ > 0 ? (-(1 - lp.exp()).pow(gamma_) * lp).mean() : (-lp).mean();
      return Apply(loss);
    });
  }

  void Maps(const View&, const std::vector<View>& views, int64_t outSize, float* out, const RunControl& control) override {
    OnTrainingThread([&] {
      if (views.size() != 1) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected SemiREST's residual maps");
      CheckResiduals(views[0]);
      control.throwIfCancelled();
      c10::InferenceMode guard;
      net_->eval();
      auto p = torch::softmax(Forward(ViewTensor(views[0], device_)), -1).select(-1, 1).unsqueeze(1);  // [n, 1, gh, gw]
      if (p.size(2) != outSize || p.size(3) != outSize) p = Upsample(p, outSize, false);
      CopyOut(p, out);
    });
  }

 private:
  void CheckResiduals(const View& v) const {
    if (v.data == nullptr || v.c != channels_ || v.n < 1 || v.h < 1 || v.w < 1) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected SemiREST's residual maps [n, " + std::to_string(channels_) + ", gh, gw] but received [" + std::to_string(v.n) + ", " +
                                                  std::to_string(v.c) + ", " + std::to_string(v.h) + ", " + std::to_string(v.w) + "]");
    }
  }

  // residuals [n, C, gh, gw] -> logits [n, gh, gw, 2].
  torch::Tensor Forward(const torch::Tensor& residuals) {
    const int64_t h = residuals.size(2), w = residuals.size(3);
    const int64_t win = window_;
    const int64_t ph = (win - h % win) % win, pw = (win - w % win) % win;
    auto x = net_->embedNorm->forward(net_->embed->forward(residuals.permute({0, 2, 3, 1})));  // [n, h, w, dim]
    if (ph > 0 || pw > 0) x = F::pad(x, F::PadFuncOptions({0, 0, 0, pw, 0, ph}));
    const int64_t hp = h + ph, wp = w + pw;
    torch::Tensor mask;
    for (auto& b : net_->blocks) {
      // A grid of one window is never shifted (lib/methods/semirest.ts makes the window at most the grid side).
      const int64_t shift = b->shift > 0 && (hp > win || wp > win) ? win / 2 : 0;
      if (shift > 0 && !mask.defined()) mask = ShiftMask(hp, wp, win, shift).to(x.device());
      const int64_t saved = b->shift;
      b->shift = shift;
      x = b->forward(x, mask);
      b->shift = saved;
    }
    if (ph > 0 || pw > 0) x = x.narrow(1, 0, h).narrow(2, 0, w);
    return net_->head->forward(net_->headNorm->forward(x));
  }

  SemiRestNet* net_ = nullptr;
  int64_t channels_ = 0, dim_ = 96, window_ = 8;
  double gamma_ = 2;
};

}  // namespace

std::unique_ptr<Model> CreateSemiRestModel(const ModelConfig& config) {
  if (config.kind == "semirest") return std::make_unique<SemiRest>(config);
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown model kind " + config.kind);
}

}  // namespace train
}  // namespace imiad
