// Glue of the greedy coreset (native/coreset.h): converts arguments and starts a KernelWorker.
//   greedyCoreset(features, dims, count, projectionDims, seed, startIndex, cancelFlag?, onProgress?)
//     -> Promise<Uint32Array>   (row indices in selection order)
//   greedyCoresetPlain(...same)  (internal: the plain loop, the reference of the tests and the benchmark)
#include <cmath>
#include <string>
#include <vector>

#include "coreset.h"
#include "exports.h"
#include "glue.h"

namespace imiad {
namespace glue {
namespace {

class CoresetWorker : public KernelWorker {
 public:
  CoresetWorker(Napi::Env env, bool plain, const float* features, size_t rows, size_t dims, CoresetOptions options)
      : KernelWorker(env, plain ? "imiad.greedyCoresetPlain" : "imiad.greedyCoreset"),
        plain_(plain),
        features_(features),
        rows_(rows),
        dims_(dims),
        options_(options) {}

 protected:
  void Run(const RunControl& control) override {
    selected_ = plain_ ? greedyCoresetPlain(features_, rows_, dims_, options_, control)
                       : greedyCoreset(features_, rows_, dims_, options_, control);
  }

  Napi::Value Result(Napi::Env env) override {
    return VectorToTypedArray<uint32_t, Napi::Uint32Array>(env, selected_);
  }

 private:
  bool plain_;
  const float* features_;
  size_t rows_, dims_;
  CoresetOptions options_;
  std::vector<uint32_t> selected_;
};

Napi::Value Start(const Napi::CallbackInfo& info, bool plain) {
  Napi::Env env = info.Env();
  const F32 features = Float32Arg(info, 0, "features");
  const uint32_t dims = UInt32Arg(info, 1, "dims", 1, 1u << 20);
  const size_t rows = RowsOf(env, features, dims, "features");
  if (rows > UINT32_MAX) ThrowRange(env, "ERR_IMIAD_RANGE", "Expected at most 4294967295 rows in features");
  CoresetOptions options;
  options.count = UInt32Arg(info, 2, "count", 1, static_cast<uint32_t>(rows));
  options.projectionDims = UInt32Arg(info, 3, "projectionDims", 0, 1u << 16);
  const double seed = NumberArg(info, 4, "seed");
  if (!std::isfinite(seed) || std::floor(seed) != seed || seed < 0 || seed > 9007199254740991.0) {
    ThrowRange(env, "ERR_IMIAD_RANGE", "Expected integer between 0 and 9007199254740991 for seed");
  }
  options.seed = static_cast<uint64_t>(seed);
  options.startIndex = UInt32Arg(info, 5, "startIndex", 0, static_cast<uint32_t>(rows - 1));
  Napi::Value keepFlag;
  const int32_t* cancelFlag = CancelFlagArg(info, 6, &keepFlag);
  Napi::Function onProgress;
  if (info.Length() > 7 && !info[7].IsUndefined() && !info[7].IsNull()) {
    if (!info[7].IsFunction()) ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected function for onProgress");
    onProgress = info[7].As<Napi::Function>();
  }

  auto* worker = new CoresetWorker(env, plain, features.data, rows, dims, options);
  worker->Keep(features.array);
  worker->SetCancelFlag(cancelFlag, keepFlag);
  if (!onProgress.IsEmpty()) worker->SetProgressCallback(onProgress);
  return worker->Launch();
}

}  // namespace

void RegisterCoreset(Napi::Env env, Napi::Object exports) {
  exports.Set("greedyCoreset",
              Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Start(info, false); }));
  exports.Set("greedyCoresetPlain",
              Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Start(info, true); }));
}

}  // namespace glue
}  // namespace imiad
