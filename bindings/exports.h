// One Register<Family> per kernel family's glue file; RegisterFamilies calls them all.
#pragma once

#include <napi.h>

namespace imiad {
namespace glue {

void RegisterFilters(Napi::Env env, Napi::Object exports);
void RegisterGaussian(Napi::Env env, Napi::Object exports);
void RegisterMetrics(Napi::Env env, Napi::Object exports);

inline void RegisterFamilies(Napi::Env env, Napi::Object exports) {
  RegisterFilters(env, exports);
  RegisterGaussian(env, exports);
  RegisterMetrics(env, exports);
}

}  // namespace glue
}  // namespace imiad
