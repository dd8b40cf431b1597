// The CPU addon's entry point: registers each kernel family's exports. Each family's glue lives in its own file
// (bindings/<family>.cc) and only converts arguments and starts a KernelWorker; the kernels are in native/.
#include <napi.h>

#include "exports.h"
#include "glue.h"
#include "parallel.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("threadCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), imiad::threadCount());
              }));
  exports.Set("backend", Napi::String::New(env, "cpu"));
  imiad::glue::RegisterFamilies(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(imiad, Init)
