// A CPU emulation of the part of CUDA the imiad kernels use, so that test/cuda/emulate.sh can run the very same
// kernels (native/*.cu compiled as C++) on a machine without a GPU and compare them with the CPU kernels. Each
// block runs alone; each of its threads is a fiber (ucontext) that runs until it reaches __syncthreads() or a warp
// shuffle, which are barriers over the block or the warp. __shared__ variables become statics (one block at a
// time). Memory calls are malloc/memcpy; streams are synchronous. It checks logic (indexing, barriers, selection,
// tie rules, the host orchestration), not performance or memory-model subtleties.
// On x86-64 a fiber switch is a few instructions of our own (callee-saved registers and the stack pointer): glibc's
// swapcontext makes a sigprocmask system call on every switch, which made the emulation spend half its time in the
// kernel. Elsewhere ucontext serves.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Per OS thread: the addon may run kernels on several libuv threads at once.
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

typedef int cudaError_t;
typedef void* cudaStream_t;
enum { cudaSuccess = 0, cudaErrorInsufficientDriver = 35, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount };
constexpr unsigned cudaStreamNonBlocking = 1;

struct cudaDeviceProp {
  char name[256];
  int major, minor, multiProcessorCount;
  size_t totalGlobalMem;
};

namespace emu {

#if defined(__x86_64__) && !defined(IMIAD_EMU_UCONTEXT)
#define IMIAD_EMU_FAST_SWITCH 1
// Saves the callee-saved registers on the current stack, stores the stack pointer in *from and continues on the
// stack `to` (saved by an earlier switch, or prepared by prepareStack). The System V ABI leaves every other register
// caller-saved; MXCSR and the x87 control word are never changed by the kernels.
__attribute__((naked, noinline)) static void switchStack(void** /*from*/, void* /*to*/) {
  __asm__ volatile(
      "pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}

// A fresh stack whose first switch "returns" into entry with the stack aligned as after a call.
inline void* prepareStack(char* base, size_t size, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(base + size) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                              // entry's return address: it never returns
  *--sp = reinterpret_cast<void*>(entry);       // popped by switchStack's ret
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
  return sp;
}

#endif

// A fiber's saved context; its stack belongs to stackPool().
struct Fiber {
#ifdef IMIAD_EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t context;
#endif
  bool done = false;
};

constexpr size_t kFiberStack = 64 * 1024;

struct Barrier {
  int count = 0;
  long generation = 0;
};

struct Block {
  dim3 blockDim, gridDim, blockIdx;
  std::vector<Fiber> fibers;
#ifdef IMIAD_EMU_FAST_SWITCH
  void* scheduler = nullptr;
#else
  ucontext_t scheduler;
#endif
  int current = 0;
  Barrier blockBarrier;
  std::vector<Barrier> warpBarriers;
  std::vector<uint64_t> shuffle;  // [warp][lane]
  std::function<void()> body;
};

inline Block*& block() {
  static thread_local Block* b = nullptr;
  return b;
}

inline uint3& threadIdxRef() {
  static thread_local uint3 t;
  return t;
}

inline void toScheduler(Block* b) {
#ifdef IMIAD_EMU_FAST_SWITCH
  switchStack(&b->fibers[b->current].sp, b->scheduler);
#else
  swapcontext(&b->fibers[b->current].context, &b->scheduler);
#endif
}

inline void toFiber(Block& b, int i) {
#ifdef IMIAD_EMU_FAST_SWITCH
  switchStack(&b.scheduler, b.fibers[i].sp);
#else
  swapcontext(&b.scheduler, &b.fibers[i].context);
#endif
}

inline void yieldToScheduler() { toScheduler(block()); }

// Fiber stacks, kept per OS thread and reused by every block (a block used to allocate its own).
inline std::vector<std::unique_ptr<char[]>>& stackPool() {
  static thread_local std::vector<std::unique_ptr<char[]>> pool;
  return pool;
}

inline int linearThread() {
  const uint3& t = threadIdxRef();
  const Block* b = block();
  return static_cast<int>(t.x + b->blockDim.x * (t.y + b->blockDim.y * t.z));
}

inline void barrierWait(Barrier& barrier, int participants) {
  const long generation = barrier.generation;
  if (++barrier.count == participants) {
    barrier.count = 0;
    ++barrier.generation;
    return;
  }
  while (barrier.generation == generation) yieldToScheduler();
}

inline void fiberEntry() {
  Block* b = block();
  b->body();
  b->fibers[b->current].done = true;
  toScheduler(b);
}

inline void runBlock(Block& b) {
  const int threads = static_cast<int>(b.blockDim.x * b.blockDim.y * b.blockDim.z);
  b.fibers.assign(threads, Fiber());
  b.warpBarriers.assign((threads + 31) / 32, Barrier());
  b.shuffle.assign(((threads + 31) / 32) * 32, 0);
  block() = &b;
  auto& pool = stackPool();
  while (pool.size() < static_cast<size_t>(threads)) pool.emplace_back(new char[kFiberStack]);
  for (int i = 0; i < threads; ++i) {
    Fiber& f = b.fibers[i];
    char* stack = pool[i].get();
#ifdef IMIAD_EMU_FAST_SWITCH
    f.sp = prepareStack(stack, kFiberStack, fiberEntry);
#else
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = stack;
    f.context.uc_stack.ss_size = kFiberStack;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiberEntry, 0);
#endif
  }
  // Threads are resumed in a fresh random order on every sweep, so that a kernel whose correctness depends on
  // which warp reaches a point first shows it here too.
  static thread_local std::mt19937 order(12345);
  std::vector<int> sweep(threads);
  for (int i = 0; i < threads; ++i) sweep[i] = i;
  for (;;) {
    bool any = false;
    std::shuffle(sweep.begin(), sweep.end(), order);
    for (int i : sweep) {
      if (b.fibers[i].done) continue;
      any = true;
      b.current = i;
      uint3& t = threadIdxRef();
      t.x = i % b.blockDim.x;
      t.y = (i / b.blockDim.x) % b.blockDim.y;
      t.z = i / (b.blockDim.x * b.blockDim.y);
      toFiber(b, i);
    }
    if (!any) break;
  }
  block() = nullptr;
}

template <typename T>
inline dim3 dim3Of(T v) {
  if constexpr (std::is_same_v<T, dim3>) {
    return v;
  } else {
    return dim3(static_cast<unsigned>(v));
  }
}

template <typename... Params>
struct Launch {
  dim3 grid, threads;
  void (*kernel)(Params...);
  template <typename... Args>
  void operator()(Args&&... args) const {
    // Arguments converted once, as a launch copies them.
    std::tuple<Params...> values(static_cast<Params>(args)...);
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          Block b;
          b.blockDim = threads;
          b.gridDim = grid;
          b.blockIdx = dim3(x, y, z);
          b.body = [&]() { std::apply(kernel, values); };
          runBlock(b);
        }
  }
};

template <typename G, typename B, typename... Params>
Launch<Params...> makeLaunch(G grid, B threads, void (*kernel)(Params...)) {
  return Launch<Params...>{dim3Of(grid), dim3Of(threads), kernel};
}

}  // namespace emu

#define IMIAD_LAUNCH(grid, block, stream, ...) ::emu::makeLaunch((grid), (block), &__VA_ARGS__)

#define threadIdx (::emu::threadIdxRef())
#define blockIdx (::emu::block()->blockIdx)
#define blockDim (::emu::block()->blockDim)
#define gridDim (::emu::block()->gridDim)

inline void __syncthreads() {
  emu::Block* b = emu::block();
  emu::barrierWait(b->blockBarrier, static_cast<int>(blockDim.x * blockDim.y * blockDim.z));
}

template <typename T>
inline T emuShuffle(T value, int srcLane) {
  emu::Block* b = emu::block();
  const int t = emu::linearThread();
  const int warp = t / 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  b->shuffle[t] = bits;
  emu::barrierWait(b->warpBarriers[warp], 32);
  T out;
  const uint64_t got = b->shuffle[warp * 32 + srcLane];
  std::memcpy(&out, &got, sizeof(T));
  emu::barrierWait(b->warpBarriers[warp], 32);
  return out;
}

template <typename T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
  const int lane = emu::linearThread() % 32;
  return emuShuffle(v, (lane / width) * width + src % width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  const int lane = emu::linearThread() % 32;
  const int src = lane ^ mask;
  return emuShuffle(v, src / width == lane / width ? src : lane);
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = emu::linearThread() % 32;
  const int src = (lane % width) + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return emuShuffle(v, src);
}

inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = v + old;
  return old;
}

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
using std::fmaf;
using std::fminf;
using std::sqrt;

// ---- host API ----
// The emulated device's free memory: 8 GiB, or $IMIAD_CUDA_EMULATION_FREE_BYTES (to test a too-small GPU).
inline size_t& emuFreeBytes() {
  static size_t bytes = std::getenv("IMIAD_CUDA_EMULATION_FREE_BYTES")
                            ? static_cast<size_t>(std::strtoull(std::getenv("IMIAD_CUDA_EMULATION_FREE_BYTES"), nullptr, 10))
                            : size_t(8) << 30;
  return bytes;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* total) {
  *freeBytes = emuFreeBytes();
  *total = emuFreeBytes();
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 2;
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof(p->name), "CPU emulation");
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 2;
  p->totalGlobalMem = emuFreeBytes();
  return cudaSuccess;
}
