// The supervised detectors on a fine-tuned ResNet-18 (DevNet: devnet.cc; DRA: dra.cc) and what they share: the
// top-k multiple-instance score, the deviation loss, the multi-scale input, the ImageNet ResNet-18 built from the
// ONNX backbone's weights, the learning-rate schedule and the way a step receives its labels.
//
// How the addon's generic Model interface carries their inputs (bindings/train/train.ts wraps it):
// - Step(images, {labels, reference}): images [n, 3, s, s] (DRA: the reference normals first, then the batch),
//   labels [m, 1, 1, 1] as floats (0 normal, 1 labelled anomaly, 2 DRA's pseudo-anomaly; m = the batch without the
//   references), reference [k, 1, 1, r]: the deviation loss's reference draws from N(0, 1), one row per loss term
//   (DevNet 1, DRA 4), drawn by the caller so that a seed names them and a peer can be handed the same ones.
// - Scores({images}): one anomaly score per image, in eval mode (batch-norm running statistics).
// - Calibrate({references}) (DRA): the reference normals the composite head compares test images with.
// Internal to native/train (it speaks torch); the addon sees only train.h.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "blocks.h"
#include "resnet18.h"
#include "train.h"

namespace imiad {
namespace train {

// mean of the top max(int(h w rate), 1) values of |map| per image ([n, 1, h, w] -> [n]): the official
// "topk" MIL score of deviation-network-image (modeling/net.py) and DRA's PlainHead.
torch::Tensor TopkMeanAbs(const torch::Tensor& map, double rate);

// The deviation loss (DeviationLoss in both official repos): dev = (score - mean(r)) / std(r) with the unbiased std
// of the reference draws r; mean over the batch of (1 - y) |dev| + y max(0, margin - dev).
torch::Tensor DeviationLoss(const torch::Tensor& scores, const torch::Tensor& targets, const torch::Tensor& reference, double margin);

// The input at scale s: the image itself for s = 0, else F.interpolate(x, size=side // 2^s) (nearest), as both
// official forwards do.
torch::Tensor InputScale(const torch::Tensor& x, int64_t scale);

// The common part of DevNet and DRA: a ResNet-18 (conv1..layer4, batch norm in train mode while training) whose
// weights come from the model config, heads added by the subclass, Adam (lr, weight decay) over every parameter,
// StepLR(decayEvery, gamma) per epoch counted from the steps done (extra.stepsPerEpoch; extra.decayShift = 1 when the
// official loop steps its scheduler at the start of an epoch, as DRA's does), the gradients' global norm clipped to
// extra.clipNorm. Every call runs on the training thread (runtime.h) with the model's thread count.
class LabelledImageModel : public HeadModel {
 public:
  explicit LabelledImageModel(const ModelConfig& config);

  double Step(const View& images, const std::vector<View>& inputs, const RunControl& control) override;
  void Maps(const View& images, const std::vector<View>& inputs, int64_t outSize, float* out, const RunControl& control) override;
  bool Scores(const std::vector<View>& features, float* out, const RunControl& control) override;

 protected:
  // The subclass registers its heads on net_ (their default initialisation continues the generator the base class
  // seeded), then calls this: Adam over every parameter, the network moved to the device.
  void FinishModel();
  // The loss of one batch: images [refs + m, 3, s, s] on the device, labels [m] (0, 1, 2), reference draws [k, r].
  virtual torch::Tensor Loss(const torch::Tensor& images, const torch::Tensor& labels, const torch::Tensor& reference) = 0;
  // Anomaly scores [n] of images [n, 3, s, s] in eval mode.
  virtual torch::Tensor Score(const torch::Tensor& images) = 0;
  // Reference rows the loss consumes (DevNet 1, DRA 4) and reference images prepended to a training batch (DRA 5).
  virtual int64_t ReferenceRows() const = 0;
  virtual int64_t ReferenceImages() const { return 0; }
  // The label values a batch may hold (DevNet 0..1, DRA 0..2).
  virtual int64_t MaxLabel() const = 0;
  // layer4 of the backbone.
  torch::Tensor Features(const torch::Tensor& x);

  std::shared_ptr<torch::nn::Module> net_;
  ResNet18 backbone_{nullptr};
  torch::Tensor steps_;  // optimiser steps done (a buffer, so that a checkpoint continues the schedule)
  int64_t scales_ = 2, stepsPerEpoch_ = 20, decayEvery_ = 10, decayShift_ = 0, side_ = 448;
  double gamma_ = 0.1, topk_ = 0.1, margin_ = 5, baseLr_ = 2e-4;

 private:
  void RunOnTrainingThread(const std::function<void()>& fn);
};

// "devnet" (ModelConfig::kind); throws InvalidArgument for a bad configuration. The caller holds the seed lock.
std::unique_ptr<Model> CreateDevNetModel(const ModelConfig& config);

}  // namespace train
}  // namespace imiad
