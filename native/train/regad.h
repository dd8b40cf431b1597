// RegAD (registration-based few-shot anomaly detection): native/train/regad.cc.
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "regad" (ModelConfig::kind); throws InvalidArgument for a bad configuration.
std::unique_ptr<Model> CreateRegadModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
