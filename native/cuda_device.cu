// Device discovery for the CUDA addon's deviceInfo() and for the TypeScript side's test-load: never throws, so a
// machine without a driver or GPU is an answer, not an error.
#include <cuda_runtime.h>

#include <string>

#include "cuda_device.h"

namespace imiad {
namespace cuda {

namespace {
// The oldest architecture this build carries code for (CMakeLists.txt: CUDA 13 dropped everything before Turing).
constexpr int kOldestMajor = 7;
constexpr int kOldestMinor = 5;
}  // namespace

DeviceInfo deviceInfo() {
  DeviceInfo info;
  cudaDriverGetVersion(&info.driverVersion);
  cudaRuntimeGetVersion(&info.runtimeVersion);
  cudaError_t status = cudaGetDeviceCount(&info.deviceCount);
  if (status != cudaSuccess) {
    info.deviceCount = 0;
    // With no driver at all the runtime says its driver is "insufficient"; say what is actually missing.
    info.reason = status == cudaErrorInsufficientDriver && info.driverVersion == 0
                      ? "no NVIDIA driver was found (libcuda.so.1 could not be loaded)"
                      : cudaGetErrorString(status);
    (void)cudaGetLastError();
    return info;
  }
  if (info.deviceCount == 0) {
    info.reason = "no CUDA-capable device is detected";
    return info;
  }
  cudaDeviceProp prop{};
  status = cudaGetDeviceProperties(&prop, 0);
  if (status != cudaSuccess) {
    info.reason = cudaGetErrorString(status);
    (void)cudaGetLastError();
    return info;
  }
  info.name = prop.name;
  info.computeMajor = prop.major;
  info.computeMinor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.totalMemory = prop.totalGlobalMem;
  if (prop.major < kOldestMajor || (prop.major == kOldestMajor && prop.minor < kOldestMinor)) {
    info.reason = std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
                  std::to_string(prop.minor) + ", older than 7.5, the oldest this build supports";
    return info;
  }
  status = cudaSetDevice(0);
  size_t freeBytes = 0, totalBytes = 0;
  if (status == cudaSuccess) status = cudaMemGetInfo(&freeBytes, &totalBytes);
  if (status != cudaSuccess) {
    info.reason = cudaGetErrorString(status);
    (void)cudaGetLastError();
    return info;
  }
  info.freeMemory = freeBytes;
  info.available = true;
  return info;
}

}  // namespace cuda
}  // namespace imiad
