// FAVAE (feature-augmented VAE, native/train/favae.cc): a VAE trained from scratch on [0, 1] images whose decoder
// taps, through 1x1 adapters, regress a frozen teacher's features.
#pragma once

#include <memory>

#include "train.h"

namespace imiad {
namespace train {

// "favae" (ModelConfig::kind); throws InvalidArgument for a bad configuration. ModelConfig::teacherChannels are the
// teacher's three levels (shallow to deep); extra: "sides" (the teacher levels' square sides, each one of 64, 32, 16
// or 8 at the 128 px input), "size" {128}, "zdim" {100}, "kld" {1.0}.
std::unique_ptr<Model> CreateFavaeModel(const ModelConfig& config);

// The decoder module whose output is tapped for a teacher level of side `side` (official: 10, 16, 22 for 16, 32,
// 64; 7 for 8), -1 when the decoder has no such side.
int64_t FavaeDecoderTap(int64_t side);

}  // namespace train
}  // namespace imiad
