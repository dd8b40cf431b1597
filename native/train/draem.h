// DRAEM (native/train/draem.cc): a reconstructive auto-encoder and a discriminative U-Net trained from scratch on
// images with synthetic anomalies (lib/synthesis makes them; the engine only sees the batches).
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "draem" (ModelConfig::kind); throws InvalidArgument for a bad configuration. The caller holds the seed lock.
std::unique_ptr<Model> CreateDraemModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
