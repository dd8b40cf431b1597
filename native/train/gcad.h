// GCAD, the MVTec LOCO AD baseline (Bergmann et al., "Beyond Dents and Scratches: Logical Constraints in Unsupervised
// Anomaly Detection and Localization", IJCV 130:947-969, 2022, section 5), re-implemented from the paper's text: no
// official code exists (native/train/gcad.cc lists every choice the paper leaves open).
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "gcad" (ModelConfig::kind); throws InvalidArgument for a bad configuration. The caller holds the seed lock.
std::unique_ptr<Model> CreateGcadModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
