// Glue of the GPU k-NN: the raw KnnIndex class with the CPU addon's interface — new KnnIndex(bank, dims),
// rows/dims/stateBytes getters, search(queries, k, cancelFlag) -> Promise<{ indices, distances }>. The device
// memory for the bank is reserved here (a bank that does not fit is a RangeError naming the bytes it needs); the
// upload happens in the first search's worker so the constructor stays cheap.
#include <napi.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "glue.h"
#include "knn_cuda.h"

namespace imiad {
namespace glue {

namespace {

class CudaKnnIndex : public Napi::ObjectWrap<CudaKnnIndex> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "KnnIndex",
                       {InstanceAccessor<&CudaKnnIndex::Rows>("rows"), InstanceAccessor<&CudaKnnIndex::Dims>("dims"),
                        InstanceAccessor<&CudaKnnIndex::StateBytes>("stateBytes"),
                        InstanceMethod<&CudaKnnIndex::Search>("search")});
  }

  explicit CudaKnnIndex(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CudaKnnIndex>(info) {
    Napi::Env env = info.Env();
    F32 bank = Float32Arg(info, 0, "bank");
    const uint32_t dims = UInt32Arg(info, 1, "dims", 1, 1u << 20);
    const size_t rows = RowsOf(env, bank, dims, "bank");
    try {
      index_ = std::make_unique<cuda::KnnBank>(rows, dims);
    } catch (const InvalidArgument& e) {
      ThrowRange(env, e.code, e.what());
    } catch (const std::exception& e) {
      throw WithCode(Napi::Error::New(env, e.what()), "ERR_IMIAD_NATIVE");
    }
    // The host bank is read by the first search (the upload); keeping it referenced keeps it valid until then.
    bank_ = Napi::Persistent(bank.array.As<Napi::Value>());
    bankData_ = bank.data;
  }

  cuda::KnnBank& index() { return *index_; }
  const float* bankData() const { return bankData_; }
  Napi::Value BankValue() { return bank_.Value(); }

 private:
  Napi::Value Rows(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->rows()));
  }
  Napi::Value Dims(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->dims()));
  }
  Napi::Value StateBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->deviceBytes()));
  }
  Napi::Value Search(const Napi::CallbackInfo& info);

  std::unique_ptr<cuda::KnnBank> index_;
  Napi::Reference<Napi::Value> bank_;
  const float* bankData_ = nullptr;
};

class SearchWorker : public KernelWorker {
 public:
  SearchWorker(Napi::Env env, CudaKnnIndex* index, const float* queries, size_t queryRows, size_t k)
      : KernelWorker(env, "imiad.cuda.knnSearch"), index_(index), queries_(queries), queryRows_(queryRows), k_(k) {}

 protected:
  void Run(const RunControl& control) override {
    indices_.resize(queryRows_ * k_);
    distances_.resize(queryRows_ * k_);
    index_->index().search(index_->bankData(), queries_, queryRows_, k_, indices_.data(), distances_.data(), control);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("indices", VectorToTypedArray<int32_t, Napi::Int32Array>(env, indices_));
    out.Set("distances", VectorToTypedArray<float, Napi::Float32Array>(env, distances_));
    return out;
  }

 private:
  CudaKnnIndex* index_;
  const float* queries_;
  size_t queryRows_;
  size_t k_;
  std::vector<int32_t> indices_;
  std::vector<float> distances_;
};

Napi::Value CudaKnnIndex::Search(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32 queries = Float32Arg(info, 0, "queries");
  const size_t queryRows = RowsOf(env, queries, static_cast<uint32_t>(index_->dims()), "queries");
  const uint32_t maxK = static_cast<uint32_t>(std::min<size_t>(index_->rows(), cuda::KnnBank::kMaxK));
  const uint32_t k = UInt32Arg(info, 1, "k", 1, maxK);
  Napi::Value cancelKeep;
  const int32_t* cancelFlag = CancelFlagArg(info, 2, &cancelKeep);
  auto* worker = new SearchWorker(env, this, queries.data, queryRows, k);
  worker->Keep(queries.array);
  worker->Keep(Value());  // the index (and through it the bank) outlives the search
  worker->SetCancelFlag(cancelFlag, cancelKeep);
  return worker->Launch();
}

}  // namespace

void RegisterCudaKnn(Napi::Env env, Napi::Object exports) { exports.Set("KnnIndex", CudaKnnIndex::Define(env)); }

}  // namespace glue
}  // namespace imiad
