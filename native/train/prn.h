// PRN (native/train/prn.cc): the prototypical residual network's trainable head on frozen ResNet-18 layers 1..4,
// with the k-means prototypes of the normal training features as fixed buffers.
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "prn" (ModelConfig::kind); throws InvalidArgument for a bad configuration. The caller holds the seed lock.
std::unique_ptr<Model> CreatePrnModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
