// The training engine's plain C++ interface (no Node, no torch types): the trainable networks of the
// teacher-student detectors live in libtorch (native/train/train.cc); the frozen teacher stays in ONNX Runtime and
// hands its features over as float arrays (NCHW), which the engine wraps without copying.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../control.h"

namespace imiad {
namespace train {

// One float array in NCHW layout (teacher features, images, maps), read in place.
struct View {
  const float* data = nullptr;
  int64_t n = 0, c = 0, h = 0, w = 0;
};

// A named float tensor of the model's state (parameters and batch-norm statistics).
struct NamedArray {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct ModelConfig {
  // "stpm", "rd4ad", the frozen-feature heads ("fastflow", "cflow", "csflow", "cfa"), or an image model (see CreateModel).
  std::string kind;
  // Channels of the teacher's layers 1..3 (the heads and GCAD: of the tapped levels).
  std::vector<int64_t> teacherChannels;
  uint64_t seed = 0;
  // Intra-op threads of every call on this model (fixed, so results are reproducible).
  int threads = 1;
  // Optimiser: STPM = SGD(lr, momentum, weightDecay); RD4AD = Adam(lr, betas (beta1, beta2)).
  double lr = 0.4, momentum = 0.9, weightDecay = 1e-4, beta1 = 0.5, beta2 = 0.999;
  // "cpu" or "cuda" (resolved by the caller: "cuda" only where CudaAvailable()).
  std::string device = "cpu";
  // Method-specific numbers (native/train/flows.cc: feature sides, blocks, clamp, schedule, ...).
  std::map<std::string, std::vector<double>> extra;
  // Imported weights, named as torchvision names a state dict's tensors (the trainable ResNet-18 of CutPaste,
  // DevNet, DRA and RegAD: native/train/resnet18.h); empty = the network's own seeded initialisation.
  std::vector<NamedArray> weights;
};

class Model {
 public:
  virtual ~Model() = default;
  // One optimiser step on a batch; `images` is used by STPM only (the student sees the image). Returns the loss.
  virtual double Step(const View& images, const std::vector<View>& teacher, const RunControl& control) = 0;
  // Anomaly maps [n, outSize, outSize] (before smoothing), written to `out`.
  virtual void Maps(const View& images, const std::vector<View>& teacher, int64_t outSize, float* out,
                    const RunControl& control) = 0;
  // Feeds training features after training so that the model fixes its normalising constants (CFlow: the per-level
  // maximum of log p / C over the training normals); `reset` starts over. Most models have none.
  virtual void Calibrate(const std::vector<View>& features, bool reset, const RunControl& control) {
    (void)features, (void)reset, (void)control;
  }
  // Feeds images with their teacher features to a model that fixes constants from data in named stages; `reset`
  // starts the stage over. GCAD (native/train/gcad.cc): "teacher" = the per-channel mean and standard deviation of
  // the training set's teacher features (before training, images unused), "maps" = the mean and standard deviation
  // of each branch's map on normal validation images (after training). Models without stages refuse any.
  virtual void CalibrateStage(const std::string& stage, const View& images, const std::vector<View>& teacher, bool reset,
                              const RunControl& control) {
    (void)images, (void)teacher, (void)reset, (void)control;
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "This model has no calibration stage " + stage);
  }
  // Image scores [n] written to `out`, for models whose score is not their map's maximum (CS-Flow: mean z^2);
  // false when the model has none.
  virtual bool Scores(const std::vector<View>& features, float* out, const RunControl& control) {
    (void)features, (void)out, (void)control;
    return false;
  }
  // The network's named outputs for an image batch [n, 3, h, w] in eval mode (the ResNet-18 models: layer1..layerN,
  // CutPaste also its embedding); models without an image network throw.
  virtual std::vector<NamedArray> Forward(const View& images, const RunControl& control) {
    (void)images, (void)control;
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "This model has no image network to run forward");
  }
  // Sets the optimiser's learning rate for the following steps (schedules computed by the caller: CutPaste's cosine
  // with warm restarts, RegAD's cosine per epoch); models whose schedule is their own refuse.
  virtual void SetLearningRate(double lr) {
    (void)lr;
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "This model keeps its own learning-rate schedule");
  }
  // Image scores [n] from the images and their features, for models whose score needs the image itself (IGD:
  // reconstruction error plus latent distance); by default Scores(features), which ignores the images.
  virtual bool ImageScores(const View& images, const std::vector<View>& features, float* out, const RunControl& control) {
    (void)images;
    return Scores(features, out, control);
  }
  // A method-specific setting between calls (IGD: "fit" = {steps} starts a fit's learning-rate schedule over that
  // many steps and drops its Gaussian descriptor); models without settings refuse every key.
  virtual void Configure(const std::string& key, const std::vector<double>& values) {
    (void)values;
    throw InvalidArgument("ERR_IMIAD_ARGUMENT", "This model takes no setting " + key);
  }
  virtual std::vector<NamedArray> State() = 0;
  virtual void LoadState(const std::vector<NamedArray>& state) = 0;
  // The optimiser's state, so that training can continue exactly where it stopped (a continual run resumed after a
  // crash, a loaded model trained further): STPM (SGD) "momentum:<parameter>" per parameter; RD4AD (Adam)
  // "exp_avg:<parameter>", "exp_avg_sq:<parameter>" and "step:<parameter>" (the int64 step count as two exact floats,
  // {step / 2^24, step % 2^24}). Empty before the first step. LoadOptimizerState replaces the optimiser's state.
  virtual std::vector<NamedArray> OptimizerState() = 0;
  virtual void LoadOptimizerState(const std::vector<NamedArray>& state) = 0;
  virtual int64_t ParameterCount() = 0;
};

// Throws InvalidArgument on a bad configuration.
std::unique_ptr<Model> CreateModel(const ModelConfig& config);

// A tiny torch computation (for the load check): the sum of a seeded 4 x 4 matrix product.
double SelfCheck();

// Whether the linked libtorch has CUDA and sees a GPU.
bool CudaAvailable();

// Whether the linked libtorch was built with CUDA at all (Debian's libtorch-dev is not).
bool CudaBuilt();

// Version string of the linked libtorch.
std::string TorchVersion();

}  // namespace train
}  // namespace imiad
