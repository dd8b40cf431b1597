// Error checking shared by the .cu files: every CUDA runtime call's status becomes a C++ exception that names the
// call, so the glue can report it (ERR_IMIAD_NATIVE) instead of the process continuing with a broken device state.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

// Kernel launches go through this macro (kernel last, so template arguments may hold commas), which lets
// test/cuda/emulate.sh run the very same kernels on the CPU with its own definition.
#ifndef IMIAD_LAUNCH
#define IMIAD_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif

namespace imiad {
namespace cuda {

[[noreturn]] inline void throwCudaError(cudaError_t status, const char* call) {
  // Clears a non-sticky error so the next call on this thread does not report it again.
  (void)cudaGetLastError();
  throw std::runtime_error(std::string("CUDA error in ") + call + ": " + cudaGetErrorName(status) + " (" +
                           cudaGetErrorString(status) + ")");
}

#define IMIAD_CUDA_CHECK(call)                                            \
  do {                                                                    \
    cudaError_t imiadStatus_ = (call);                                    \
    if (imiadStatus_ != cudaSuccess) ::imiad::cuda::throwCudaError(imiadStatus_, #call); \
  } while (0)

// A device allocation freed on scope exit (every error path unwinds through exceptions).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { allocate(count); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void allocate(size_t count) {
    release();
    if (count == 0) return;
    void* p = nullptr;
    IMIAD_CUDA_CHECK(cudaMalloc(&p, count * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    count_ = count;
  }
  void release() {
    if (ptr_ != nullptr) cudaFree(ptr_);  // an error here (e.g. at process exit) has nobody left to report to
    ptr_ = nullptr;
    count_ = 0;
  }
  T* get() const { return ptr_; }
  size_t size() const { return count_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// A stream owned for one call.
class Stream {
 public:
  Stream() { IMIAD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void sync() const { IMIAD_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

// Binds the calling (libuv worker) thread to device 0 and returns its free memory in bytes.
inline size_t useDevice() {
  IMIAD_CUDA_CHECK(cudaSetDevice(0));
  size_t freeBytes = 0, totalBytes = 0;
  IMIAD_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &totalBytes));
  return freeBytes;
}

// native/knn.h's exactSquaredDistance(), the definition of the k-NN ranking, reproduced bit for bit by one
// thread: float inputs widened to double, differences squared and summed in index order, each operation rounded
// separately (no fused multiply-add).
__device__ __forceinline__ double exactSquaredDistance(const float* __restrict__ a, const float* __restrict__ b,
                                                       int dims) {
  double sum = 0.0;
  for (int d = 0; d < dims; ++d) {
    const double t = __dsub_rn(static_cast<double>(a[d]), static_cast<double>(b[d]));
    sum = __dadd_rn(sum, __dmul_rn(t, t));
  }
  return sum;
}

}  // namespace cuda
}  // namespace imiad
