// Shared N-API glue: cheap argument guards that throw TypeError/RangeError with a stable `code`, and the one
// AsyncWorker base every kernel runs on. Full validation with the project's message format happens first in
// TypeScript (bindings/validate.ts); these guards only make sure a bad call can never touch memory it should not.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "control.h"

namespace imiad {
namespace glue {

inline Napi::Error WithCode(Napi::Error error, const std::string& code) {
  error.Value().Set("code", Napi::String::New(error.Env(), code));
  return error;
}

[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& code, const std::string& message) {
  throw WithCode(Napi::TypeError::New(env, message), code);
}

[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string& code, const std::string& message) {
  throw WithCode(Napi::RangeError::New(env, message), code);
}

// A Float32Array argument read in place (no copy). The glue keeps the array referenced while a worker reads it.
struct F32 {
  Napi::TypedArrayOf<float> array;
  const float* data = nullptr;
  size_t length = 0;
};

inline F32 Float32Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsTypedArray() ||
      info[index].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", std::string("Expected Float32Array for ") + name);
  }
  F32 out;
  out.array = info[index].As<Napi::TypedArrayOf<float>>();
  out.data = out.array.Data();
  out.length = out.array.ElementLength();
  return out;
}

inline uint32_t UInt32Arg(const Napi::CallbackInfo& info, size_t index, const char* name, uint32_t min,
                          uint32_t max) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsNumber()) {
    ThrowType(env, "ERR_IMIAD_ARGUMENT", std::string("Expected integer for ") + name);
  }
  const double v = info[index].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::floor(v) != v || v < min || v > max) {
    ThrowRange(env, "ERR_IMIAD_RANGE",
               std::string("Expected integer between ") + std::to_string(min) + " and " + std::to_string(max) +
                   " for " + name);
  }
  return static_cast<uint32_t>(v);
}

inline double NumberArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || !info[index].IsNumber()) {
    ThrowType(info.Env(), "ERR_IMIAD_ARGUMENT", std::string("Expected number for ") + name);
  }
  return info[index].As<Napi::Number>().DoubleValue();
}

// An optional Int32Array(1) cancel flag (set by JavaScript from an AbortSignal); undefined/null means none.
inline const int32_t* CancelFlagArg(const Napi::CallbackInfo& info, size_t index, Napi::Value* keep) {
  if (info.Length() <= index || info[index].IsUndefined() || info[index].IsNull()) return nullptr;
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[index].As<Napi::TypedArray>().ElementLength() < 1) {
    ThrowType(info.Env(), "ERR_IMIAD_ARGUMENT", "Expected Int32Array of length 1 for cancel flag");
  }
  *keep = info[index];
  return info[index].As<Napi::TypedArrayOf<int32_t>>().Data();
}

// Checks that a flat row-major matrix has length rows * dims with rows >= minRows.
inline size_t RowsOf(Napi::Env env, const F32& m, uint32_t dims, const char* name, size_t minRows = 1) {
  if (dims == 0 || m.length % dims != 0) {
    ThrowRange(env, "ERR_IMIAD_DIMS", std::string("Expected length of ") + name + " to be a multiple of dims (" +
                                          std::to_string(dims) + ") but received " + std::to_string(m.length));
  }
  const size_t rows = m.length / dims;
  if (rows < minRows) {
    ThrowRange(env, "ERR_IMIAD_EMPTY", std::string("Expected at least ") + std::to_string(minRows) + " row(s) in " +
                                           name);
  }
  return rows;
}

struct ProgressEvent {
  uint64_t done;
  uint64_t total;
};

// Base for every kernel call: returns a Promise, runs Run() on a libuv worker thread (no N-API calls there),
// keeps its input arrays referenced, reports progress to an optional callback, and turns C++ exceptions into JS
// errors with a stable code: InvalidArgument -> RangeError, Cancelled -> AbortError, bad_alloc ->
// ERR_IMIAD_OUT_OF_MEMORY, anything else -> Error with ERR_IMIAD_NATIVE.
class KernelWorker : public Napi::AsyncProgressQueueWorker<ProgressEvent> {
 public:
  KernelWorker(Napi::Env env, const char* name)
      : Napi::AsyncProgressQueueWorker<ProgressEvent>(env, name),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  // Keeps a JS value (an input typed array) alive while the worker runs.
  void Keep(Napi::Value value) { kept_.push_back(Napi::Persistent(value)); }

  void SetCancelFlag(const int32_t* flag) { control_.cancelFlag = flag; }

  // The cancel flag as CancelFlagArg returned it (none when null), its Int32Array kept alive while the worker runs.
  void SetCancelFlag(const int32_t* flag, Napi::Value flagArray) {
    if (flag == nullptr) return;
    Keep(flagArray);
    control_.cancelFlag = flag;
  }

  // Queues the worker; returns the promise its Result() (or its error) settles.
  Napi::Promise Launch() {
    Napi::Promise promise = Promise();
    Queue();
    return promise;
  }

  void SetProgressCallback(Napi::Function fn) {
    if (!fn.IsEmpty()) progressCallback_ = Napi::Persistent(fn);
  }

 protected:
  virtual void Run(const RunControl& control) = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

  void Execute(const ExecutionProgress& progress) override {
    RunControl control = control_;
    uint64_t lastPercent = UINT64_MAX;
    if (!progressCallback_.IsEmpty()) {
      control.progress = [&progress, &lastPercent](uint64_t done, uint64_t total) {
        const uint64_t percent = total == 0 ? 100 : (done * 100) / total;
        if (percent == lastPercent && done != total) return;  // at most ~100 events per call
        lastPercent = percent;
        ProgressEvent event{done, total};
        progress.Send(&event, 1);
      };
    }
    try {
      Run(control);
    } catch (const Cancelled& e) {
      Fail("AbortError", "ABORT_ERR", e.what());
    } catch (const InvalidArgument& e) {
      Fail("RangeError", e.code, e.what());
    } catch (const std::bad_alloc&) {
      Fail("Error", "ERR_IMIAD_OUT_OF_MEMORY", "Not enough memory for this operation");
    } catch (const std::exception& e) {
      Fail("Error", "ERR_IMIAD_NATIVE", e.what());
    } catch (...) {
      Fail("Error", "ERR_IMIAD_NATIVE", "Unknown native error");
    }
  }

  void OnProgress(const ProgressEvent* events, size_t count) override {
    if (progressCallback_.IsEmpty() || count == 0) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    const ProgressEvent& last = events[count - 1];
    progressCallback_.Call({Napi::Number::New(env, static_cast<double>(last.done)),
                            Napi::Number::New(env, static_cast<double>(last.total))});
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!failKind_.empty()) {
      Napi::Error error = failKind_ == "RangeError" ? Napi::RangeError::New(env, failMessage_)
                          : failKind_ == "TypeError" ? Napi::TypeError::New(env, failMessage_)
                                                     : Napi::Error::New(env, failMessage_);
      error.Value().Set("code", Napi::String::New(env, failCode_));
      if (failKind_ == "AbortError") error.Value().Set("name", Napi::String::New(env, "AbortError"));
      deferred_.Reject(error.Value());
      return;
    }
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  void Fail(const char* kind, const std::string& code, const std::string& message) {
    failKind_ = kind;
    failCode_ = code;
    failMessage_ = message;
  }

  Napi::Promise::Deferred deferred_;
  Napi::FunctionReference progressCallback_;
  RunControl control_;
  std::vector<Napi::Reference<Napi::Value>> kept_;
  std::string failKind_, failCode_, failMessage_;
};

// Creates an output Float32Array / typed array from a vector without an extra copy on the JS side.
template <typename T, typename ArrayT>
inline ArrayT VectorToTypedArray(Napi::Env env, std::vector<T>& values) {
  ArrayT out = ArrayT::New(env, values.size());
  if (!values.empty()) std::copy(values.begin(), values.end(), out.Data());
  return out;
}

}  // namespace glue
}  // namespace imiad
