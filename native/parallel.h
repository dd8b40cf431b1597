// A minimal fork-join over std::thread. Work is split into fixed, contiguous chunks whose boundaries depend only on
// the problem size, never on the thread count, so every kernel built on it gives bit-identical results whatever the
// number of threads (STYLE.md rule 6). IMIAD_THREADS overrides the thread count (tests use it to prove that).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace imiad {

inline unsigned threadCount() {
  if (const char* env = std::getenv("IMIAD_THREADS")) {
    const long n = std::strtol(env, nullptr, 10);
    if (n >= 1 && n <= 1024) return static_cast<unsigned>(n);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : hw;
}

// Runs fn(chunkIndex, begin, end) over [0, n) in chunks of `chunk` items, chunks claimed dynamically by up to
// threadCount() threads. The first exception thrown by any chunk is rethrown on the caller's thread after all
// threads have joined; remaining chunks are skipped once one has failed.
template <typename Fn>
void parallelChunks(size_t n, size_t chunk, Fn&& fn) {
  if (n == 0) return;
  if (chunk == 0) chunk = 1;
  const size_t chunks = (n + chunk - 1) / chunk;
  const unsigned threads = static_cast<unsigned>(std::min<size_t>(threadCount(), chunks));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex errorMutex;
  auto worker = [&]() {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const size_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      const size_t begin = c * chunk;
      const size_t end = std::min(n, begin + chunk);
      try {
        fn(c, begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
        return;
      }
    }
  };
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace imiad
