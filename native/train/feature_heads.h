// Trained heads on frozen features that are not flows: CFA (feature_heads.cc).
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "cfa" (ModelConfig::kind); throws InvalidArgument for a bad configuration.
std::unique_ptr<Model> CreateFeatureHeadModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
