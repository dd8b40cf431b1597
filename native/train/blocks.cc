// Shared building blocks of the trained heads (see blocks.h). The positional encoding follows cflow-ad's
// custom_models/utils.py positionalencoding2d and the likelihood its get_logp (_GCONST_ = -0.9189385332046727).
#include "blocks.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>

namespace imiad {
namespace train {

torch::Device TrainDevice(const std::string& device) {
  if (device == "cuda" && torch::cuda::is_available()) return torch::Device(torch::kCUDA, 0);
  return torch::Device(torch::kCPU);
}

torch::Tensor ViewTensor(const View& v, const torch::Device& device) {
  auto t = torch::from_blob(const_cast<float*>(v.data), {v.n, v.c, v.h, v.w}, torch::kFloat32);
  return device.is_cpu() ? t : t.to(device);
}

torch::Tensor PositionalEncoding2d(int64_t d, int64_t h, int64_t w) {
  if (d % 4 != 0) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected a positional encoding size that is a multiple of 4 but received " + std::to_string(d));
  auto p = torch::zeros({d, h, w}, torch::kFloat32);
  const int64_t half = d / 2;
  auto div = torch::exp(torch::arange(0.0, static_cast<double>(half), 2.0, torch::kFloat32) * -(std::log(1e4) / static_cast<double>(half)));
  auto posW = torch::arange(0.0, static_cast<double>(w), torch::kFloat32).unsqueeze(1);
  auto posH = torch::arange(0.0, static_cast<double>(h), torch::kFloat32).unsqueeze(1);
  using torch::indexing::Slice;
  p.index_put_({Slice(0, half, 2)}, torch::sin(posW * div).transpose(0, 1).unsqueeze(1).repeat({1, h, 1}));
  p.index_put_({Slice(1, half, 2)}, torch::cos(posW * div).transpose(0, 1).unsqueeze(1).repeat({1, h, 1}));
  p.index_put_({Slice(half, torch::indexing::None, 2)}, torch::sin(posH * div).transpose(0, 1).unsqueeze(2).repeat({1, 1, w}));
  p.index_put_({Slice(half + 1, torch::indexing::None, 2)}, torch::cos(posH * div).transpose(0, 1).unsqueeze(2).repeat({1, 1, w}));
  return p;
}

torch::Tensor GaussianLogLikelihood(const torch::Tensor& z, const torch::Tensor& logdet) {
  const double c = static_cast<double>(z.size(1));
  return c * -0.9189385332046727 - 0.5 * z.pow(2).sum(1) + logdet;
}

std::vector<NamedArray> ModuleState(torch::nn::Module& module) {
  std::vector<NamedArray> out;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    if (t.scalar_type() != torch::kFloat32) return;
    NamedArray a;
    a.name = name;
    a.shape = t.sizes().vec();
    auto c = t.detach().to(torch::kCPU).contiguous();
    a.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    out.push_back(std::move(a));
  };
  for (auto& p : module.named_parameters()) add(p.key(), p.value());
  for (auto& b : module.named_buffers()) add(b.key(), b.value());
  return out;
}

void LoadModuleState(torch::nn::Module& module, const std::vector<NamedArray>& state) {
  torch::NoGradGuard guard;
  std::map<std::string, const NamedArray*> byName;
  for (auto& a : state) byName[a.name] = &a;
  size_t used = 0;
  auto load = [&](const std::string& name, torch::Tensor& t) {
    if (t.scalar_type() != torch::kFloat32) return;
    auto it = byName.find(name);
    if (it == byName.end()) throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint lacks the tensor " + name);
    const NamedArray& a = *it->second;
    if (a.shape != t.sizes().vec() || static_cast<int64_t>(a.values.size()) != t.numel()) {
      throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's tensor " + name + " does not match the model's shape");
    }
    t.copy_(torch::from_blob(const_cast<float*>(a.values.data()), t.sizes(), torch::kFloat32));
    used++;
  };
  for (auto& p : module.named_parameters()) load(p.key(), p.value());
  for (auto& b : module.named_buffers()) load(b.key(), b.value());
  if (used != state.size()) {
    throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint holds " + std::to_string(state.size()) + " tensors but the model has " + std::to_string(used));
  }
}

int64_t TrainableCount(torch::nn::Module& module) {
  int64_t n = 0;
  for (auto& p : module.parameters()) {
    if (p.requires_grad()) n += p.numel();
  }
  return n;
}

std::vector<double> Extra(const ModelConfig& config, const std::string& key, std::vector<double> fallback) {
  auto it = config.extra.find(key);
  return it == config.extra.end() ? fallback : it->second;
}

void CopyOut(const torch::Tensor& map, float* out) {
  auto c = map.detach().to(torch::kCPU).contiguous();
  std::copy(c.data_ptr<float>(), c.data_ptr<float>() + c.numel(), out);
}

void CheckLevels(const std::vector<View>& features, const std::vector<int64_t>& channels, const std::vector<int64_t>& sides) {
  if (features.size() != channels.size()) {
    throw InvalidArgument("ERR_IMIAD_DIMS", "Expected " + std::to_string(channels.size()) + " feature levels but received " + std::to_string(features.size()));
  }
  for (size_t i = 0; i < features.size(); i++) {
    const View& f = features[i];
    const bool sideOk = sides.empty() || (f.h == sides[2 * i] && f.w == sides[2 * i + 1]);
    if (f.c != channels[i] || f.n != features[0].n || !sideOk) {
      std::string want = std::to_string(channels[i]) + " channels";
      if (!sides.empty()) want += " of " + std::to_string(sides[2 * i]) + " x " + std::to_string(sides[2 * i + 1]);
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected feature level " + std::to_string(i + 1) + " with " + want + " but received " + std::to_string(f.c) +
                                                  " channels of " + std::to_string(f.h) + " x " + std::to_string(f.w));
    }
  }
}

torch::Tensor Upsample(const torch::Tensor& m, int64_t size, bool alignCorners) {
  return torch::nn::functional::interpolate(m, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{size, size}).mode(torch::kBilinear).align_corners(alignCorners));
}

std::vector<torch::Tensor> TrainableParameters(torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (auto& p : module.parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

std::vector<NamedArray> HeadModel::State() {
  std::lock_guard<std::mutex> lock(mutex_);
  return ModuleState(*root_);
}

void HeadModel::LoadState(const std::vector<NamedArray>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadModuleState(*root_, state);
}

// libtorch keys an optimiser's per-parameter state by the parameter's TensorImpl address, as a string.
std::string OptimizerKey(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

NamedArray Named(const std::string& name, const torch::Tensor& t) {
  NamedArray a;
  a.name = name;
  a.shape = t.sizes().vec();
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  a.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return a;
}

torch::Tensor Restore(const std::map<std::string, const NamedArray*>& byName, const std::string& name, const torch::Tensor& like, size_t* used) {
  auto it = byName.find(name);
  if (it == byName.end()) throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser state lacks " + name);
  const NamedArray& a = *it->second;
  if (a.shape != like.sizes().vec() || static_cast<int64_t>(a.values.size()) != like.numel()) {
    throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser tensor " + name + " does not match the parameter's shape");
  }
  (*used)++;
  return torch::from_blob(const_cast<float*>(a.values.data()), like.sizes(), torch::kFloat32).clone().to(like.device());
}

namespace {

// Adam and AdamW keep the same per-parameter state (step, first and second moments, amsgrad's maximum).
template <typename ParamState>
void SaveAdamState(const std::string& name, torch::optim::OptimizerParamState& state, std::vector<NamedArray>* out) {
  auto& s = static_cast<ParamState&>(state);
  out->push_back(Named("exp_avg:" + name, s.exp_avg()));
  out->push_back(Named("exp_avg_sq:" + name, s.exp_avg_sq()));
  if (s.max_exp_avg_sq().defined()) out->push_back(Named("max_exp_avg_sq:" + name, s.max_exp_avg_sq()));
  NamedArray step;
  step.name = "step:" + name;
  step.shape = {2};
  step.values = {static_cast<float>(s.step() >> 24), static_cast<float>(s.step() & 0xFFFFFF)};
  out->push_back(std::move(step));
}

template <typename ParamState>
std::unique_ptr<torch::optim::OptimizerParamState> LoadAdamState(const std::string& name, const torch::Tensor& param,
                                                                  const std::map<std::string, const NamedArray*>& byName, size_t* used) {
  auto it = byName.find("step:" + name);
  if (it == byName.end()) return nullptr;
  const NamedArray& step = *it->second;
  if (step.values.size() != 2) throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser step of " + name + " is not two numbers");
  (*used)++;
  auto s = std::make_unique<ParamState>();
  s->step((static_cast<int64_t>(step.values[0]) << 24) + static_cast<int64_t>(step.values[1]));
  s->exp_avg(Restore(byName, "exp_avg:" + name, param, used));
  s->exp_avg_sq(Restore(byName, "exp_avg_sq:" + name, param, used));
  if (byName.count("max_exp_avg_sq:" + name)) s->max_exp_avg_sq(Restore(byName, "max_exp_avg_sq:" + name, param, used));
  return s;
}

}  // namespace

std::vector<NamedArray> HeadModel::OptimizerState() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<NamedArray> out;
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(optimizer_.get()) != nullptr;
  auto& states = optimizer_->state();
  for (auto& p : root_->named_parameters()) {
    auto it = states.find(OptimizerKey(p.value()));
    if (it == states.end()) continue;
    if (adamw) SaveAdamState<torch::optim::AdamWParamState>(p.key(), *it->second, &out);
    else SaveAdamState<torch::optim::AdamParamState>(p.key(), *it->second, &out);
  }
  return out;
}

void HeadModel::LoadOptimizerState(const std::vector<NamedArray>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<std::string, const NamedArray*> byName;
  for (auto& a : state) byName[a.name] = &a;
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(optimizer_.get()) != nullptr;
  // Parsed in full before the optimiser is touched: a bad checkpoint leaves it as it was.
  std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>> parsed;
  size_t used = 0;
  for (auto& p : root_->named_parameters()) {
    auto s = adamw ? LoadAdamState<torch::optim::AdamWParamState>(p.key(), p.value(), byName, &used)
                   : LoadAdamState<torch::optim::AdamParamState>(p.key(), p.value(), byName, &used);
    if (s) parsed.emplace_back(OptimizerKey(p.value()), std::move(s));
  }
  if (used != state.size()) {
    throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser state holds " + std::to_string(state.size()) + " tensors but the model's parameters use " +
                                                      std::to_string(used));
  }
  auto& states = optimizer_->state();
  states.clear();
  for (auto& kv : parsed) states[kv.first] = std::move(kv.second);
}

void HeadModel::Finish(std::shared_ptr<torch::nn::Module> root, std::unique_ptr<torch::optim::Optimizer> optimizer) {
  root_ = std::move(root);
  optimizer_ = std::move(optimizer);
  root_->to(device_);
}

double HeadModel::Apply(const torch::Tensor& loss) {
  const double value = loss.item<double>();
  if (!std::isfinite(value)) return value;
  optimizer_->zero_grad();
  loss.backward();
  if (clipNorm_ > 0) torch::nn::utils::clip_grad_norm_(TrainableParameters(*root_), clipNorm_);
  optimizer_->step();
  return value;
}

namespace {

// One pass of Adam's update (see blocks.h). The operations and roundings of ATen's CPU kernels (AVX2 / AVX-512), one
// by one: grad.add(p, wd) and exp_avg.add_(grad, 1 - b1) are fused multiply-adds (ATen's vec::fmadd),
// exp_avg_sq.addcmul_(grad, grad, 1 - b2) is (1 - b2) * g, times g, added with one rounding (its kernel's
// multiply-add contracted by the compiler), and p.addcdiv_(m, denom, -step) is p + (-step * m) / denom. test/fused-
// optimizers.test.ts checks bit-identity with torch::optim::Adam/SGD. The fma clone vectorises; the default clone
// (CPUs without FMA) computes the same values through libm's fmaf, slowly.
__attribute__((target_clones("fma", "default"), optimize("no-math-errno", "fp-contract=off"))) void FusedAdamUpdate(
    float* w, float* m, float* v, const float* g, int64_t n, float wd, float b1, float a1, float b2, float a2, float bc2,
    float eps, float stepSize) {
  for (int64_t i = 0; i < n; i++) {
    const float gi = wd == 0.0f ? g[i] : __builtin_fmaf(w[i], wd, g[i]);
    const float mi = __builtin_fmaf(gi, a1, m[i] * b1);
    const float vi = __builtin_fmaf(a2 * gi, gi, v[i] * b2);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] + (stepSize * mi) / (__builtin_sqrtf(vi) / bc2 + eps);
  }
}

// One pass of SGD's update with momentum (see blocks.h); `first`: the buffer starts as the gradient. ATen's roundings:
// grad.add(p, wd) and p.add_(buf, -lr) are fused multiply-adds, buf.mul_(momentum).add_(g) two roundings.
__attribute__((target_clones("fma", "default"), optimize("fp-contract=off"))) void FusedSgdUpdate(
    float* w, float* buf, const float* g, int64_t n, float wd, float momentum, float lr, bool first) {
  for (int64_t i = 0; i < n; i++) {
    const float gi = wd == 0.0f ? g[i] : __builtin_fmaf(w[i], wd, g[i]);
    const float bi = first ? gi : buf[i] * momentum + gi;
    buf[i] = bi;
    w[i] = __builtin_fmaf(bi, -lr, w[i]);
  }
}

// IMIAD_TRAIN_OPTIMIZER=aten takes ATen's own steps (for tests and comparisons), read at every step.
bool Fusable(const std::vector<torch::optim::OptimizerParamGroup>& groups) {
  const char* choice = std::getenv("IMIAD_TRAIN_OPTIMIZER");
  if (choice != nullptr && std::strcmp(choice, "aten") == 0) return false;
  if (groups.size() != 1) return false;
  for (const auto& p : groups[0].params()) {
    if (!p.device().is_cpu() || p.scalar_type() != torch::kFloat32 || !p.is_non_overlapping_and_dense()) return false;
  }
  return true;
}

// `t` laid out in memory as the parameter `p` (the same strides), so that one flat pass over p's, t's and the
// gradient's storage pairs the same elements: channels-last convolution weights (resnet18.h) have non-contiguous
// strides, and a state restored from a checkpoint, or a gradient, may come in another layout.
torch::Tensor LikeParameter(const torch::Tensor& t, const torch::Tensor& p) {
  if (t.strides() == p.strides()) return t;
  return torch::empty_like(p, torch::MemoryFormat::Preserve).copy_(t);
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  auto& options = static_cast<torch::optim::AdamOptions&>(param_groups()[0].options());
  if (closure != nullptr || options.amsgrad() || !Fusable(param_groups())) return torch::optim::Adam::step(closure);
  torch::NoGradGuard noGrad;
  const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
  for (auto& p : param_groups()[0].params()) {
    if (!p.grad().defined()) continue;
    const std::string key = OptimizerKey(p);
    auto found = state().find(key);
    if (found == state().end()) {
      auto fresh = std::make_unique<torch::optim::AdamParamState>();
      fresh->step(0);
      fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      state()[key] = std::move(fresh);
    }
    auto& s = static_cast<torch::optim::AdamParamState&>(*state()[key]);
    s.step(s.step() + 1);
    s.exp_avg(LikeParameter(s.exp_avg(), p));
    s.exp_avg_sq(LikeParameter(s.exp_avg_sq(), p));
    auto grad = LikeParameter(p.grad(), p);
    const float wd = static_cast<float>(options.weight_decay());
    const float b1 = static_cast<float>(beta1), a1 = static_cast<float>(1 - beta1);
    const float b2 = static_cast<float>(beta2), a2 = static_cast<float>(1 - beta2);
    const float bc2 = static_cast<float>(std::sqrt(1 - std::pow(beta2, s.step())));
    const float eps = static_cast<float>(options.eps());
    const float stepSize = static_cast<float>(-(options.lr() / (1 - std::pow(beta1, s.step()))));
    float* w = p.data_ptr<float>();
    float* m = s.exp_avg().data_ptr<float>();
    float* v = s.exp_avg_sq().data_ptr<float>();
    const float* g = grad.data_ptr<float>();
    at::parallel_for(0, p.numel(), 16384, [&](int64_t begin, int64_t end) {
      FusedAdamUpdate(w + begin, m + begin, v + begin, g + begin, end - begin, wd, b1, a1, b2, a2, bc2, eps, stepSize);
    });
  }
  return {};
}

torch::Tensor FusedSGD::step(LossClosure closure) {
  auto& options = static_cast<torch::optim::SGDOptions&>(param_groups()[0].options());
  if (closure != nullptr || options.nesterov() || options.dampening() != 0 || options.momentum() == 0 || !Fusable(param_groups())) {
    return torch::optim::SGD::step(closure);
  }
  torch::NoGradGuard noGrad;
  for (auto& p : param_groups()[0].params()) {
    if (!p.grad().defined()) continue;
    const std::string key = OptimizerKey(p);
    const bool first = state().find(key) == state().end();
    if (first) {
      auto fresh = std::make_unique<torch::optim::SGDParamState>();
      fresh->momentum_buffer(torch::empty_like(p, torch::MemoryFormat::Preserve));
      state()[key] = std::move(fresh);
    }
    auto& s = static_cast<torch::optim::SGDParamState&>(*state()[key]);
    s.momentum_buffer(LikeParameter(s.momentum_buffer(), p));
    auto grad = LikeParameter(p.grad(), p);
    float* w = p.data_ptr<float>();
    float* buf = s.momentum_buffer().data_ptr<float>();
    const float* g = grad.data_ptr<float>();
    const float wd = static_cast<float>(options.weight_decay());
    const float momentum = static_cast<float>(options.momentum());
    const float lr = static_cast<float>(options.lr());
    at::parallel_for(0, p.numel(), 16384, [&](int64_t begin, int64_t end) {
      FusedSgdUpdate(w + begin, buf + begin, g + begin, end - begin, wd, momentum, lr, first);
    });
  }
  return {};
}

namespace {

// The max of a K x K window inside the plane (r: its top-left element, w: the row stride) and its plane index, branch
// free: the same order and rule as the general loop of MaxPoolPlane (a later element wins only if greater, or NaN).
template <int K>
inline void WindowMax(const float* r, int64_t w, int32_t base, float* out, int32_t* idx) {
  float m = r[0];
  int32_t mi = base;
  for (int a = 0; a < K; a++) {
    for (int b = (a == 0 ? 1 : 0); b < K; b++) {
      const float v = r[a * w + b];
      const bool take = v > m || v != v;
      m = take ? v : m;
      mi = take ? base + static_cast<int32_t>(a * w + b) : mi;
    }
  }
  *out = m;
  *idx = mi;
}

// One plane [h, w] -> [oh, ow]: the max and its plane index. Interior windows take the unrolled branch-free path.
__attribute__((target_clones("avx2", "default"))) void MaxPoolPlane(const float* in, float* out, int32_t* idx, int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s,
                                                                   int64_t p) {
  for (int64_t y = 0; y < oh; y++) {
    int64_t ih0 = y * s - p;
    const int64_t ih1 = std::min(ih0 + k, h);
    while (ih0 < 0) ih0++;
    float* orow = out + y * ow;
    int32_t* irow = idx + y * ow;
    const bool rowInside = y * s - p >= 0 && y * s - p + k <= h;
    for (int64_t x = 0; x < ow; x++) {
      int64_t iw0 = x * s - p;
      if (rowInside && (k == 2 || k == 3) && iw0 >= 0 && iw0 + k <= w) {
        const float* r = in + ih0 * w + iw0;
        const int32_t base = static_cast<int32_t>(ih0 * w + iw0);
        if (k == 3) {
          WindowMax<3>(r, w, base, orow + x, irow + x);
        } else {
          WindowMax<2>(r, w, base, orow + x, irow + x);
        }
        continue;
      }
      const int64_t iw1 = std::min(iw0 + k, w);
      while (iw0 < 0) iw0++;
      int64_t mi = ih0 * w + iw0;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t a = ih0; a < ih1; a++) {
        for (int64_t b = iw0; b < iw1; b++) {
          const float v = in[a * w + b];
          if (v > m || std::isnan(v)) {
            m = v;
            mi = a * w + b;
          }
        }
      }
      orow[x] = m;
      irow[x] = static_cast<int32_t>(mi);
    }
  }
}

class MaxPoolFunction : public torch::autograd::Function<MaxPoolFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t k, int64_t s, int64_t p) {
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    const int64_t oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
    auto out = torch::empty({n, c, oh, ow}, x.options());
    auto idx = torch::empty({n, c, oh, ow}, x.options().dtype(torch::kInt32));
    const float* in = x.data_ptr<float>();
    float* o = out.data_ptr<float>();
    int32_t* id = idx.data_ptr<int32_t>();
    at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; plane++) MaxPoolPlane(in + plane * h * w, o + plane * oh * ow, id + plane * oh * ow, h, w, oh, ow, k, s, p);
    });
    ctx->save_for_backward({idx});
    ctx->saved_data["h"] = h;
    ctx->saved_data["w"] = w;
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    auto idx = ctx->get_saved_variables()[0];
    const int64_t h = ctx->saved_data["h"].toInt(), w = ctx->saved_data["w"].toInt();
    auto g = grads[0].contiguous();
    const int64_t n = idx.size(0), c = idx.size(1), plane = idx.size(2) * idx.size(3);
    auto gin = torch::zeros({n, c, h, w}, g.options());
    const float* go = g.data_ptr<float>();
    const int32_t* id = idx.data_ptr<int32_t>();
    float* gi = gin.data_ptr<float>();
    at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; q++) {
        float* dst = gi + q * h * w;
        const float* src = go + q * plane;
        const int32_t* ix = id + q * plane;
        for (int64_t i = 0; i < plane; i++) dst[ix[i]] += src[i];
      }
    });
    return {gin, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor MaxPool2d(const torch::Tensor& x, int64_t k, int64_t s, int64_t p) {
  // IMIAD_TRAIN_MAXPOOL=aten takes ATen's kernels (for tests and comparisons), read at every call.
  const char* choice = std::getenv("IMIAD_TRAIN_MAXPOOL");
  if ((choice != nullptr && std::strcmp(choice, "aten") == 0) || !x.is_cpu() || x.scalar_type() != torch::kFloat32 || x.dim() != 4 || !x.is_contiguous() || k < 1 || s < 1 || p < 0 || 2 * p > k || x.size(2) + 2 * p < k ||
      x.size(3) + 2 * p < k || x.size(2) * x.size(3) > std::numeric_limits<int32_t>::max()) {
    return torch::max_pool2d(x, k, s, p);
  }
  return MaxPoolFunction::apply(x, k, s, p);
}

}  // namespace train
}  // namespace imiad
