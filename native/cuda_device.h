// What the CUDA kernels (knn_cuda.cu, coreset_cuda.cu) share with their callers: a description of the device
// and the error a too-large input raises. Plain C++ (no CUDA types), so the N-API glue compiles with the host
// compiler alone. The device is always CUDA device 0 of the process: CUDA_VISIBLE_DEVICES picks which GPU that is.
#pragma once

#include <cstdint>
#include <string>

#include "control.h"

namespace imiad {
namespace cuda {

struct DeviceInfo {
  bool available = false;
  // Why no usable device was found (the CUDA runtime's own words), empty when available.
  std::string reason;
  int deviceCount = 0;
  std::string name;
  int computeMajor = 0;
  int computeMinor = 0;
  int multiprocessors = 0;
  uint64_t totalMemory = 0;
  uint64_t freeMemory = 0;
  int driverVersion = 0;
  int runtimeVersion = 0;
};

// Queries device 0 without throwing: a missing driver or device is reported in `reason`.
DeviceInfo deviceInfo();

// An input that does not fit the device's free memory; says how many bytes it needs. The glue turns it into a
// RangeError with this code, like the kernels' other argument errors.
struct DeviceOutOfMemory : InvalidArgument {
  DeviceOutOfMemory(const std::string& what, uint64_t neededBytes, uint64_t freeBytes)
      : InvalidArgument("ERR_IMIAD_CUDA_MEMORY",
                        what + " needs " + std::to_string(neededBytes) + " bytes of GPU memory but the device has " +
                            std::to_string(freeBytes) + " bytes free") {}
};

}  // namespace cuda
}  // namespace imiad
