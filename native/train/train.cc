// The trainable networks of the teacher-student detectors, on libtorch (and CreateModel, which dispatches every kind:
// flows.cc, feature_heads.cc, favae.cc).
//
// STPM follows Wang et al., "Student-Teacher Feature Pyramid Matching for Anomaly Detection" (BMVC 2021) and its
// official code gdwang08/STFPM: a ResNet-18-shaped student from random initialisation (conv1 .. layer3, torchvision
// init), loss = sum over layers of 0.5 / (h w) * sum of squared differences of channel-L2-normalised features
// (MSELoss(reduction='sum'), summed over the batch), SGD; anomaly map = product over layers of (1 - cosine) maps,
// each upsampled bilinearly (align_corners=False) to the image.
//
// RD4AD follows Deng & Li, "Anomaly Detection via Reverse Distillation from One-Class Embedding" (CVPR 2022) and its
// official code hq-deng/RD4AD: the one-class bottleneck embedding (BN_layer: layer1 -> two stride-2 3x3 convs,
// layer2 -> one, concatenated with layer3, then a layer4-like stack of 3 wide Bottleneck blocks, stride 2) and the
// decoder de_wide_resnet50_2 (DeBottleneck blocks [3, 4, 6] mirroring layers 3..1, stride-2 transposed 2x2 convs),
// loss = sum over layers of mean over the batch of (1 - cosine similarity of the flattened features), Adam;
// anomaly map = sum over layers of (1 - cosine) maps upsampled bilinearly with align_corners=True (cal_anomaly_map).
// Channel counts follow the teacher's (layer1..3 = c1, c2, c3); with WRN-50-2's 256/512/1024 they are the official.
#include "train.h"

#include <torch/torch.h>

#include <map>
#include "runtime.h"

#include <mutex>
#include <sstream>

#include "blocks.h"
#include "devnet.h"
#include "dra.h"
#include "draem.h"
#include "prn.h"
#include "semirest.h"
#include "favae.h"
#include "feature_heads.h"
#include "cutpaste.h"
#include "flows.h"
#include "gcad.h"
#include "igd.h"
#include "regad.h"
#include "resnet18.h"

namespace imiad {
namespace train {
namespace {

namespace nn = torch::nn;

// torch::manual_seed sets the process-wide generator: creating models must not interleave.
std::mutex& SeedMutex() {
  static std::mutex m;
  return m;
}

nn::ConvTranspose2d Deconv2x2(int64_t in, int64_t out, int64_t stride) {
  return nn::ConvTranspose2d(nn::ConvTranspose2dOptions(in, out, 2).stride(stride).bias(false));
}

// torchvision's ResNet init: kaiming_normal_(fan_out, relu) for Conv2d, BN weight 1 and bias 0.
void TorchvisionInit(nn::Module& root) {
  torch::NoGradGuard guard;
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    }
  }
}

struct BasicBlockImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Sequential downsample{nullptr};
  BasicBlockImpl(int64_t in, int64_t planes, int64_t stride) {
    conv1 = register_module("conv1", ConvNoBias(in, planes, 3, stride, 1));
    bn1 = register_module("bn1", nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", ConvNoBias(planes, planes, 3, 1, 1));
    bn2 = register_module("bn2", nn::BatchNorm2d(planes));
    if (stride != 1 || in != planes) {
      downsample = register_module("downsample", nn::Sequential(ConvNoBias(in, planes, 1, stride, 0), nn::BatchNorm2d(planes)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = bn1(conv1(x)).relu_();
    out = bn2(conv2(out));
    return out.add_(downsample ? downsample->forward(x) : x).relu_();
  }
};
TORCH_MODULE(BasicBlock);

// torchvision's Bottleneck with the wide variant's inner width (planes * 2), stride on the 3x3 conv.
struct BottleneckImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential downsample{nullptr};
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride, bool withDownsample) {
    const int64_t width = planes * 2;
    conv1 = register_module("conv1", ConvNoBias(in, width, 1, 1, 0));
    bn1 = register_module("bn1", nn::BatchNorm2d(width));
    conv2 = register_module("conv2", ConvNoBias(width, width, 3, stride, 1));
    bn2 = register_module("bn2", nn::BatchNorm2d(width));
    conv3 = register_module("conv3", ConvNoBias(width, planes * 4, 1, 1, 0));
    bn3 = register_module("bn3", nn::BatchNorm2d(planes * 4));
    if (withDownsample) {
      downsample = register_module("downsample", nn::Sequential(ConvNoBias(in, planes * 4, 1, stride, 0), nn::BatchNorm2d(planes * 4)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = bn1(conv1(x)).relu_();
    out = bn2(conv2(out)).relu_();
    out = bn3(conv3(out));
    return out.add_(downsample ? downsample->forward(x) : x).relu_();
  }
};
TORCH_MODULE(Bottleneck);

// The official decoder block: 1x1, then a transposed 2x2 conv (stride 2) or a 3x3 conv, then 1x1 (wide: width x2).
struct DeBottleneckImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv3{nullptr}, conv2{nullptr};
  nn::ConvTranspose2d deconv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential upsample{nullptr};
  DeBottleneckImpl(int64_t in, int64_t planes, int64_t stride, bool withUpsample) {
    const int64_t width = planes * 2;
    conv1 = register_module("conv1", ConvNoBias(in, width, 1, 1, 0));
    bn1 = register_module("bn1", nn::BatchNorm2d(width));
    if (stride == 2) deconv2 = register_module("conv2", Deconv2x2(width, width, 2));
    else conv2 = register_module("conv2", ConvNoBias(width, width, 3, 1, 1));
    bn2 = register_module("bn2", nn::BatchNorm2d(width));
    conv3 = register_module("conv3", ConvNoBias(width, planes * 4, 1, 1, 0));
    bn3 = register_module("bn3", nn::BatchNorm2d(planes * 4));
    if (withUpsample) {
      upsample = register_module("upsample", nn::Sequential(Deconv2x2(in, planes * 4, stride), nn::BatchNorm2d(planes * 4)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = bn1(conv1(x)).relu_();
    out = bn2(deconv2 ? deconv2(out) : conv2(out)).relu_();
    out = bn3(conv3(out));
    return out.add_(upsample ? upsample->forward(x) : x).relu_();
  }
};
TORCH_MODULE(DeBottleneck);

// STPM's student: ResNet-18's stem and layers 1..3 (two BasicBlocks each), widths = the teacher's channels.
struct StudentImpl : nn::Module {
  nn::Conv2d conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  std::vector<nn::Sequential> layers;
  explicit StudentImpl(const std::vector<int64_t>& c) {
    conv1 = register_module("conv1", ConvNoBias(3, 64, 7, 2, 3));
    bn1 = register_module("bn1", nn::BatchNorm2d(64));
    int64_t in = 64;
    for (size_t i = 0; i < c.size(); i++) {
      const int64_t stride = i == 0 ? 1 : 2;
      nn::Sequential layer(BasicBlock(in, c[i], stride), BasicBlock(c[i], c[i], 1));
      layers.push_back(register_module("layer" + std::to_string(i + 1), layer));
      in = c[i];
    }
  }
  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    auto h = MaxPool2d(bn1(conv1(x)).relu_(), 3, 2, 1);
    std::vector<torch::Tensor> out;
    for (auto& layer : layers) {
      h = layer->forward(h);
      out.push_back(h);
    }
    return out;
  }
};
TORCH_MODULE(Student);

// RD4AD's one-class bottleneck embedding (official BN_layer) followed by the decoder (official de_wide_resnet50_2).
struct ReverseImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential bnLayer{nullptr}, de1{nullptr}, de2{nullptr}, de3{nullptr};
  explicit ReverseImpl(const std::vector<int64_t>& c) {
    conv1 = register_module("conv1", ConvNoBias(c[0], c[1], 3, 2, 1));
    bn1 = register_module("bn1", nn::BatchNorm2d(c[1]));
    conv2 = register_module("conv2", ConvNoBias(c[1], c[2], 3, 2, 1));
    bn2 = register_module("bn2", nn::BatchNorm2d(c[2]));
    conv3 = register_module("conv3", ConvNoBias(c[1], c[2], 3, 2, 1));
    bn3 = register_module("bn3", nn::BatchNorm2d(c[2]));
    const int64_t planes = c[2] / 2;  // 512 for WRN-50-2: the layer4-like stack ends at 2048 channels
    bnLayer = register_module("bn_layer", nn::Sequential());
    bnLayer->push_back(Bottleneck(3 * c[2], planes, 2, true));
    for (int i = 1; i < 3; i++) bnLayer->push_back(Bottleneck(planes * 4, planes, 1, false));
    int64_t in = planes * 4;
    auto make = [&](const char* name, int64_t outChannels, int blocks) {
      const int64_t p = outChannels / 4;
      nn::Sequential s;
      s->push_back(DeBottleneck(in, p, 2, true));
      for (int i = 1; i < blocks; i++) s->push_back(DeBottleneck(p * 4, p, 1, false));
      in = p * 4;
      return register_module(name, s);
    };
    de1 = make("decoder_layer1", c[2], 3);
    de2 = make("decoder_layer2", c[1], 4);
    de3 = make("decoder_layer3", c[0], 6);
  }
  // Teacher layers 1..3 in; the decoder's reconstruction of layers 1..3 out.
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& t) {
    auto l1 = bn2(conv2(bn1(conv1(t[0])).relu_())).relu_();
    auto l2 = bn3(conv3(t[1])).relu_();
    auto e = bnLayer->forward(torch::cat({l1, l2, t[2]}, 1)).contiguous();
    auto a = de1->forward(e);
    auto b = de2->forward(a);
    auto d = de3->forward(b);
    return {d, b, a};
  }
};
TORCH_MODULE(Reverse);

// STPM's student sees the image: a [n, 3, h, w] batch with the teacher's n.
void CheckImages(const View& images, const std::vector<View>& teacher) {
  if (images.data == nullptr || images.c != 3 || images.n != teacher[0].n) {
    throw InvalidArgument("ERR_IMIAD_DIMS", "Expected STPM's image batch [n, 3, h, w] with the teacher's " +
                                                std::to_string(teacher[0].n) + " images");
  }
}

void CheckTeacher(const std::vector<View>& teacher, const std::vector<int64_t>& channels) {
  if (teacher.size() != channels.size()) {
    throw InvalidArgument("ERR_IMIAD_DIMS", "Expected " + std::to_string(channels.size()) + " teacher layers but received " +
                                                std::to_string(teacher.size()));
  }
  for (size_t i = 0; i < teacher.size(); i++) {
    if (teacher[i].c != channels[i] || teacher[i].n != teacher[0].n) {
      throw InvalidArgument("ERR_IMIAD_DIMS", "Expected teacher layer " + std::to_string(i + 1) + " with " +
                                                  std::to_string(channels[i]) + " channels and " + std::to_string(teacher[0].n) +
                                                  " images but received " + std::to_string(teacher[i].c) + " channels and " +
                                                  std::to_string(teacher[i].n) + " images");
    }
  }
}

// Sets the calling thread's intra-op thread count (OpenMP settings are per thread) for work on the JS thread: model
// creation; back to one thread afterwards (runtime::SingleThreadCaller: a second OpenMP team in the process would stop
// libgomp's spinning for the training thread's team). Steps and maps run on the training thread (runtime.h), which sets
// the model's count there.
struct ThreadScope {
  explicit ThreadScope(int threads) {
    at::init_num_threads();
    torch::set_num_threads(threads);
  }
  ~ThreadScope() { runtime::SingleThreadCaller(); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
};

// Gradients set to none right after the optimiser step instead of zeroed before the next backward pass (PyTorch's
// zero_grad() in the peer): the next backward pass stores each gradient instead of adding it to zeros, which skips
// two passes over every gradient, and no gradient memory is held between steps or during the forward pass (the
// forward pass reuses those blocks). The values are the same (0 + g == g).
void ClearGradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) p.mutable_grad().reset();
  }
}

class ModelBase : public Model {
 public:
  explicit ModelBase(const ModelConfig& config) : config_(config), device_(TrainDevice(config.device)) {}

  std::vector<NamedArray> State() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return ModuleState(*module());  // num_batches_tracked (int64) is left out: unused with a fixed momentum
  }

  void LoadState(const std::vector<NamedArray>& state) override {
    std::lock_guard<std::mutex> lock(mutex_);
    LoadModuleState(*module(), state);
  }

  int64_t ParameterCount() override {
    int64_t n = 0;
    for (auto& p : module()->parameters()) n += p.numel();
    return n;
  }

  std::vector<NamedArray> OptimizerState() override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<NamedArray> out;
    auto& states = optimizer().state();
    for (auto& p : module()->named_parameters()) {
      auto it = states.find(OptimizerKey(p.value()));
      if (it != states.end()) SaveParamState(p.key(), *it->second, &out);
    }
    return out;
  }

  void LoadOptimizerState(const std::vector<NamedArray>& state) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, const NamedArray*> byName;
    for (auto& a : state) byName[a.name] = &a;
    // Parsed in full before the optimiser is touched: a bad checkpoint leaves it as it was.
    std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>> parsed;
    size_t used = 0;
    for (auto& p : module()->named_parameters()) {
      auto s = LoadParamState(p.key(), p.value(), byName, &used);
      if (s) parsed.emplace_back(OptimizerKey(p.value()), std::move(s));
    }
    if (used != state.size()) {
      throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser state holds " + std::to_string(state.size()) +
                                                        " tensors but the model's parameters use " + std::to_string(used));
    }
    auto& states = optimizer().state();
    states.clear();
    for (auto& kv : parsed) states[kv.first] = std::move(kv.second);
  }

 protected:
  virtual nn::Module* module() = 0;
  virtual torch::optim::Optimizer& optimizer() = 0;
  // One parameter's optimiser state to named arrays, and back (nullptr: the parameter has none yet).
  virtual void SaveParamState(const std::string& name, torch::optim::OptimizerParamState& state, std::vector<NamedArray>* out) = 0;
  virtual std::unique_ptr<torch::optim::OptimizerParamState> LoadParamState(
      const std::string& name, const torch::Tensor& param, const std::map<std::string, const NamedArray*>& byName, size_t* used) = 0;

  // Runs fn on the training thread with the model's thread count, one call of this model at a time.
  void OnTrainingThread(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    runtime::Run(config_.threads, fn);
  }

  ModelConfig config_;
  torch::Device device_;
  std::mutex mutex_;
};

class Stpm : public ModelBase {
 public:
  explicit Stpm(const ModelConfig& config) : ModelBase(config) {
    {
      std::lock_guard<std::mutex> lock(SeedMutex());
      torch::manual_seed(config.seed);
      student_ = Student(config.teacherChannels);
      TorchvisionInit(*student_);
    }
    student_->to(device_);
    optimizer_ = std::make_unique<FusedSGD>(
        student_->parameters(),
        torch::optim::SGDOptions(config.lr).momentum(config.momentum).weight_decay(config.weightDecay));
  }

  double Step(const View& images, const std::vector<View>& teacher, const RunControl& control) override {
    double result = 0;
    OnTrainingThread([&] {
      CheckTeacher(teacher, config_.teacherChannels);
      CheckImages(images, teacher);
      control.throwIfCancelled();
      student_->train();
      auto fs = student_->forward(ViewTensor(images, device_));
      torch::Tensor loss = torch::zeros({}, torch::TensorOptions().device(device_));
      for (size_t i = 0; i < fs.size(); i++) {
        auto ft = ViewTensor(teacher[i], device_);
        if (fs[i].sizes() != ft.sizes()) throw InvalidArgument("ERR_IMIAD_DIMS", "The student's layer " + std::to_string(i + 1) + " does not match the teacher's size");
        const double hw = static_cast<double>(ft.size(2) * ft.size(3));
        auto d = torch::nn::functional::normalize(fs[i], nn::functional::NormalizeFuncOptions().dim(1)) -
                 torch::nn::functional::normalize(ft, nn::functional::NormalizeFuncOptions().dim(1));
        loss = loss + (0.5 / hw) * d.pow(2).sum();
      }
      loss.backward();
      optimizer_->step();
      ClearGradients(*optimizer_);
      result = loss.item<double>();
    });
    return result;
  }

  void Maps(const View& images, const std::vector<View>& teacher, int64_t outSize, float* out,
            const RunControl& control) override {
    OnTrainingThread([&] {
      CheckTeacher(teacher, config_.teacherChannels);
      CheckImages(images, teacher);
      control.throwIfCancelled();
      c10::InferenceMode guard;  // no autograd records at all (cheaper than NoGradGuard)
      student_->eval();
      auto fs = student_->forward(ViewTensor(images, device_));
      torch::Tensor map = torch::ones({images.n, 1, outSize, outSize}, torch::TensorOptions().device(device_));
      for (size_t i = 0; i < fs.size(); i++) {
        auto a = 1 - torch::cosine_similarity(fs[i], ViewTensor(teacher[i], device_), 1).unsqueeze(1);
        a = nn::functional::interpolate(a, nn::functional::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{outSize, outSize})
                                               .mode(torch::kBilinear)
                                               .align_corners(false));
        map = map * a;
      }
      CopyOut(map, out);
    });
  }

 protected:
  nn::Module* module() override { return student_.get(); }
  torch::optim::Optimizer& optimizer() override { return *optimizer_; }

  void SaveParamState(const std::string& name, torch::optim::OptimizerParamState& state, std::vector<NamedArray>* out) override {
    auto& s = static_cast<torch::optim::SGDParamState&>(state);
    if (s.momentum_buffer().defined()) out->push_back(Named("momentum:" + name, s.momentum_buffer()));
  }

  std::unique_ptr<torch::optim::OptimizerParamState> LoadParamState(
      const std::string& name, const torch::Tensor& param, const std::map<std::string, const NamedArray*>& byName, size_t* used) override {
    if (byName.find("momentum:" + name) == byName.end()) return nullptr;
    auto s = std::make_unique<torch::optim::SGDParamState>();
    s->momentum_buffer(Restore(byName, "momentum:" + name, param, used));
    return s;
  }

 private:
  Student student_{nullptr};
  std::unique_ptr<torch::optim::SGD> optimizer_;
};

class Rd4ad : public ModelBase {
 public:
  explicit Rd4ad(const ModelConfig& config) : ModelBase(config) {
    {
      std::lock_guard<std::mutex> lock(SeedMutex());
      torch::manual_seed(config.seed);
      net_ = Reverse(config.teacherChannels);
      TorchvisionInit(*net_);
    }
    net_->to(device_);
    optimizer_ = std::make_unique<FusedAdam>(
        net_->parameters(), torch::optim::AdamOptions(config.lr).betas(std::make_tuple(config.beta1, config.beta2)));
  }

  std::vector<torch::Tensor> Wrapped(const std::vector<View>& teacher) {
    std::vector<torch::Tensor> t;
    for (auto& v : teacher) t.push_back(ViewTensor(v, device_));
    return t;
  }

  double Step(const View&, const std::vector<View>& teacher, const RunControl& control) override {
    double result = 0;
    OnTrainingThread([&] {
      CheckTeacher(teacher, config_.teacherChannels);
      control.throwIfCancelled();
      net_->train();
      auto t = Wrapped(teacher);
      auto s = net_->forward(t);
      torch::Tensor loss = torch::zeros({}, torch::TensorOptions().device(device_));
      for (size_t i = 0; i < s.size(); i++) {
        if (s[i].sizes() != t[i].sizes()) throw InvalidArgument("ERR_IMIAD_DIMS", "The decoder's layer " + std::to_string(i + 1) + " does not match the teacher's size");
        const int64_t n = t[i].size(0);
        loss = loss + (1 - torch::cosine_similarity(t[i].reshape({n, -1}), s[i].reshape({n, -1}), 1)).mean();
      }
      loss.backward();
      optimizer_->step();
      ClearGradients(*optimizer_);
      result = loss.item<double>();
    });
    return result;
  }

  void Maps(const View&, const std::vector<View>& teacher, int64_t outSize, float* out,
            const RunControl& control) override {
    OnTrainingThread([&] {
      CheckTeacher(teacher, config_.teacherChannels);
      control.throwIfCancelled();
      c10::InferenceMode guard;  // no autograd records at all (cheaper than NoGradGuard)
      net_->eval();
      auto t = Wrapped(teacher);
      auto s = net_->forward(t);
      torch::Tensor map = torch::zeros({teacher[0].n, 1, outSize, outSize}, torch::TensorOptions().device(device_));
      for (size_t i = 0; i < s.size(); i++) {
        auto a = 1 - torch::cosine_similarity(t[i], s[i], 1).unsqueeze(1);
        a = nn::functional::interpolate(a, nn::functional::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{outSize, outSize})
                                               .mode(torch::kBilinear)
                                               .align_corners(true));
        map = map + a;
      }
      CopyOut(map, out);
    });
  }

 protected:
  nn::Module* module() override { return net_.get(); }
  torch::optim::Optimizer& optimizer() override { return *optimizer_; }

  void SaveParamState(const std::string& name, torch::optim::OptimizerParamState& state, std::vector<NamedArray>* out) override {
    auto& s = static_cast<torch::optim::AdamParamState&>(state);
    out->push_back(Named("exp_avg:" + name, s.exp_avg()));
    out->push_back(Named("exp_avg_sq:" + name, s.exp_avg_sq()));
    NamedArray step;
    step.name = "step:" + name;
    step.shape = {2};
    step.values = {static_cast<float>(s.step() >> 24), static_cast<float>(s.step() & 0xFFFFFF)};
    out->push_back(std::move(step));
  }

  std::unique_ptr<torch::optim::OptimizerParamState> LoadParamState(
      const std::string& name, const torch::Tensor& param, const std::map<std::string, const NamedArray*>& byName, size_t* used) override {
    auto it = byName.find("step:" + name);
    if (it == byName.end()) return nullptr;
    const NamedArray& step = *it->second;
    if (step.values.size() != 2) throw InvalidArgument("ERR_IMIAD_CHECKPOINT", "The checkpoint's optimiser step of " + name + " is not two numbers");
    (*used)++;
    auto s = std::make_unique<torch::optim::AdamParamState>();
    s->step((static_cast<int64_t>(step.values[0]) << 24) + static_cast<int64_t>(step.values[1]));
    s->exp_avg(Restore(byName, "exp_avg:" + name, param, used));
    s->exp_avg_sq(Restore(byName, "exp_avg_sq:" + name, param, used));
    return s;
  }

 private:
  Reverse net_{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer_;
};

}  // namespace

std::unique_ptr<Model> CreateModel(const ModelConfig& config) {
  // Models that take images (and, for some, one tapped level of their own) instead of the three teacher layers:
  // each factory checks its own inputs.
  using Factory = std::unique_ptr<Model> (*)(const ModelConfig&);
  static const std::pair<const char*, Factory> kImageModels[] = {
      {"resnet18", CreateResNet18FeatureModel},  // the trainable ResNet-18 (resnet18.h)
      {"cutpaste", CreateCutPasteModel},
      {"devnet", CreateDevNetModel},  // the supervised detectors on the fine-tuned ResNet-18 (devnet.h, dra.h)
      {"dra", CreateDraModel},
      {"draem", CreateDraemModel},
      {"igd", CreateIgdModel},  // one pooled level (igd.cc checks it)
      {"gcad", CreateGcadModel},
      {"semirest", CreateSemiRestModel},  // residual maps of frozen features (semirest.cc checks them)
      {"prn", CreatePrnModel},  // frozen ResNet-18 layers 1..4 and its prototypes (prn.cc checks them)
  };
  for (const auto& [kind, create] : kImageModels) {
    if (config.kind != kind) continue;
    if (config.threads < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least one thread");
    ThreadScope threads(config.threads);
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
    std::lock_guard<std::mutex> lock(SeedMutex());
    return create(config);
  }
  if (config.teacherChannels.size() != 3) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected 3 teacher layers (layers 1..3)");
  for (auto c : config.teacherChannels) {
    if (c < 4 || c % 4 != 0) throw InvalidArgument("ERR_IMIAD_DIMS", "Expected teacher channel counts that are multiples of 4");
  }
  if (config.threads < 1) throw InvalidArgument("ERR_IMIAD_RANGE", "Expected at least one thread");
  ThreadScope threads(config.threads);
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  if (config.kind == "stpm") return std::make_unique<Stpm>(config);
  if (config.kind == "rd4ad") return std::make_unique<Rd4ad>(config);
  // The heads on the teacher's three levels, seeded under the seed lock.
  static const std::pair<const char*, Factory> kHeadModels[] = {
      {"fastflow", CreateFlowModel}, {"cflow", CreateFlowModel}, {"csflow", CreateFlowModel}, {"bgad", CreateFlowModel},
      {"cfa", CreateFeatureHeadModel}, {"regad", CreateRegadModel}, {"favae", CreateFavaeModel},
  };
  for (const auto& [kind, create] : kHeadModels) {
    if (config.kind != kind) continue;
    std::lock_guard<std::mutex> lock(SeedMutex());
    return create(config);
  }
  throw InvalidArgument("ERR_IMIAD_ARGUMENT", "Unknown trained model kind " + config.kind);
}

double SelfCheck() {
  auto g = torch::arange(16, torch::kFloat32).reshape({4, 4});
  return torch::matmul(g, g.t()).sum().item<double>();
}

bool CudaAvailable() { return torch::cuda::is_available(); }

bool CudaBuilt() { return at::hasCUDA(); }

std::string TorchVersion() {
  std::ostringstream s;
  s << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH;
  return s.str();
}

}  // namespace train
}  // namespace imiad
