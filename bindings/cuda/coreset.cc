// Glue of the GPU greedy coreset, with the CPU addon's raw signature: greedyCoreset(features, dims, count,
// projectionDims, seed, startIndex, cancelFlag, onProgress) -> Promise<Uint32Array>. With projectionDims > 0 the
// features are first projected on the host by the CPU kernel's own projectFeatures (native/coreset.h), so the CPU
// and the GPU select from bit-identical projected features.
#include <napi.h>

#include <cmath>
#include <vector>

#include "coreset_cuda.h"
#include "glue.h"

#if __has_include("coreset.h")
#include "coreset.h"
#define IMIAD_HAVE_PROJECTION 1
#else
#define IMIAD_HAVE_PROJECTION 0
#endif

namespace imiad {
namespace glue {

namespace {

class CoresetWorker : public KernelWorker {
 public:
  CoresetWorker(Napi::Env env, const float* features, size_t rows, size_t dims, size_t count, size_t projectionDims,
                uint64_t seed, size_t startIndex)
      : KernelWorker(env, "imiad.cuda.greedyCoreset"),
        features_(features),
        rows_(rows),
        dims_(dims),
        count_(count),
        projectionDims_(projectionDims),
        seed_(seed),
        startIndex_(startIndex) {}

 protected:
  void Run(const RunControl& control) override {
    selected_.resize(count_);
    if (projectionDims_ == 0) {
      cuda::greedyCoresetCuda(features_, rows_, dims_, count_, startIndex_, selected_.data(), control);
      return;
    }
#if IMIAD_HAVE_PROJECTION
    std::vector<float> projected(rows_ * projectionDims_);
    projectFeatures(features_, rows_, dims_, projectionDims_, seed_, projected.data(), control);
    cuda::greedyCoresetCuda(projected.data(), rows_, projectionDims_, count_, startIndex_, selected_.data(), control);
#else
    (void)seed_;
    throw std::runtime_error("This CUDA addon was built without native/coreset.h, so it cannot project features");
#endif
  }

  Napi::Value Result(Napi::Env env) override {
    return VectorToTypedArray<uint32_t, Napi::Uint32Array>(env, selected_);
  }

 private:
  const float* features_;
  size_t rows_, dims_, count_, projectionDims_;
  uint64_t seed_;
  size_t startIndex_;
  std::vector<uint32_t> selected_;
};

Napi::Value GreedyCoreset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32 features = Float32Arg(info, 0, "features");
  const uint32_t dims = UInt32Arg(info, 1, "dims", 1, 1u << 20);
  const size_t rows = RowsOf(env, features, dims, "features");
  const uint32_t rowLimit = static_cast<uint32_t>(std::min<size_t>(rows, 0xfffffffeu));
  const uint32_t count = UInt32Arg(info, 2, "count", 1, rowLimit);
  const uint32_t projectionDims = UInt32Arg(info, 3, "projectionDims", 0, 1u << 20);
  const double seed = NumberArg(info, 4, "seed");
  if (!std::isfinite(seed) || std::floor(seed) != seed || seed < 0 || seed > 9007199254740991.0) {
    ThrowRange(env, "ERR_IMIAD_RANGE", "Expected integer between 0 and 9007199254740991 for seed");
  }
  const uint32_t startIndex = UInt32Arg(info, 5, "startIndex", 0, rowLimit - 1);
  Napi::Value cancelKeep;
  const int32_t* cancelFlag = CancelFlagArg(info, 6, &cancelKeep);
  auto* worker = new CoresetWorker(env, features.data, rows, dims, count, projectionDims,
                                   static_cast<uint64_t>(seed), startIndex);
  worker->Keep(features.array);
  worker->SetCancelFlag(cancelFlag, cancelKeep);
  if (info.Length() > 7 && info[7].IsFunction()) worker->SetProgressCallback(info[7].As<Napi::Function>());
  return worker->Launch();
}

}  // namespace

void RegisterCudaCoreset(Napi::Env env, Napi::Object exports) {
  exports.Set("greedyCoreset", Napi::Function::New(env, GreedyCoreset, "greedyCoreset"));
}

}  // namespace glue
}  // namespace imiad
