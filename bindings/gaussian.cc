// Glue of PaDiM's Gaussian statistics (native/gaussian.h): checks arguments, allocates the state arrays on the JS
// thread (a state too large for memory fails here, as a RangeError, not in the worker) and fills them in a worker.
#include <string>

#include "exports.h"
#include "gaussian.h"
#include "glue.h"

namespace imiad {
namespace glue {

namespace {

class FitWorker : public KernelWorker {
 public:
  FitWorker(Napi::Env env, F32 embeddings, size_t n, size_t channels, size_t positions, double regularization,
            Napi::Float32Array mean, Napi::Float32Array cholesky)
      : KernelWorker(env, "imiad.gaussianFit"),
        embeddings_(embeddings.data),
        n_(n),
        channels_(channels),
        positions_(positions),
        regularization_(regularization),
        meanData_(mean.Data()),
        choleskyData_(cholesky.Data()),
        mean_(Napi::Persistent(mean)),
        cholesky_(Napi::Persistent(cholesky)) {}

 protected:
  void Run(const RunControl& control) override {
    gaussianFit(embeddings_, n_, channels_, positions_, regularization_, meanData_, choleskyData_, control);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("mean", mean_.Value());
    out.Set("cholesky", cholesky_.Value());
    return out;
  }

 private:
  const float* embeddings_;
  size_t n_, channels_, positions_;
  double regularization_;
  float* meanData_;
  float* choleskyData_;
  Napi::Reference<Napi::Float32Array> mean_, cholesky_;
};

class DistanceWorker : public KernelWorker {
 public:
  DistanceWorker(Napi::Env env, const float* embeddings, size_t m, size_t channels, size_t positions,
                 const float* mean, const float* cholesky, Napi::Float32Array out)
      : KernelWorker(env, "imiad.mahalanobisDistances"),
        embeddings_(embeddings),
        m_(m),
        channels_(channels),
        positions_(positions),
        mean_(mean),
        cholesky_(cholesky),
        outData_(out.Data()),
        out_(Napi::Persistent(out)) {}

 protected:
  void Run(const RunControl& control) override {
    mahalanobisDistances(embeddings_, m_, channels_, positions_, mean_, cholesky_, outData_, control);
  }
  Napi::Value Result(Napi::Env) override { return out_.Value(); }

 private:
  const float* embeddings_;
  size_t m_, channels_, positions_;
  const float* mean_;
  const float* cholesky_;
  float* outData_;
  Napi::Reference<Napi::Float32Array> out_;
};

Napi::Float32Array Allocate(Napi::Env env, double length, const char* what) {
  if (length > 4294967295.0) {
    ThrowRange(env, "ERR_IMIAD_MEMORY", std::string("The ") + what + " would exceed 2^32 - 1 float32 elements");
  }
  return Napi::Float32Array::New(env, static_cast<size_t>(length));
}

void Wire(KernelWorker* worker, const Napi::CallbackInfo& info, size_t cancelIndex) {
  Napi::Value cancelKeep;
  const int32_t* cancel = CancelFlagArg(info, cancelIndex, &cancelKeep);
  worker->SetCancelFlag(cancel, cancelKeep);
  if (info.Length() > cancelIndex + 1 && info[cancelIndex + 1].IsFunction()) {
    worker->SetProgressCallback(info[cancelIndex + 1].As<Napi::Function>());
  }
}

// (embeddings, n, channels, positions, regularization, cancel, onProgress)
Napi::Value GaussianFit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 emb = Float32Arg(info, 0, "embeddings");
  const uint32_t n = UInt32Arg(info, 1, "n", 1, UINT32_MAX);
  const uint32_t channels = UInt32Arg(info, 2, "channels", 1, 1u << 16);
  const uint32_t positions = UInt32Arg(info, 3, "positions", 1, UINT32_MAX);
  const double regularization = NumberArg(info, 4, "regularization");
  if (!(regularization >= 0.0) || !std::isfinite(regularization)) {
    ThrowRange(env, "ERR_IMIAD_RANGE", "Expected a finite regularization >= 0");
  }
  if (static_cast<double>(emb.length) != static_cast<double>(n) * channels * positions) {
    ThrowRange(env, "ERR_IMIAD_DIMS", "Expected length of embeddings to be n * channels * positions");
  }
  Napi::Float32Array mean = Allocate(env, static_cast<double>(positions) * channels, "mean");
  Napi::Float32Array chol = Allocate(env, static_cast<double>(positions) * packedTriangleSize(channels), "Cholesky factors");
  auto* worker = new FitWorker(env, emb, n, channels, positions, regularization, mean, chol);
  worker->Keep(emb.array);
  Wire(worker, info, 5);
  return worker->Launch();
}

// (embeddings, m, channels, positions, mean, cholesky, cancel, onProgress)
Napi::Value MahalanobisDistances(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 emb = Float32Arg(info, 0, "embeddings");
  const uint32_t m = UInt32Arg(info, 1, "m", 1, UINT32_MAX);
  const uint32_t channels = UInt32Arg(info, 2, "channels", 1, 1u << 16);
  const uint32_t positions = UInt32Arg(info, 3, "positions", 1, UINT32_MAX);
  const F32 mean = Float32Arg(info, 4, "mean");
  const F32 chol = Float32Arg(info, 5, "cholesky");
  if (static_cast<double>(emb.length) != static_cast<double>(m) * channels * positions ||
      static_cast<double>(mean.length) != static_cast<double>(positions) * channels ||
      static_cast<double>(chol.length) != static_cast<double>(positions) * packedTriangleSize(channels)) {
    ThrowRange(env, "ERR_IMIAD_DIMS", "Expected embeddings, mean and cholesky to match m, channels and positions");
  }
  Napi::Float32Array out = Allocate(env, static_cast<double>(m) * positions, "distance map");
  auto* worker = new DistanceWorker(env, emb.data, m, channels, positions, mean.data, chol.data, out);
  worker->Keep(emb.array);
  worker->Keep(mean.array);
  worker->Keep(chol.array);
  Wire(worker, info, 6);
  return worker->Launch();
}

}  // namespace

void RegisterGaussian(Napi::Env env, Napi::Object exports) {
  exports.Set("gaussianFit", Napi::Function::New(env, GaussianFit, "gaussianFit"));
  exports.Set("mahalanobisDistances", Napi::Function::New(env, MahalanobisDistances, "mahalanobisDistances"));
}

}  // namespace glue
}  // namespace imiad
