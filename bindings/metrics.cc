// Glue for the metric kernels (native/components, native/curves): converts arguments and starts KernelWorkers.
// Full validation with the project's messages happens first in bindings/metrics.ts; the guards here only make sure
// no call can read outside its arrays.
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "components.h"
#include "curves.h"
#include "exports.h"
#include "glue.h"

namespace imiad {
namespace glue {
namespace {

struct U8 {
  const uint8_t* data = nullptr;
  size_t length = 0;
};

U8 Uint8Arg(Napi::Env env, Napi::Value value, const std::string& name) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Uint8Array for " + name);
  }
  auto a = value.As<Napi::Uint8Array>();
  return {a.Data(), a.ElementLength()};
}

const double* Float64Arg(Napi::Env env, Napi::Value value, const std::string& name, size_t* length) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Float64Array for " + name);
  }
  auto a = value.As<Napi::Float64Array>();
  *length = a.ElementLength();
  return a.Data();
}

const float* Float32Value(Napi::Env env, Napi::Value value, const std::string& name, size_t* length) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Float32Array for " + name);
  }
  auto a = value.As<Napi::Float32Array>();
  *length = a.ElementLength();
  return a.Data();
}

Napi::Array ArrayArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || !info[index].IsArray()) {
    ThrowType(info.Env(), "ERR_IMIAD_ARGUMENT", std::string("Expected Array for ") + name);
  }
  return info[index].As<Napi::Array>();
}

void ProgressArg(const Napi::CallbackInfo& info, size_t index, KernelWorker* worker) {
  if (info.Length() > index && info[index].IsFunction()) worker->SetProgressCallback(info[index].As<Napi::Function>());
}

Napi::Object BinaryToObject(Napi::Env env, const BinaryMetrics& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("auroc", m.auroc);
  o.Set("ap", m.ap);
  o.Set("f1Max", m.f1Max);
  o.Set("positives", static_cast<double>(m.positives));
  o.Set("negatives", static_cast<double>(m.negatives));
  o.Set("thresholds", static_cast<double>(m.thresholds));
  return o;
}

// ---- labelComponents(mask: Uint8Array, width, height, cancelFlag?) -> Promise<{ labels: Uint32Array, count }>
class LabelWorker : public KernelWorker {
 public:
  LabelWorker(Napi::Env env, const uint8_t* mask, uint32_t width, uint32_t height)
      : KernelWorker(env, "imiad.labelComponents"), mask_(mask), width_(width), height_(height) {}

 protected:
  void Run(const RunControl& control) override {
    control.throwIfCancelled();
    labels_.resize(static_cast<size_t>(width_) * height_);
    count_ = labelComponents(mask_, width_, height_, labels_.data());
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("labels", VectorToTypedArray<uint32_t, Napi::Uint32Array>(env, labels_));
    o.Set("count", Napi::Number::New(env, count_));
    return o;
  }

 private:
  const uint8_t* mask_;
  uint32_t width_, height_;
  std::vector<uint32_t> labels_;
  uint32_t count_ = 0;
};

Napi::Value LabelComponents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Uint8Array for mask");
  const U8 mask = Uint8Arg(env, info[0], "mask");
  const uint32_t width = UInt32Arg(info, 1, "width", 1, 1u << 30);
  const uint32_t height = UInt32Arg(info, 2, "height", 1, 1u << 30);
  if (static_cast<uint64_t>(width) * height != mask.length) {
    ThrowRange(env, "ERR_IMIAD_DIMS", "Expected length of mask to be width * height (" +
                                          std::to_string(static_cast<uint64_t>(width) * height) + ") but received " +
                                          std::to_string(mask.length));
  }
  Napi::Value keep;
  const int32_t* cancel = CancelFlagArg(info, 3, &keep);
  auto* worker = new LabelWorker(env, mask.data, width, height);
  worker->Keep(info[0]);
  worker->SetCancelFlag(cancel, keep);
  return worker->Launch();
}

// ---- binaryMetrics(scores: Float64Array, labels: Uint8Array, cancelFlag?) -> Promise<BinaryMetrics>
class BinaryWorker : public KernelWorker {
 public:
  BinaryWorker(Napi::Env env, const double* scores, const uint8_t* labels, size_t n)
      : KernelWorker(env, "imiad.binaryMetrics"), scores_(scores), labels_(labels), n_(n) {}

 protected:
  void Run(const RunControl& control) override {
    control.throwIfCancelled();
    result_ = binaryMetrics(scores_, labels_, n_);
  }
  Napi::Value Result(Napi::Env env) override { return BinaryToObject(env, result_); }

 private:
  const double* scores_;
  const uint8_t* labels_;
  size_t n_;
  BinaryMetrics result_;
};

Napi::Value BinaryMetricsFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Float64Array for scores");
  size_t n = 0;
  const double* scores = Float64Arg(env, info[0], "scores", &n);
  const U8 labels = Uint8Arg(env, info[1], "labels");
  if (labels.length != n) {
    ThrowRange(env, "ERR_IMIAD_DIMS", "Expected labels of the same length as scores (" + std::to_string(n) +
                                          ") but received " + std::to_string(labels.length));
  }
  if (n >= (size_t(1) << 32)) ThrowRange(env, "ERR_IMIAD_RANGE", "Expected fewer than 2^32 scores");
  Napi::Value keep;
  const int32_t* cancel = CancelFlagArg(info, 2, &keep);
  auto* worker = new BinaryWorker(env, scores, labels.data, n);
  worker->Keep(info[0]);
  worker->Keep(info[1]);
  worker->SetCancelFlag(cancel, keep);
  return worker->Launch();
}

// ---- trapezoid(x: Float64Array, y: Float64Array, xMax: number (NaN = none)) -> Promise<number>
class TrapezoidWorker : public KernelWorker {
 public:
  TrapezoidWorker(Napi::Env env, std::vector<double> x, std::vector<double> y, double xMax)
      : KernelWorker(env, "imiad.trapezoid"), x_(std::move(x)), y_(std::move(y)), xMax_(xMax) {}

 protected:
  void Run(const RunControl&) override { area_ = trapezoid(x_, y_, xMax_); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, area_); }

 private:
  std::vector<double> x_, y_;
  double xMax_;
  double area_ = 0;
};

Napi::Value Trapezoid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Float64Array for x");
  size_t nx = 0, ny = 0;
  const double* x = Float64Arg(env, info[0], "x", &nx);
  const double* y = Float64Arg(env, info[1], "y", &ny);
  if (nx != ny) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected x and y of the same length");
  const double xMax = NumberArg(info, 2, "xMax");
  auto* worker = new TrapezoidWorker(env, std::vector<double>(x, x + nx), std::vector<double>(y, y + ny), xMax);
  return worker->Launch();
}

// ---- PixelAccumulator: add images, then compute pixel AUROC / AP / F1-max and AU-PRO or AU-sPRO.
struct AccumulatorState {
  PixelAccumulator accumulator;
  std::atomic<bool> busy{false};
};

// Marks the accumulator busy for the lifetime of one worker (created and destroyed on the JS thread).
class BusyGuard {
 public:
  explicit BusyGuard(std::shared_ptr<AccumulatorState> state) : state_(std::move(state)) {}
  ~BusyGuard() { state_->busy.store(false); }
  AccumulatorState& operator*() const { return *state_; }

 private:
  std::shared_ptr<AccumulatorState> state_;
};

std::shared_ptr<AccumulatorState> Acquire(Napi::Env env, const std::shared_ptr<AccumulatorState>& state) {
  bool expected = false;
  if (!state->busy.compare_exchange_strong(expected, true)) {
    throw WithCode(Napi::Error::New(env, "The PixelAccumulator is busy: wait for the previous call to settle"),
                   "ERR_IMIAD_BUSY");
  }
  return state;
}

// Reads maps[i] (its size from the widths and heights) into the image's scores, width and height and keeps the array
// alive; returns its pixel count.
template <typename Image>
size_t ReadMap(Napi::Env env, Napi::Array maps, uint32_t i, uint32_t width, uint32_t height, Image* image,
               std::vector<Napi::Value>* keep) {
  const std::string index = "[" + std::to_string(i) + "]";
  size_t n = 0;
  Napi::Value map = maps.Get(i);
  image->scores = Float32Value(env, map, "maps" + index, &n);
  image->width = width;
  image->height = height;
  if (static_cast<uint64_t>(width) * height != n) {
    ThrowRange(env, "ERR_IMIAD_DIMS", "Expected length of maps" + index + " to be width * height");
  }
  keep->push_back(map);
  return n;
}

class AddBinaryWorker : public KernelWorker {
 public:
  AddBinaryWorker(Napi::Env env, std::shared_ptr<AccumulatorState> state,
                  std::vector<PixelAccumulator::BinaryImage> images, bool regions)
      : KernelWorker(env, "imiad.PixelAccumulator.addBinary"), guard_(std::move(state)), images_(std::move(images)),
        regions_(regions) {}

 protected:
  void Run(const RunControl& control) override { (*guard_).accumulator.addBinary(images_, regions_, control); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  BusyGuard guard_;
  std::vector<PixelAccumulator::BinaryImage> images_;
  bool regions_;
};

class AddChannelsWorker : public KernelWorker {
 public:
  AddChannelsWorker(Napi::Env env, std::shared_ptr<AccumulatorState> state,
                    std::vector<PixelAccumulator::ChannelImage> images)
      : KernelWorker(env, "imiad.PixelAccumulator.addChannels"), guard_(std::move(state)), images_(std::move(images)) {}

 protected:
  void Run(const RunControl& control) override { (*guard_).accumulator.addChannels(images_, control); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  BusyGuard guard_;
  std::vector<PixelAccumulator::ChannelImage> images_;
};

class ComputeWorker : public KernelWorker {
 public:
  ComputeWorker(Napi::Env env, std::shared_ptr<AccumulatorState> state, std::vector<double> limits)
      : KernelWorker(env, "imiad.PixelAccumulator.compute"), guard_(std::move(state)), limits_(std::move(limits)) {}

 protected:
  void Run(const RunControl& control) override { result_ = (*guard_).accumulator.compute(limits_, control); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = BinaryToObject(env, result_.binary);
    o.Set("areaUnderPro", VectorToTypedArray<double, Napi::Float64Array>(env, result_.areaUnderPro));
    o.Set("units", static_cast<double>(result_.units));
    return o;
  }

 private:
  BusyGuard guard_;
  std::vector<double> limits_;
  PixelMetrics result_;
};

class Accumulator : public Napi::ObjectWrap<Accumulator> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PixelAccumulator",
                       {InstanceMethod("addBinary", &Accumulator::AddBinary),
                        InstanceMethod("addChannels", &Accumulator::AddChannels),
                        InstanceMethod("compute", &Accumulator::Compute),
                        InstanceMethod("reserve", &Accumulator::Reserve),
                        InstanceMethod("pixels", &Accumulator::Pixels)});
  }

  explicit Accumulator(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Accumulator>(info), state_(std::make_shared<AccumulatorState>()) {}

 private:
  // Reads maps[i] (Float32Array), widths/heights (Float64Array) and checks lengths; keeps the arrays alive.
  static void Sizes(const Napi::CallbackInfo& info, const Napi::Array& maps, std::vector<uint32_t>* widths,
                    std::vector<uint32_t>* heights) {
    Napi::Env env = info.Env();
    size_t nw = 0, nh = 0;
    const double* w = Float64Arg(env, info[2], "widths", &nw);
    const double* h = Float64Arg(env, info[3], "heights", &nh);
    if (nw != maps.Length() || nh != maps.Length()) {
      ThrowRange(env, "ERR_IMIAD_DIMS", "Expected one width and height per map");
    }
    for (size_t i = 0; i < nw; ++i) {
      if (!(w[i] >= 1 && h[i] >= 1 && w[i] <= (1u << 30) && h[i] <= (1u << 30)) || std::floor(w[i]) != w[i] ||
          std::floor(h[i]) != h[i]) {
        ThrowRange(env, "ERR_IMIAD_DIMS", "Expected positive integer sizes for map " + std::to_string(i));
      }
      widths->push_back(static_cast<uint32_t>(w[i]));
      heights->push_back(static_cast<uint32_t>(h[i]));
    }
  }

  // Starts the worker make() builds on the acquired accumulator, after reading the cancel flag at info[cancelAt];
  // keeps the inputs and this object alive while it runs; the progress callback is info[cancelAt + 1].
  template <typename Make>
  Napi::Value Start(const Napi::CallbackInfo& info, size_t cancelAt, const std::vector<Napi::Value>& keep, Make make) {
    Napi::Env env = info.Env();
    Napi::Value cancelKeep;
    const int32_t* cancel = CancelFlagArg(info, cancelAt, &cancelKeep);
    KernelWorker* worker = make(Acquire(env, state_));
    for (auto& v : keep) worker->Keep(v);
    worker->Keep(Value());
    worker->SetCancelFlag(cancel, cancelKeep);
    ProgressArg(info, cancelAt + 1, worker);
    return worker->Launch();
  }

  Napi::Value AddBinary(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array maps = ArrayArg(info, 0, "maps");
    Napi::Array masks = ArrayArg(info, 1, "masks");
    if (masks.Length() != maps.Length()) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected one mask (or null) per map");
    std::vector<uint32_t> widths, heights;
    Sizes(info, maps, &widths, &heights);
    const bool regions = info.Length() > 4 && info[4].ToBoolean().Value();
    std::vector<PixelAccumulator::BinaryImage> images(maps.Length());
    std::vector<Napi::Value> keep;
    for (uint32_t i = 0; i < maps.Length(); ++i) {
      const std::string index = "[" + std::to_string(i) + "]";
      const size_t n = ReadMap(env, maps, i, widths[i], heights[i], &images[i], &keep);
      Napi::Value mask = masks.Get(i);
      if (!mask.IsNull() && !mask.IsUndefined()) {
        const U8 m = Uint8Arg(env, mask, "masks" + index);
        if (m.length != n) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected length of masks" + index + " to be width * height");
        images[i].mask = m.data;
        keep.push_back(mask);
      }
    }
    return Start(info, 5, keep, [&](std::shared_ptr<AccumulatorState> state) -> KernelWorker* {
      return new AddBinaryWorker(env, std::move(state), std::move(images), regions);
    });
  }

  Napi::Value AddChannels(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array maps = ArrayArg(info, 0, "maps");
    Napi::Array channels = ArrayArg(info, 1, "channels");
    if (channels.Length() != maps.Length()) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected one channel list per map");
    std::vector<uint32_t> widths, heights;
    Sizes(info, maps, &widths, &heights);
    Napi::Array saturations = ArrayArg(info, 4, "saturation");
    if (saturations.Length() != maps.Length()) {
      ThrowRange(env, "ERR_IMIAD_DIMS", "Expected one saturation list per map");
    }
    std::vector<PixelAccumulator::ChannelImage> images(maps.Length());
    std::vector<Napi::Value> keep;
    for (uint32_t i = 0; i < maps.Length(); ++i) {
      const std::string index = "[" + std::to_string(i) + "]";
      const size_t n = ReadMap(env, maps, i, widths[i], heights[i], &images[i], &keep);
      if (!channels.Get(i).IsArray()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Array for channels" + index);
      Napi::Array list = channels.Get(i).As<Napi::Array>();
      size_t ns = 0;
      const double* sat = Float64Arg(env, saturations.Get(i), "saturation" + index, &ns);
      if (ns != list.Length()) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected one saturation area per channel" + index);
      for (uint32_t c = 0; c < list.Length(); ++c) {
        const U8 m = Uint8Arg(env, list.Get(c), "channels" + index + "[" + std::to_string(c) + "]");
        if (m.length != n) ThrowRange(env, "ERR_IMIAD_DIMS", "Expected length of channels" + index + " to be width * height");
        if (!(sat[c] >= 1 && sat[c] < 4294967296.0) || std::floor(sat[c]) != sat[c]) {
          ThrowRange(env, "ERR_IMIAD_RANGE", "Expected positive integer saturation areas" + index);
        }
        images[i].channels.push_back(m.data);
        images[i].saturation.push_back(static_cast<uint64_t>(sat[c]));
        keep.push_back(list.Get(c));
      }
    }
    return Start(info, 5, keep, [&](std::shared_ptr<AccumulatorState> state) -> KernelWorker* {
      return new AddChannelsWorker(env, std::move(state), std::move(images));
    });
  }

  Napi::Value Compute(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t n = 0;
    if (info.Length() < 1) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Float64Array for limits");
    const double* limits = Float64Arg(env, info[0], "limits", &n);
    for (size_t i = 0; i < n; ++i) {
      if (!(limits[i] > 0 && limits[i] <= 1)) ThrowRange(env, "ERR_IMIAD_RANGE", "Expected limits in (0, 1]");
    }
    return Start(info, 1, {}, [&](std::shared_ptr<AccumulatorState> state) -> KernelWorker* {
      return new ComputeWorker(env, std::move(state), std::vector<double>(limits, limits + n));
    });
  }

  Napi::Value Reserve(const Napi::CallbackInfo& info) {
    const double n = NumberArg(info, 0, "pixels");
    if (state_->busy.load()) {
      throw WithCode(Napi::Error::New(info.Env(), "The PixelAccumulator is busy: wait for the previous call to settle"),
                     "ERR_IMIAD_BUSY");
    }
    if (n > 0 && n < 9.0e15) {
      try {
        state_->accumulator.reserve(static_cast<uint64_t>(n));
      } catch (const std::bad_alloc&) {
        throw WithCode(Napi::Error::New(info.Env(), "Not enough memory for this operation"), "ERR_IMIAD_OUT_OF_MEMORY");
      } catch (const std::length_error&) {
        throw WithCode(Napi::Error::New(info.Env(), "Not enough memory for this operation"), "ERR_IMIAD_OUT_OF_MEMORY");
      }
    }
    return info.Env().Undefined();
  }

  Napi::Value Pixels(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(state_->accumulator.pixels()));
  }

  std::shared_ptr<AccumulatorState> state_;
};

}  // namespace

void RegisterMetrics(Napi::Env env, Napi::Object exports) {
  exports.Set("labelComponents", Napi::Function::New(env, LabelComponents, "labelComponents"));
  exports.Set("binaryMetrics", Napi::Function::New(env, BinaryMetricsFn, "binaryMetrics"));
  exports.Set("trapezoid", Napi::Function::New(env, Trapezoid, "trapezoid"));
  exports.Set("PixelAccumulator", Accumulator::Define(env));
}

}  // namespace glue
}  // namespace imiad
