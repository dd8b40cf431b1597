// CutPaste (Li et al., CVPR 2021) on the trainable ResNet-18 (native/train/cutpaste.cc).
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// Kind "cutpaste". Throws InvalidArgument on a bad configuration.
std::unique_ptr<Model> CreateCutPasteModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
