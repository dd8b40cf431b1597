// N-API glue of the k-NN family: the KnnIndex class (the bank is read in place and packed on the first search, on a
// worker thread) and the plain reference loop knnSearchPlain. Only argument guards and KernelWorker starts here;
// the kernels are native/knn.{h,cc}. The CUDA addon exports the same shape.
#include <napi.h>

#include <memory>
#include <vector>

#include "exports.h"
#include "glue.h"
#include "knn.h"

namespace imiad {
namespace glue {
namespace {

constexpr uint32_t kMaxDims = 1u << 20;

struct Neighbours {
  std::vector<int32_t> indices;
  std::vector<float> distances;

  Napi::Value ToObject(Napi::Env env) {
    Napi::Object out = Napi::Object::New(env);
    out.Set("indices", VectorToTypedArray<int32_t, Napi::Int32Array>(env, indices));
    out.Set("distances", VectorToTypedArray<float, Napi::Float32Array>(env, distances));
    return out;
  }
};

class KnnSearchWorker : public KernelWorker {
 public:
  KnnSearchWorker(Napi::Env env, std::shared_ptr<const KnnFlatIndex> index, const float* queries, size_t nq, size_t k)
      : KernelWorker(env, "imiad.knn.search"), index_(std::move(index)), queries_(queries), nq_(nq), k_(k) {}

 protected:
  void Run(const RunControl& control) override {
    result_.indices.resize(nq_ * k_);
    result_.distances.resize(nq_ * k_);
    index_->search(queries_, nq_, k_, result_.indices.data(), result_.distances.data(), control);
  }
  Napi::Value Result(Napi::Env env) override { return result_.ToObject(env); }

 private:
  std::shared_ptr<const KnnFlatIndex> index_;
  const float* queries_;
  size_t nq_, k_;
  Neighbours result_;
};

class KnnPlainWorker : public KernelWorker {
 public:
  KnnPlainWorker(Napi::Env env, const float* bank, size_t rows, const float* queries, size_t nq, size_t dims,
                 size_t k)
      : KernelWorker(env, "imiad.knn.plain"), bank_(bank), queries_(queries), rows_(rows), nq_(nq), dims_(dims),
        k_(k) {}

 protected:
  void Run(const RunControl& control) override {
    result_.indices.resize(nq_ * k_);
    result_.distances.resize(nq_ * k_);
    knnSearchPlain(bank_, rows_, queries_, nq_, dims_, k_, result_.indices.data(), result_.distances.data(), control);
  }
  Napi::Value Result(Napi::Env env) override { return result_.ToObject(env); }

 private:
  const float* bank_;
  const float* queries_;
  size_t rows_, nq_, dims_, k_;
  Neighbours result_;
};

size_t BankRows(Napi::Env env, const F32& bank, uint32_t dims) {
  const size_t rows = RowsOf(env, bank, dims, "bank", 1);
  if (rows > static_cast<size_t>(INT32_MAX)) {
    ThrowRange(env, "ERR_IMIAD_RANGE", "Expected at most 2147483647 rows in bank");
  }
  return rows;
}

// new KnnIndex(bank: Float32Array, dims: number); search(queries, k, cancelFlag?) -> Promise<{indices, distances}>.
class KnnIndexWrap : public Napi::ObjectWrap<KnnIndexWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "KnnIndex",
                       {InstanceAccessor<&KnnIndexWrap::Rows>("rows"), InstanceAccessor<&KnnIndexWrap::Dims>("dims"),
                        InstanceAccessor<&KnnIndexWrap::StateBytes>("stateBytes"),
                        InstanceMethod<&KnnIndexWrap::Search>("search")});
  }

  explicit KnnIndexWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KnnIndexWrap>(info) {
    Napi::Env env = info.Env();
    const F32 bank = Float32Arg(info, 0, "bank");
    const uint32_t dims = UInt32Arg(info, 1, "dims", 1, kMaxDims);
    const size_t rows = BankRows(env, bank, dims);
    bank_ = Napi::Persistent(bank.array);
    bankData_ = bank.data;
    bankLength_ = bank.length;
    index_ = std::make_shared<KnnFlatIndex>(bank.data, rows, dims);
  }

 private:
  Napi::Value Rows(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->rows()));
  }
  Napi::Value Dims(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->dims()));
  }
  Napi::Value StateBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->stateBytes()));
  }

  Napi::Value Search(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // A bank whose ArrayBuffer was transferred away (postMessage) must not be read through the old pointer.
    Napi::TypedArrayOf<float> bank = bank_.Value();
    if (bank.ElementLength() != bankLength_ || bank.Data() != bankData_) {
      ThrowType(env, "ERR_IMIAD_ARGUMENT", "Expected the bank's ArrayBuffer to stay attached while the index exists");
    }
    const F32 queries = Float32Arg(info, 0, "queries");
    const uint32_t dims = static_cast<uint32_t>(index_->dims());
    const size_t nq = RowsOf(env, queries, dims, "queries", 1);
    const uint32_t k = UInt32Arg(info, 1, "k", 1, static_cast<uint32_t>(index_->rows()));
    Napi::Value keepFlag;
    const int32_t* cancelFlag = CancelFlagArg(info, 2, &keepFlag);
    auto* worker = new KnnSearchWorker(env, index_, queries.data, nq, k);
    worker->Keep(queries.array);
    worker->Keep(bank);
    worker->Keep(info.This());
    worker->SetCancelFlag(cancelFlag, keepFlag);
    return worker->Launch();
  }

  Napi::Reference<Napi::TypedArrayOf<float>> bank_;
  const float* bankData_ = nullptr;
  size_t bankLength_ = 0;
  std::shared_ptr<const KnnFlatIndex> index_;
};

// knnSearchPlain(bank, queries, dims, k, cancelFlag?) -> Promise<{indices, distances}>: the reference loop.
Napi::Value KnnSearchPlain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const F32 bank = Float32Arg(info, 0, "bank");
  const F32 queries = Float32Arg(info, 1, "queries");
  const uint32_t dims = UInt32Arg(info, 2, "dims", 1, kMaxDims);
  const size_t rows = BankRows(env, bank, dims);
  const size_t nq = RowsOf(env, queries, dims, "queries", 1);
  const uint32_t k = UInt32Arg(info, 3, "k", 1, static_cast<uint32_t>(rows));
  Napi::Value keepFlag;
  const int32_t* cancelFlag = CancelFlagArg(info, 4, &keepFlag);
  auto* worker = new KnnPlainWorker(env, bank.data, rows, queries.data, nq, dims, k);
  worker->Keep(bank.array);
  worker->Keep(queries.array);
  worker->SetCancelFlag(cancelFlag, keepFlag);
  return worker->Launch();
}

}  // namespace

void RegisterKnn(Napi::Env env, Napi::Object exports) {
  exports.Set("KnnIndex", KnnIndexWrap::Define(env));
  exports.Set("knnSearchPlain", Napi::Function::New(env, KnnSearchPlain, "knnSearchPlain"));
  // Which micro-kernel this CPU runs ("avx512", "avx2" or "portable"), for benchmarks and bug reports.
  exports.Set("knnKernel", Napi::String::New(env, knnIsaName(knnBestIsa())));
}

}  // namespace glue
}  // namespace imiad
