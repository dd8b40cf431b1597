// DRA (dra.cc): DevNet's fine-tuned ResNet-18 with four scoring heads (devnet.h holds what the two share).
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "dra" (ModelConfig::kind); throws InvalidArgument for a bad configuration. The caller holds the seed lock.
std::unique_ptr<Model> CreateDraModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
