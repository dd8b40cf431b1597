// The CUDA addon's entry point (build-cuda/Release/imiad_cuda.node, built only with -DIMIAD_CUDA=ON). It exports
// the same raw functions as the CPU addon's k-NN and coreset families (KnnIndex, greedyCoreset), with the same
// arguments, so the TypeScript wrappers call either addon alike, plus deviceInfo() for bindings/device.ts's
// test-load. Loaded by explicit path only after that check passes; never placed beside the CPU addon.
#include <napi.h>

#include "cuda_device.h"
#include "glue.h"

namespace imiad {
namespace glue {
void RegisterCudaKnn(Napi::Env env, Napi::Object exports);
void RegisterCudaCoreset(Napi::Env env, Napi::Object exports);
}  // namespace glue
}  // namespace imiad

namespace {

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const imiad::cuda::DeviceInfo d = imiad::cuda::deviceInfo();
  Napi::Object out = Napi::Object::New(env);
  out.Set("available", Napi::Boolean::New(env, d.available));
  out.Set("reason", Napi::String::New(env, d.reason));
  out.Set("deviceCount", Napi::Number::New(env, d.deviceCount));
  out.Set("name", Napi::String::New(env, d.name));
  out.Set("computeCapability",
          Napi::String::New(env, std::to_string(d.computeMajor) + "." + std::to_string(d.computeMinor)));
  out.Set("multiprocessors", Napi::Number::New(env, d.multiprocessors));
  out.Set("totalMemory", Napi::Number::New(env, static_cast<double>(d.totalMemory)));
  out.Set("freeMemory", Napi::Number::New(env, static_cast<double>(d.freeMemory)));
  out.Set("driverVersion", Napi::Number::New(env, d.driverVersion));
  out.Set("runtimeVersion", Napi::Number::New(env, d.runtimeVersion));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backend", Napi::String::New(env, "cuda"));
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo, "deviceInfo"));
  imiad::glue::RegisterCudaKnn(env, exports);
  imiad::glue::RegisterCudaCoreset(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(imiad_cuda, Init)
