// CPU emulation of CUDA (test/cuda/emulate.sh): the constants the kernels use.
#pragma once
#include <limits>
#define CUDART_INF (std::numeric_limits<double>::infinity())
#define CUDART_INF_F (std::numeric_limits<float>::infinity())
