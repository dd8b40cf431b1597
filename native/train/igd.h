// IGD (Chen et al., "Deep One-Class Classification via Interpolated Gaussian Descriptor", AAAI 2022): the
// generator and discriminator trained from scratch on images, on a frozen backbone's pooled features (igd.cc).
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "igd" (ModelConfig::kind); throws InvalidArgument for a bad configuration.
std::unique_ptr<Model> CreateIgdModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
