// One Register<Family> per kernel family's glue file; RegisterFamilies calls them all.
#pragma once

#include <napi.h>

namespace imiad {
namespace glue {

void RegisterCoreset(Napi::Env env, Napi::Object exports);
void RegisterKnn(Napi::Env env, Napi::Object exports);
void RegisterFilters(Napi::Env env, Napi::Object exports);
void RegisterGaussian(Napi::Env env, Napi::Object exports);
void RegisterMetrics(Napi::Env env, Napi::Object exports);

inline void RegisterFamilies(Napi::Env env, Napi::Object exports) {
  RegisterCoreset(env, exports);
  RegisterKnn(env, exports);
  RegisterFilters(env, exports);
  RegisterGaussian(env, exports);
  RegisterMetrics(env, exports);
}

}  // namespace glue
}  // namespace imiad
