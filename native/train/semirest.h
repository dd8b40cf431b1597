// SemiREST (native/train/semirest.cc): a sliding-window transformer with a per-block classifier over the
// position-constrained patch-matching residuals that lib/methods/semirest.ts computes.
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "semirest" (ModelConfig::kind); throws InvalidArgument for a bad configuration. The caller holds the seed lock.
std::unique_ptr<Model> CreateSemiRestModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
