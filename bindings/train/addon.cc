// The training addon's entry point (imiad_train.node, built only with libtorch: CMakeLists.txt -DIMIAD_TRAIN=ON).
// It only converts arguments and starts KernelWorkers (bindings/glue.h); the networks are in native/train/.
// A Model object wraps one trainable network; its teacher features and images arrive as Float32Arrays that the
// engine reads in place while the worker runs (the worker keeps them referenced).
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "../glue.h"
#include "train/runtime.h"
#include "train/train.h"

namespace imiad {
namespace glue {
namespace {

using train::View;

// A [n, c, h, w] array: the Float32Array and its four dims as a plain array.
View ViewArg(const Napi::CallbackInfo& info, size_t arrayIndex, size_t shapeIndex, const char* name,
             std::vector<Napi::Value>* keep) {
  Napi::Env env = info.Env();
  F32 a = Float32Arg(info, arrayIndex, name);
  if (info.Length() <= shapeIndex || !info[shapeIndex].IsArray() || info[shapeIndex].As<Napi::Array>().Length() != 4) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", std::string("Expected [n, c, h, w] for the shape of ") + name);
  }
  Napi::Array s = info[shapeIndex].As<Napi::Array>();
  View v;
  int64_t* dims[4] = {&v.n, &v.c, &v.h, &v.w};
  double product = 1;
  for (uint32_t i = 0; i < 4; i++) {
    Napi::Value d = s.Get(i);
    if (!d.IsNumber() || d.As<Napi::Number>().DoubleValue() < 1) ThrowRange(env, "ERR_IMIAD_DIMS", std::string("Expected positive dims for ") + name);
    *dims[i] = d.As<Napi::Number>().Int64Value();
    product *= static_cast<double>(*dims[i]);
  }
  if (product != static_cast<double>(a.length)) ThrowRange(env, "ERR_IMIAD_DIMS", std::string("Expected length of ") + name + " to be n * c * h * w");
  v.data = a.data;
  keep->push_back(info[arrayIndex]);
  return v;
}

// Teacher layers: an array of Float32Arrays and an array of [n, c, h, w] shapes.
std::vector<View> TeacherArg(const Napi::CallbackInfo& info, size_t index, std::vector<Napi::Value>* keep) {
  Napi::Env env = info.Env();
  if (info.Length() <= index + 1 || !info[index].IsArray() || !info[index + 1].IsArray()) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected arrays of teacher features and shapes");
  }
  Napi::Array arrays = info[index].As<Napi::Array>();
  Napi::Array shapes = info[index + 1].As<Napi::Array>();
  if (arrays.Length() != shapes.Length()) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected one shape per teacher layer");
  std::vector<View> out;
  for (uint32_t i = 0; i < arrays.Length(); i++) {
    Napi::Value a = arrays.Get(i);
    Napi::Value s = shapes.Get(i);
    if (!a.IsTypedArray() || a.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array || !s.IsArray() ||
        s.As<Napi::Array>().Length() != 4) {
      ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Float32Array and [n, c, h, w] for each teacher layer");
    }
    View v;
    int64_t* dims[4] = {&v.n, &v.c, &v.h, &v.w};
    double product = 1;
    for (uint32_t k = 0; k < 4; k++) {
      Napi::Value d = s.As<Napi::Array>().Get(k);
      if (!d.IsNumber() || d.As<Napi::Number>().DoubleValue() < 1) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected positive teacher dims");
      *dims[k] = d.As<Napi::Number>().Int64Value();
      product *= static_cast<double>(*dims[k]);
    }
    auto f = a.As<Napi::TypedArrayOf<float>>();
    if (product != static_cast<double>(f.ElementLength())) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected teacher layer length n * c * h * w");
    v.data = f.Data();
    keep->push_back(a);
    out.push_back(v);
  }
  return out;
}

class StepWorker : public KernelWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<train::Model> model, View images, std::vector<View> teacher)
      : KernelWorker(env, "imiad.train.step"), model_(std::move(model)), images_(images), teacher_(std::move(teacher)) {}

 protected:
  void Run(const RunControl& control) override { loss_ = model_->Step(images_, teacher_, control); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, loss_); }

 private:
  std::shared_ptr<train::Model> model_;
  View images_;
  std::vector<View> teacher_;
  double loss_ = 0;
};

class MapsWorker : public KernelWorker {
 public:
  MapsWorker(Napi::Env env, std::shared_ptr<train::Model> model, View images, std::vector<View> teacher, int64_t outSize)
      : KernelWorker(env, "imiad.train.maps"),
        model_(std::move(model)),
        images_(images),
        teacher_(std::move(teacher)),
        outSize_(outSize) {}

 protected:
  void Run(const RunControl& control) override {
    out_.resize(static_cast<size_t>((teacher_.empty() ? images_.n : teacher_[0].n) * outSize_ * outSize_));
    model_->Maps(images_, teacher_, outSize_, out_.data(), control);
  }
  Napi::Value Result(Napi::Env env) override { return VectorToTypedArray<float, Napi::Float32Array>(env, out_); }

 private:
  std::shared_ptr<train::Model> model_;
  View images_;
  std::vector<View> teacher_;
  int64_t outSize_;
  std::vector<float> out_;
};

// calibrate(teacher[], shapes[], reset, cancel) -> Promise<undefined>
class CalibrateWorker : public KernelWorker {
 public:
  CalibrateWorker(Napi::Env env, std::shared_ptr<train::Model> model, std::vector<View> features, bool reset)
      : KernelWorker(env, "imiad.train.calibrate"), model_(std::move(model)), features_(std::move(features)), reset_(reset) {}

 protected:
  void Run(const RunControl& control) override { model_->Calibrate(features_, reset_, control); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<train::Model> model_;
  std::vector<View> features_;
  bool reset_;
};

// calibrateStage(stage, images | null, imageShape | null, teacher[], shapes[], reset, cancel) -> Promise<undefined>
class CalibrateStageWorker : public KernelWorker {
 public:
  CalibrateStageWorker(Napi::Env env, std::shared_ptr<train::Model> model, std::string stage, View images, std::vector<View> teacher, bool reset)
      : KernelWorker(env, "imiad.train.calibrateStage"),
        model_(std::move(model)),
        stage_(std::move(stage)),
        images_(images),
        teacher_(std::move(teacher)),
        reset_(reset) {}

 protected:
  void Run(const RunControl& control) override { model_->CalibrateStage(stage_, images_, teacher_, reset_, control); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::shared_ptr<train::Model> model_;
  std::string stage_;
  View images_;
  std::vector<View> teacher_;
  bool reset_;
};

// scores(features[], shapes[], cancel, images?, imageShape?) -> Promise<Float32Array | null> (null: the model scores
// by its map's maximum); the images go to models whose score needs them (Model::ImageScores).
class ScoresWorker : public KernelWorker {
 public:
  ScoresWorker(Napi::Env env, std::shared_ptr<train::Model> model, std::vector<View> features, View images)
      : KernelWorker(env, "imiad.train.scores"), model_(std::move(model)), features_(std::move(features)), images_(images) {}

 protected:
  void Run(const RunControl& control) override {
    out_.resize(static_cast<size_t>(features_[0].n));
    has_ = model_->ImageScores(images_, features_, out_.data(), control);
  }
  Napi::Value Result(Napi::Env env) override { return has_ ? VectorToTypedArray<float, Napi::Float32Array>(env, out_) : env.Null(); }

 private:
  std::shared_ptr<train::Model> model_;
  std::vector<View> features_;
  View images_;
  std::vector<float> out_;
  bool has_ = false;
};

Napi::Value NamedArraysToJs(Napi::Env env, std::vector<train::NamedArray> state) {
  Napi::Array names = Napi::Array::New(env, state.size());
  Napi::Array shapes = Napi::Array::New(env, state.size());
  Napi::Array arrays = Napi::Array::New(env, state.size());
  for (uint32_t i = 0; i < state.size(); i++) {
    names.Set(i, state[i].name);
    Napi::Array s = Napi::Array::New(env, state[i].shape.size());
    for (uint32_t k = 0; k < state[i].shape.size(); k++) s.Set(k, Napi::Number::New(env, static_cast<double>(state[i].shape[k])));
    shapes.Set(i, s);
    arrays.Set(i, VectorToTypedArray<float, Napi::Float32Array>(env, state[i].values));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("names", names);
  out.Set("shapes", shapes);
  out.Set("arrays", arrays);
  return out;
}

// forward(images, shape, cancel) -> Promise<{ names, shapes, arrays }>
class ForwardWorker : public KernelWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<train::Model> model, View images)
      : KernelWorker(env, "imiad.train.forward"), model_(std::move(model)), images_(images) {}

 protected:
  void Run(const RunControl& control) override { out_ = model_->Forward(images_, control); }
  Napi::Value Result(Napi::Env env) override { return NamedArraysToJs(env, std::move(out_)); }

 private:
  std::shared_ptr<train::Model> model_;
  View images_;
  std::vector<train::NamedArray> out_;
};

class TrainModel : public Napi::ObjectWrap<TrainModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TrainModel",
                       {InstanceMethod("step", &TrainModel::Step), InstanceMethod("maps", &TrainModel::Maps),
                        InstanceMethod("state", &TrainModel::State), InstanceMethod("loadState", &TrainModel::LoadState),
                        InstanceMethod("optimizerState", &TrainModel::OptimizerState),
                        InstanceMethod("loadOptimizerState", &TrainModel::LoadOptimizerState),
                        InstanceMethod("parameterCount", &TrainModel::ParameterCount),
                        InstanceMethod("calibrate", &TrainModel::Calibrate), InstanceMethod("calibrateStage", &TrainModel::CalibrateStage),
                        InstanceMethod("scores", &TrainModel::Scores),
                        InstanceMethod("forward", &TrainModel::Forward),
                        InstanceMethod("setLearningRate", &TrainModel::SetLearningRate),
                        InstanceMethod("configure", &TrainModel::Configure)});
  }

  // new TrainModel(kind, channels[3], seed, threads, lr, momentum, weightDecay, beta1, beta2)
  explicit TrainModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainModel>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 9 || !info[0].IsString() || !info[1].IsArray()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected (kind, channels, seed, threads, lr, momentum, weightDecay, beta1, beta2)");
    train::ModelConfig c;
    c.kind = info[0].As<Napi::String>().Utf8Value();
    Napi::Array ch = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < ch.Length(); i++) c.teacherChannels.push_back(ch.Get(i).As<Napi::Number>().Int64Value());
    c.seed = static_cast<uint64_t>(NumberArg(info, 2, "seed"));
    c.threads = static_cast<int>(UInt32Arg(info, 3, "threads", 1, 1024));
    c.lr = NumberArg(info, 4, "lr");
    c.momentum = NumberArg(info, 5, "momentum");
    c.weightDecay = NumberArg(info, 6, "weightDecay");
    c.beta1 = NumberArg(info, 7, "beta1");
    c.beta2 = NumberArg(info, 8, "beta2");
    // Optional { device: 'cpu' | 'cuda', extra: { name: number[] }, weights: { name: { data, shape } } }: the flow
    // heads' sizes and schedules; the imported ResNet-18 weights (native/train/resnet18.h), copied here.
    if (info.Length() > 9 && info[9].IsObject()) {
      Napi::Object o = info[9].As<Napi::Object>();
      if (o.Get("device").IsString()) c.device = o.Get("device").As<Napi::String>().Utf8Value();
      if (o.Get("extra").IsObject()) {
        Napi::Object extra = o.Get("extra").As<Napi::Object>();
        Napi::Array keys = extra.GetPropertyNames();
        for (uint32_t i = 0; i < keys.Length(); i++) {
          std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
          Napi::Value v = extra.Get(key);
          if (!v.IsArray()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected an array of numbers for extra." + key);
          Napi::Array a = v.As<Napi::Array>();
          for (uint32_t k = 0; k < a.Length(); k++) c.extra[key].push_back(a.Get(k).As<Napi::Number>().DoubleValue());
        }
      }
      if (o.Get("weights").IsObject()) {
        Napi::Object weights = o.Get("weights").As<Napi::Object>();
        Napi::Array keys = weights.GetPropertyNames();
        for (uint32_t i = 0; i < keys.Length(); i++) {
          train::NamedArray w;
          w.name = keys.Get(i).As<Napi::String>().Utf8Value();
          Napi::Value v = weights.Get(w.name);
          Napi::Value data = v.IsObject() ? v.As<Napi::Object>().Get("data") : env.Undefined();
          Napi::Value shape = v.IsObject() ? v.As<Napi::Object>().Get("shape") : env.Undefined();
          if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array || !shape.IsArray()) {
            ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected { data: Float32Array, shape: number[] } for weights." + w.name);
          }
          double product = 1;
          Napi::Array dims = shape.As<Napi::Array>();
          for (uint32_t k = 0; k < dims.Length(); k++) {
            w.shape.push_back(dims.Get(k).As<Napi::Number>().Int64Value());
            product *= static_cast<double>(w.shape.back());
          }
          auto f = data.As<Napi::TypedArrayOf<float>>();
          if (product != static_cast<double>(f.ElementLength())) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected the length of weights." + w.name + " to be the product of its shape");
          w.values.assign(f.Data(), f.Data() + f.ElementLength());
          c.weights.push_back(std::move(w));
        }
      }
    }
    try {
      model_ = std::shared_ptr<train::Model>(train::CreateModel(c));
    } catch (const InvalidArgument& e) {
      ThrowRange(env, e.code, e.what());
    } catch (const std::exception& e) {
      throw WithCode(Napi::Error::New(env, e.what()), "ERR_IMIAD_NATIVE");
    }
  }

 private:
  // step(images | null, imageShape | null, teacher[], shapes[], cancel, onProgress) -> Promise<loss>
  Napi::Value Step(const Napi::CallbackInfo& info) { return Start(info, false); }
  // maps(images | null, imageShape | null, teacher[], shapes[], cancel, outSize) -> Promise<Float32Array>
  Napi::Value Maps(const Napi::CallbackInfo& info) { return Start(info, true); }

  Napi::Value Start(const Napi::CallbackInfo& info, bool maps) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep;
    View images;
    if (info.Length() > 0 && !info[0].IsNull() && !info[0].IsUndefined()) images = ViewArg(info, 0, 1, "images", &keep);
    std::vector<View> teacher = TeacherArg(info, 2, &keep);
    // Image-input models train (CutPaste) or map (RegAD) on the images alone; the others check their own layers.
    if (teacher.empty() && images.data == nullptr) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected teacher layers");
    Napi::Value cancelKeep;
    const int32_t* cancel = CancelFlagArg(info, 4, &cancelKeep);
    KernelWorker* worker;
    if (maps) {
      const uint32_t outSize = UInt32Arg(info, 5, "outSize", 1, 1 << 14);
      worker = new MapsWorker(env, model_, images, teacher, outSize);
    } else {
      worker = new StepWorker(env, model_, images, teacher);
    }
    for (auto& v : keep) worker->Keep(v);
    worker->SetCancelFlag(cancel, cancelKeep);
    return worker->Launch();
  }

  Napi::Value Calibrate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep;
    std::vector<View> features = TeacherArg(info, 0, &keep);
    if (features.empty()) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected feature levels");
    const bool reset = info.Length() > 2 && info[2].ToBoolean().Value();
    Napi::Value cancelKeep;
    const int32_t* cancel = CancelFlagArg(info, 3, &cancelKeep);
    auto* worker = new CalibrateWorker(env, model_, features, reset);
    for (auto& v : keep) worker->Keep(v);
    worker->SetCancelFlag(cancel, cancelKeep);
    return worker->Launch();
  }

  Napi::Value CalibrateStage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected the calibration stage's name");
    std::string stage = info[0].As<Napi::String>().Utf8Value();
    std::vector<Napi::Value> keep;
    View images;
    if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) images = ViewArg(info, 1, 2, "images", &keep);
    std::vector<View> teacher = TeacherArg(info, 3, &keep);
    if (teacher.empty()) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected teacher layers");
    const bool reset = info.Length() > 5 && info[5].ToBoolean().Value();
    Napi::Value cancelKeep;
    const int32_t* cancel = CancelFlagArg(info, 6, &cancelKeep);
    auto* worker = new CalibrateStageWorker(env, model_, std::move(stage), images, teacher, reset);
    for (auto& v : keep) worker->Keep(v);
    worker->SetCancelFlag(cancel, cancelKeep);
    return worker->Launch();
  }

  Napi::Value Scores(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep;
    std::vector<View> features = TeacherArg(info, 0, &keep);
    if (features.empty()) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected feature levels");
    Napi::Value cancelKeep;
    const int32_t* cancel = CancelFlagArg(info, 2, &cancelKeep);
    View images;
    if (info.Length() > 3 && !info[3].IsNull() && !info[3].IsUndefined()) images = ViewArg(info, 3, 4, "images", &keep);
    auto* worker = new ScoresWorker(env, model_, features, images);
    for (auto& v : keep) worker->Keep(v);
    worker->SetCancelFlag(cancel, cancelKeep);
    return worker->Launch();
  }

  // setLearningRate(lr): the learning rate of the following steps (Model::SetLearningRate).
  Napi::Value SetLearningRate(const Napi::CallbackInfo& info) {
    const double lr = NumberArg(info, 0, "lr");
    try {
      model_->SetLearningRate(lr);
    } catch (const InvalidArgument& e) {
      ThrowRange(info.Env(), e.code, e.what());
    }
    return info.Env().Undefined();
  }

  // forward(images, shape, cancel) -> Promise<{ names, shapes, arrays }> (Model::Forward: eval-mode outputs)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    std::vector<Napi::Value> keep;
    View images = ViewArg(info, 0, 1, "images", &keep);
    Napi::Value cancelKeep;
    const int32_t* cancel = CancelFlagArg(info, 2, &cancelKeep);
    auto* worker = new ForwardWorker(info.Env(), model_, images);
    for (auto& v : keep) worker->Keep(v);
    worker->SetCancelFlag(cancel, cancelKeep);
    return worker->Launch();
  }

  // configure(key, values: number[]) (native/train/train.h: Model::Configure; quick, on the JS thread)
  Napi::Value Configure(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected (key, values)");
    std::vector<double> values;
    Napi::Array a = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      if (!a.Get(i).IsNumber()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected numbers for the values of " + info[0].As<Napi::String>().Utf8Value());
      values.push_back(a.Get(i).As<Napi::Number>().DoubleValue());
    }
    try {
      model_->Configure(info[0].As<Napi::String>().Utf8Value(), values);
    } catch (const InvalidArgument& e) {
      ThrowRange(env, e.code, e.what());
    }
    return env.Undefined();
  }

  // state() -> { names: string[], shapes: number[][], arrays: Float32Array[] }
  Napi::Value State(const Napi::CallbackInfo& info) { return NamedArraysToJs(info.Env(), model_->State()); }

  // loadState(names, shapes, arrays)
  Napi::Value LoadState(const Napi::CallbackInfo& info) {
    return LoadNamed(info, [this](const std::vector<train::NamedArray>& s) { model_->LoadState(s); });
  }

  // optimizerState() -> { names, shapes, arrays } (native/train/train.h: Model::OptimizerState)
  Napi::Value OptimizerState(const Napi::CallbackInfo& info) { return NamedArraysToJs(info.Env(), model_->OptimizerState()); }

  // loadOptimizerState(names, shapes, arrays)
  Napi::Value LoadOptimizerState(const Napi::CallbackInfo& info) {
    return LoadNamed(info, [this](const std::vector<train::NamedArray>& s) { model_->LoadOptimizerState(s); });
  }

  // Converts (names, shapes, arrays) and hands them to `load`; a mismatch becomes a RangeError with its code.
  template <typename Load>
  static Napi::Value LoadNamed(const Napi::CallbackInfo& info, Load load) {
    std::vector<train::NamedArray> state = NamedArraysFromJs(info);
    try {
      load(state);
    } catch (const InvalidArgument& e) {
      ThrowRange(info.Env(), e.code, e.what());
    }
    return info.Env().Undefined();
  }

  // (names, shapes, arrays) as given to loadState / loadOptimizerState.
  static std::vector<train::NamedArray> NamedArraysFromJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsArray() || !info[2].IsArray()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected (names, shapes, arrays)");
    Napi::Array names = info[0].As<Napi::Array>(), shapes = info[1].As<Napi::Array>(), arrays = info[2].As<Napi::Array>();
    if (names.Length() != shapes.Length() || names.Length() != arrays.Length()) ThrowRange(env, "ERR_IMIAD_CHECKPOINT", "Expected as many names, shapes and arrays");
    std::vector<train::NamedArray> state(names.Length());
    for (uint32_t i = 0; i < names.Length(); i++) {
      Napi::Value a = arrays.Get(i);
      if (!names.Get(i).IsString() || !shapes.Get(i).IsArray() || !a.IsTypedArray() ||
          a.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        ThrowType(env, "ERR_IMIAD_CHECKPOINT", "Expected a name, a shape and a Float32Array per tensor");
      }
      state[i].name = names.Get(i).As<Napi::String>().Utf8Value();
      Napi::Array s = shapes.Get(i).As<Napi::Array>();
      for (uint32_t k = 0; k < s.Length(); k++) state[i].shape.push_back(s.Get(k).As<Napi::Number>().Int64Value());
      auto f = a.As<Napi::TypedArrayOf<float>>();
      state[i].values.assign(f.Data(), f.Data() + f.ElementLength());
    }
    return state;
  }

  Napi::Value ParameterCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(model_->ParameterCount()));
  }

  std::shared_ptr<train::Model> model_;
};

}  // namespace

// runtimeStats() -> the training thread's and the tensor cache's counters (native/train/runtime.h).
Napi::Value RuntimeStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const train::runtime::Stats s = train::runtime::GetStats();
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char* name, double v) { o.Set(name, Napi::Number::New(env, v)); };
  set("tasks", static_cast<double>(s.tasks));
  set("threadId", static_cast<double>(s.threadId));
  set("lastThreads", s.lastThreads);
  set("callerThreads", s.callerThreads);
  set("mappedBlocks", static_cast<double>(s.mapped));
  set("reusedBlocks", static_cast<double>(s.reused));
  set("unmappedBlocks", static_cast<double>(s.unmapped));
  set("liveBytes", static_cast<double>(s.liveBytes));
  set("cachedBytes", static_cast<double>(s.cachedBytes));
  set("peakBytes", static_cast<double>(s.peakBytes));
  set("idleReleaseMs", s.idleReleaseMs);
  o.Set("allocatorInstalled", Napi::Boolean::New(env, s.installed));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // libtorch's CPU allocator becomes the caching one before any tensor exists (runtime.h).
  train::runtime::Install();
  // The JS thread's own tensor work (constructors, state in and out) stays on one thread: no second OpenMP team.
  train::runtime::SingleThreadCaller();
  exports.Set("TrainModel", TrainModel::Define(env));
  exports.Set("runtimeStats", Napi::Function::New(env, RuntimeStats));
  exports.Set("releaseCachedMemory", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), static_cast<double>(train::runtime::ReleaseCache()));
              }));
  exports.Set("setIdleReleaseMs", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                train::runtime::SetIdleReleaseMs(static_cast<int>(UInt32Arg(info, 0, "ms", 0, 3600000)));
                return info.Env().Undefined();
              }));
  exports.Set("torchVersion", Napi::String::New(env, train::TorchVersion()));
  exports.Set("cudaAvailable", Napi::Boolean::New(env, train::CudaAvailable()));
  exports.Set("cudaBuilt", Napi::Boolean::New(env, train::CudaBuilt()));
  exports.Set("selfCheck", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), train::SelfCheck());
              }));
  return exports;
}

}  // namespace glue
}  // namespace imiad

namespace {
Napi::Object InitTrain(Napi::Env env, Napi::Object exports) { return imiad::glue::Init(env, exports); }
}  // namespace

NODE_API_MODULE(imiad_train, InitTrain)
