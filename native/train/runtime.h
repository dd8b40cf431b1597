// The training engine's runtime, shared by every trained detector (native/train/*.cc): where libtorch computes and
// where its tensors' memory comes from. docs/training-speed.md says why (measurements) and what it changes.
//
// 1. One persistent training thread. Every step and map call of every model runs on it, one call at a time, with the
//    model's intra-op thread count set on that thread. Node's libuv pool would otherwise hand consecutive steps to
//    different threads: each became an OpenMP master with its own team, and each got its own glibc malloc arena
//    holding its own copy of the step's working set (resident memory grew with the pool size).
// 2. A caching allocator for libtorch's CPU tensors (installed with c10::SetCPUAllocator when the addon loads; only
//    libtorch allocates through it). Blocks of at least kCachedBlockBytes are mapped with mmap, not malloc, and a
//    freed block is kept for the next allocation of the same size: a training step's tensors have the same sizes
//    every step, so after the first step the engine stops mapping, unmapping and page-faulting its activations.
//    Blocks stay cached only for as long as they keep being used: after each call the blocks that the call did not
//    reuse are unmapped, and everything is unmapped when the training thread has been idle for idleReleaseMs.
//    Smaller blocks go to malloc like libtorch's default allocator. glibc's own settings (mallopt, the dynamic mmap
//    threshold) are never touched, so the CPU addon and Node's allocations behave as without the training addon.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace imiad {
namespace train {
namespace runtime {

// Blocks below this size are not cached (malloc serves them from its arenas without mapping pages).
constexpr size_t kCachedBlockBytes = size_t{64} << 10;

// Makes the caching allocator libtorch's CPU allocator. Idempotent; call before any tensor exists (addon load).
void Install();

// Gives the calling thread (the JS thread, at addon load) one intra-op thread, so that the tensor work it does itself
// (building a model, loading and exporting its state) starts no OpenMP team of its own. A second team's idle worker
// counts among libgomp's managed threads; once they outnumber the cores, libgomp stops spinning between parallel
// regions (GOMP's "throttled" spin of 100 iterations) and the training thread's team sleeps and wakes through futexes
// at every region: DevNet at 2 threads took 1.11x PyTorch's time with ~15,000 context switches in 10 steps against
// PyTorch's ~200 (docs/training-speed.md).
// Models are built on the JS thread with their own thread count (ThreadScope in train.cc), which then returns here.
void SingleThreadCaller();

// Runs fn on the training thread with `threads` intra-op threads and waits for it; rethrows what fn threw. Called
// from the training thread itself, fn runs inline.
void Run(int threads, const std::function<void()>& fn);

struct Stats {
  uint64_t tasks = 0;          // calls run on the training thread
  int64_t threadId = 0;        // the training thread's kernel thread id (0 before the first call)
  int lastThreads = 0;         // at::get_num_threads() inside the last call
  int callerThreads = 0;       // at::get_num_threads() on the thread asking (the JS thread: 1, see SingleThreadCaller)
  uint64_t mapped = 0;         // blocks mapped (cache misses)
  uint64_t reused = 0;         // allocations served from the cache
  uint64_t unmapped = 0;       // blocks unmapped
  size_t liveBytes = 0;        // cached-size blocks in use by tensors
  size_t cachedBytes = 0;      // blocks kept for reuse
  size_t peakBytes = 0;        // the largest liveBytes + cachedBytes so far
  bool installed = false;      // the caching allocator is libtorch's CPU allocator
  int idleReleaseMs = 0;
};

Stats GetStats();

// Unmaps every cached block now (not the blocks in use); returns the bytes released.
size_t ReleaseCache();

// How long the training thread waits idle before it unmaps the cache (default 5000 ms; 0 = right after each call).
void SetIdleReleaseMs(int ms);

}  // namespace runtime
}  // namespace train
}  // namespace imiad
