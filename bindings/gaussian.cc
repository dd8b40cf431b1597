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

// Running statistics (gaussianAccumulate): updated in place; the worker keeps the arrays referenced.
class AccumulateWorker : public KernelWorker {
 public:
  AccumulateWorker(Napi::Env env, const float* embeddings, size_t n, size_t channels, size_t positions, size_t count,
                   double* mean, double* scatter)
      : KernelWorker(env, "imiad.gaussianAccumulate"),
        embeddings_(embeddings),
        n_(n),
        channels_(channels),
        positions_(positions),
        count_(count),
        mean_(mean),
        scatter_(scatter) {}

 protected:
  void Run(const RunControl& control) override {
    gaussianAccumulate(embeddings_, n_, channels_, positions_, count_, mean_, scatter_, control);
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  const float* embeddings_;
  size_t n_, channels_, positions_, count_;
  double* mean_;
  double* scatter_;
};

class FactorWorker : public KernelWorker {
 public:
  FactorWorker(Napi::Env env, size_t count, const double* mean, const double* scatter, size_t channels, size_t positions,
               double regularization, Napi::Float32Array meanOut, Napi::Float32Array cholesky)
      : KernelWorker(env, "imiad.gaussianFactor"),
        count_(count),
        mean_(mean),
        scatter_(scatter),
        channels_(channels),
        positions_(positions),
        regularization_(regularization),
        meanData_(meanOut.Data()),
        choleskyData_(cholesky.Data()),
        meanOut_(Napi::Persistent(meanOut)),
        cholesky_(Napi::Persistent(cholesky)) {}

 protected:
  void Run(const RunControl& control) override {
    gaussianFactor(count_, mean_, scatter_, channels_, positions_, regularization_, meanData_, choleskyData_, control);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("mean", meanOut_.Value());
    out.Set("cholesky", cholesky_.Value());
    return out;
  }

 private:
  size_t count_;
  const double* mean_;
  const double* scatter_;
  size_t channels_, positions_;
  double regularization_;
  float* meanData_;
  float* choleskyData_;
  Napi::Reference<Napi::Float32Array> meanOut_, cholesky_;
};

// A Float64Array argument of exactly `length` elements, read (or updated) in place.
Napi::TypedArrayOf<double> Float64Arg(const Napi::CallbackInfo& info, size_t index, const char* name, double length) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsTypedArray() ||
      info[index].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", std::string("Expected Float64Array for ") + name);
  }
  auto a = info[index].As<Napi::TypedArrayOf<double>>();
  if (static_cast<double>(a.ElementLength()) != length) {
    ThrowRange(env, "ERR_IMIAD_DIMS", std::string("Expected length of ") + name + " to match channels and positions");
  }
  return a;
}

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

// (embeddings, n, channels, positions, count, mean64, scatter64, cancel, onProgress): mean64 and scatter64 updated
Napi::Value GaussianAccumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 emb = Float32Arg(info, 0, "embeddings");
  const uint32_t n = UInt32Arg(info, 1, "n", 1, UINT32_MAX);
  const uint32_t channels = UInt32Arg(info, 2, "channels", 1, 1u << 16);
  const uint32_t positions = UInt32Arg(info, 3, "positions", 1, UINT32_MAX);
  const uint32_t count = UInt32Arg(info, 4, "count", 0, UINT32_MAX);
  if (static_cast<double>(emb.length) != static_cast<double>(n) * channels * positions) {
    ThrowRange(env, "ERR_IMIAD_DIMS", "Expected length of embeddings to be n * channels * positions");
  }
  auto mean = Float64Arg(info, 5, "mean", static_cast<double>(positions) * channels);
  auto scatter = Float64Arg(info, 6, "scatter", static_cast<double>(positions) * packedTriangleSize(channels));
  auto* worker = new AccumulateWorker(env, emb.data, n, channels, positions, count, mean.Data(), scatter.Data());
  worker->Keep(emb.array);
  worker->Keep(mean);
  worker->Keep(scatter);
  Wire(worker, info, 7);
  return worker->Launch();
}

// (count, mean64, scatter64, channels, positions, regularization, cancel, onProgress) -> { mean, cholesky }
Napi::Value GaussianFactor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t count = UInt32Arg(info, 0, "count", 1, UINT32_MAX);
  const uint32_t channels = UInt32Arg(info, 3, "channels", 1, 1u << 16);
  const uint32_t positions = UInt32Arg(info, 4, "positions", 1, UINT32_MAX);
  auto mean = Float64Arg(info, 1, "mean", static_cast<double>(positions) * channels);
  auto scatter = Float64Arg(info, 2, "scatter", static_cast<double>(positions) * packedTriangleSize(channels));
  const double regularization = NumberArg(info, 5, "regularization");
  if (!(regularization >= 0.0) || !std::isfinite(regularization)) {
    ThrowRange(env, "ERR_IMIAD_RANGE", "Expected a finite regularization >= 0");
  }
  Napi::Float32Array meanOut = Allocate(env, static_cast<double>(positions) * channels, "mean");
  Napi::Float32Array chol = Allocate(env, static_cast<double>(positions) * packedTriangleSize(channels), "Cholesky factors");
  auto* worker = new FactorWorker(env, count, mean.Data(), scatter.Data(), channels, positions, regularization, meanOut, chol);
  worker->Keep(mean);
  worker->Keep(scatter);
  Wire(worker, info, 6);
  return worker->Launch();
}

}  // namespace

void RegisterGaussian(Napi::Env env, Napi::Object exports) {
  exports.Set("gaussianFit", Napi::Function::New(env, GaussianFit, "gaussianFit"));
  exports.Set("mahalanobisDistances", Napi::Function::New(env, MahalanobisDistances, "mahalanobisDistances"));
  exports.Set("gaussianAccumulate", Napi::Function::New(env, GaussianAccumulate, "gaussianAccumulate"));
  exports.Set("gaussianFactor", Napi::Function::New(env, GaussianFactor, "gaussianFactor"));
}

}  // namespace glue
}  // namespace imiad
