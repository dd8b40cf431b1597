// Building blocks shared by the trained heads on frozen features (native/train/flows.cc and later families):
// zero-copy wrapping of the ONNX features, the 2-D sin/cos positional encoding (cflow-ad), the Gaussian
// log-likelihood with log-det bookkeeping, the training device, and a module's state as named float arrays.
// Internal to native/train (it speaks torch); the addon sees only train.h.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "train.h"

namespace imiad {
namespace train {

// The device a model lives on: "cuda" only where libtorch has CUDA and sees a GPU (the TypeScript side resolves
// 'auto' and refuses 'cuda' before this runs); anything else is the CPU.
torch::Device TrainDevice(const std::string& device);

// A [n, c, h, w] view as a tensor on `device` (a view of the caller's memory on the CPU, a copy on a GPU).
torch::Tensor ViewTensor(const View& v, const torch::Device& device);

// cflow-ad's positionalencoding2d(D, H, W) (custom_models/utils.py): [D, H, W], the first D/2 channels encode the
// column (sin at even, cos at odd channels), the last D/2 the row, frequencies exp(-2k ln(1e4) / (D/2)).
torch::Tensor PositionalEncoding2d(int64_t d, int64_t h, int64_t w);

// log N(z; 0, I) of each row of z [n, C] plus its log-det [n]: C ln(1/sqrt(2 pi)) - 0.5 |z|^2 + logdet
// (cflow-ad get_logp).
torch::Tensor GaussianLogLikelihood(const torch::Tensor& z, const torch::Tensor& logdet);

// The float parameters and buffers of a module as named arrays, and back (a checkpoint's tensors must all match).
std::vector<NamedArray> ModuleState(torch::nn::Module& module);
void LoadModuleState(torch::nn::Module& module, const std::vector<NamedArray>& state);
int64_t TrainableCount(torch::nn::Module& module);

// Reads an optional extra parameter of a model config (ModelConfig::extra), with a default.
std::vector<double> Extra(const ModelConfig& config, const std::string& key, std::vector<double> fallback);

// A [n, outSize, outSize] map tensor copied into `out` (on the CPU).
void CopyOut(const torch::Tensor& map, float* out);

}  // namespace train
}  // namespace imiad
