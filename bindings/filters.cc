// Glue of the map filters and PatchCore feature operations (native/filters.h): converts and checks arguments,
// allocates the output Float32Array on the JS thread and starts a KernelWorker that fills it in place.
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "exports.h"
#include "filters.h"
#include "glue.h"

namespace imiad {
namespace glue {

namespace {

constexpr uint32_t kMaxSide = 1u << 20;

// A kernel that writes into an output array created before it starts.
class FillWorker : public KernelWorker {
 public:
  FillWorker(Napi::Env env, const char* name, Napi::Float32Array out, std::function<void(const RunControl&)> run)
      : KernelWorker(env, name), out_(Napi::Persistent(out)), run_(std::move(run)) {}

 protected:
  void Run(const RunControl& control) override { run_(control); }
  Napi::Value Result(Napi::Env) override { return out_.Value(); }

 private:
  Napi::Reference<Napi::Float32Array> out_;
  std::function<void(const RunControl&)> run_;
};

void ExpectLength(Napi::Env env, const F32& a, double expected, const char* name, const char* formula) {
  if (static_cast<double>(a.length) != expected) {
    ThrowRange(env, "ERR_IMIAD_DIMS", std::string("Expected length of ") + name + " to be " + formula + " (" +
                                          std::to_string(static_cast<uint64_t>(expected)) + ") but received " +
                                          std::to_string(a.length));
  }
}

Napi::Float32Array NewOutput(Napi::Env env, double length) {
  if (length > 4294967295.0) ThrowRange(env, "ERR_IMIAD_RANGE", "The output would exceed 2^32 - 1 elements");
  return Napi::Float32Array::New(env, static_cast<size_t>(length));
}

Napi::Value Start(const Napi::CallbackInfo& info, size_t cancelIndex, const char* name, Napi::Float32Array out,
                  const std::vector<Napi::Value>& keep, std::function<void(const RunControl&)> run) {
  Napi::Value cancelKeep;
  const int32_t* cancel = CancelFlagArg(info, cancelIndex, &cancelKeep);
  auto* worker = new FillWorker(info.Env(), name, out, std::move(run));
  for (const Napi::Value& v : keep) worker->Keep(v);
  worker->SetCancelFlag(cancel, cancelKeep);
  return worker->Launch();
}

// (maps, count, height, width, sigma, truncate, cancel)
Napi::Value GaussianBlur(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 maps = Float32Arg(info, 0, "maps");
  const uint32_t count = UInt32Arg(info, 1, "count", 1, UINT32_MAX);
  const uint32_t h = UInt32Arg(info, 2, "height", 1, kMaxSide);
  const uint32_t w = UInt32Arg(info, 3, "width", 1, kMaxSide);
  const double sigma = NumberArg(info, 4, "sigma");
  const double truncate = NumberArg(info, 5, "truncate");
  if (!(sigma > 0.0 && sigma <= 1e4) || !(truncate > 0.0 && truncate <= 100.0)) {
    ThrowRange(env, "ERR_IMIAD_RANGE", "Expected sigma in (0, 1e4] and truncate in (0, 100]");
  }
  const double total = static_cast<double>(count) * h * w;
  ExpectLength(env, maps, total, "maps", "count * height * width");
  Napi::Float32Array out = NewOutput(env, total);
  float* dst = out.Data();
  const float* src = maps.data;
  return Start(info, 6, "imiad.gaussianBlur", out, {maps.array}, [=](const RunControl& c) {
    gaussianBlur(src, dst, count, h, w, sigma, truncate, c);
  });
}

// (maps, count, height, width, outHeight, outWidth, cancel)
Napi::Value ResizeBilinear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 maps = Float32Arg(info, 0, "maps");
  const uint32_t count = UInt32Arg(info, 1, "count", 1, UINT32_MAX);
  const uint32_t h = UInt32Arg(info, 2, "height", 1, kMaxSide);
  const uint32_t w = UInt32Arg(info, 3, "width", 1, kMaxSide);
  const uint32_t oh = UInt32Arg(info, 4, "outHeight", 1, kMaxSide);
  const uint32_t ow = UInt32Arg(info, 5, "outWidth", 1, kMaxSide);
  ExpectLength(env, maps, static_cast<double>(count) * h * w, "maps", "count * height * width");
  Napi::Float32Array out = NewOutput(env, static_cast<double>(count) * oh * ow);
  float* dst = out.Data();
  const float* src = maps.data;
  return Start(info, 6, "imiad.resizeBilinear", out, {maps.array}, [=](const RunControl& c) {
    resizeBilinear(src, dst, count, h, w, oh, ow, c);
  });
}

// (maps, count, height, width, patchSize, cancel)
Napi::Value NeighbourhoodAverage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 maps = Float32Arg(info, 0, "maps");
  const uint32_t count = UInt32Arg(info, 1, "count", 1, UINT32_MAX);
  const uint32_t h = UInt32Arg(info, 2, "height", 1, kMaxSide);
  const uint32_t w = UInt32Arg(info, 3, "width", 1, kMaxSide);
  const uint32_t patch = UInt32Arg(info, 4, "patchSize", 1, 63);
  if (patch % 2 == 0) ThrowRange(env, "ERR_IMIAD_RANGE", "Expected an odd patchSize");
  const double total = static_cast<double>(count) * h * w;
  ExpectLength(env, maps, total, "maps", "count * height * width");
  Napi::Float32Array out = NewOutput(env, total);
  float* dst = out.Data();
  const float* src = maps.data;
  return Start(info, 5, "imiad.neighbourhoodAverage", out, {maps.array}, [=](const RunControl& c) {
    neighbourhoodAverage(src, dst, count, h, w, patch, c);
  });
}

// (rows, dims, targetDims, cancel)
Napi::Value AdaptiveAvgPool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 rows = Float32Arg(info, 0, "rows");
  const uint32_t dims = UInt32Arg(info, 1, "dims", 1, 1u << 24);
  const uint32_t target = UInt32Arg(info, 2, "targetDims", 1, 1u << 24);
  const size_t rowCount = RowsOf(env, rows, dims, "rows");
  Napi::Float32Array out = NewOutput(env, static_cast<double>(rowCount) * target);
  float* dst = out.Data();
  const float* src = rows.data;
  return Start(info, 3, "imiad.adaptiveAvgPool1d", out, {rows.array}, [=](const RunControl& c) {
    adaptiveAvgPool1d(src, dst, rowCount, dims, target, c);
  });
}

// Arguments 0 and 1: layers (Float32Array[]) and shapes (channels, height, width per layer); n images each.
std::vector<FeatureLayer> LayersArg(const Napi::CallbackInfo& info, uint32_t n, std::vector<Napi::Value>& keep) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsArray()) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected arrays of layers and shapes");
  }
  Napi::Array arrays = info[0].As<Napi::Array>();
  Napi::Array shapes = info[1].As<Napi::Array>();
  const uint32_t layerCount = arrays.Length();
  if (layerCount == 0 || layerCount > 16 || shapes.Length() != layerCount * 3) {
    ThrowRange(env, "ERR_IMIAD_RANGE", "Expected 1 to 16 layers with 3 shape numbers each");
  }
  std::vector<FeatureLayer> layers;
  for (uint32_t l = 0; l < layerCount; ++l) {
    Napi::Value a = arrays.Get(l);
    if (!a.IsTypedArray() || a.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Float32Array for layer " + std::to_string(l));
    }
    uint32_t dims[3];
    for (uint32_t k = 0; k < 3; ++k) {
      Napi::Value v = shapes.Get(l * 3 + k);
      const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 1 && d <= kMaxSide && std::floor(d) == d)) {
        ThrowRange(env, "ERR_IMIAD_DIMS", "Expected positive integer shapes for layer " + std::to_string(l));
      }
      dims[k] = static_cast<uint32_t>(d);
    }
    auto arr = a.As<Napi::TypedArrayOf<float>>();
    if (static_cast<double>(arr.ElementLength()) != static_cast<double>(n) * dims[0] * dims[1] * dims[2]) {
      ThrowRange(env, "ERR_IMIAD_DIMS", "Expected length of layer " + std::to_string(l) +
                                            " to be n * channels * height * width");
    }
    layers.push_back(FeatureLayer{arr.Data(), dims[0], dims[1], dims[2]});
    keep.push_back(a);
  }
  return layers;
}

// (layers, shapes, n, patchSize, pretrainDims, targetDims, cancel)
Napi::Value PatchEmbedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t n = UInt32Arg(info, 2, "n", 1, UINT32_MAX);
  const uint32_t patch = UInt32Arg(info, 3, "patchSize", 1, 63);
  const uint32_t pretrain = UInt32Arg(info, 4, "pretrainDims", 1, 1u << 20);
  const uint32_t target = UInt32Arg(info, 5, "targetDims", 1, 1u << 20);
  if (patch % 2 == 0) ThrowRange(env, "ERR_IMIAD_RANGE", "Expected an odd patchSize");
  std::vector<Napi::Value> keep;
  const std::vector<FeatureLayer> layers = LayersArg(info, n, keep);
  Napi::Float32Array out =
      NewOutput(env, static_cast<double>(n) * layers[0].height * layers[0].width * static_cast<double>(target));
  float* dst = out.Data();
  return Start(info, 6, "imiad.patchEmbedding", out, keep, [=](const RunControl& c) {
    patchEmbedding(layers, n, patch, pretrain, target, dst, c);
  });
}

// (layers, shapes, n, channels: Uint32Array, cancel)
Napi::Value GatherChannels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t n = UInt32Arg(info, 2, "n", 1, UINT32_MAX);
  std::vector<Napi::Value> keep;
  const std::vector<FeatureLayer> layers = LayersArg(info, n, keep);
  if (info.Length() <= 3 || !info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected Uint32Array for channels");
  }
  auto channels = info[3].As<Napi::TypedArrayOf<uint32_t>>();
  const size_t count = channels.ElementLength();
  if (count == 0) ThrowRange(env, "ERR_IMIAD_EMPTY", "Expected at least one channel");
  size_t total = 0;
  for (const FeatureLayer& l : layers) total += l.channels;
  for (size_t j = 0; j < count; ++j) {
    if (channels.Data()[j] >= total) ThrowRange(env, "ERR_IMIAD_RANGE", "Expected channel indices below the channel total");
  }
  keep.push_back(info[3]);
  Napi::Float32Array out =
      NewOutput(env, static_cast<double>(n) * count * layers[0].height * static_cast<double>(layers[0].width));
  float* dst = out.Data();
  const uint32_t* idx = channels.Data();
  return Start(info, 4, "imiad.gatherChannels", out, keep, [=](const RunControl& c) {
    gatherChannels(layers, n, idx, count, dst, c);
  });
}

}  // namespace

void RegisterFilters(Napi::Env env, Napi::Object exports) {
  exports.Set("gaussianBlur", Napi::Function::New(env, GaussianBlur, "gaussianBlur"));
  exports.Set("resizeBilinear", Napi::Function::New(env, ResizeBilinear, "resizeBilinear"));
  exports.Set("neighbourhoodAverage", Napi::Function::New(env, NeighbourhoodAverage, "neighbourhoodAverage"));
  exports.Set("adaptiveAvgPool1d", Napi::Function::New(env, AdaptiveAvgPool, "adaptiveAvgPool1d"));
  exports.Set("patchEmbedding", Napi::Function::New(env, PatchEmbedding, "patchEmbedding"));
  exports.Set("gatherChannels", Napi::Function::New(env, GatherChannels, "gatherChannels"));
}

}  // namespace glue
}  // namespace imiad
