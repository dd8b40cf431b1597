// The training thread and the caching CPU allocator (runtime.h says what and why; docs/training-speed.md has the
// measurements). Both are process-wide because libtorch's allocator and OpenMP's thread teams are: the state lives
// in objects that are created once and never destroyed, so nothing runs at exit while the thread may still compute.
#include "runtime.h"

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace imiad {
namespace train {
namespace runtime {
namespace {

// libtorch's default CPU alignment (c10::gAlignment), kept for the small blocks; mapped blocks are page-aligned.
constexpr size_t kAlignment = 64;
constexpr size_t kPage = 4096;

// Set by SingleThreadCaller(): the next task on the training thread sets its thread count again.
std::atomic<bool> callerChangedThreads{true};

class BlockCache {
 public:
  void* Allocate(size_t n) {
    if (n == 0) return nullptr;
    if (n < kCachedBlockBytes) {
      void* p = nullptr;
      if (posix_memalign(&p, kAlignment, n) != 0 || p == nullptr) TORCH_CHECK(false, "imiad training allocator: out of memory allocating ", n, " bytes");
      return p;
    }
    const size_t size = (n + kPage - 1) / kPage * kPage;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back().first;
        it->second.pop_back();
        cachedBytes_ -= size;
        liveBytes_ += size;
        live_.emplace(p, size);
        reused_++;
        return p;
      }
    }
    // MAP_POPULATE maps the pages in the one system call (a tensor's block is written in full right away) instead of
    // one page fault per 4 KiB page on first touch.
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
      // Memory held for reuse may be what is missing: give it back and try once more.
      ReleaseAll();
      p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
      if (p == MAP_FAILED) TORCH_CHECK(false, "imiad training allocator: out of memory mapping ", size, " bytes");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    live_.emplace(p, size);
    liveBytes_ += size;
    mapped_++;
    peakBytes_ = std::max(peakBytes_, liveBytes_ + cachedBytes_);
    return p;
  }

  void Free(void* p) {
    if (p == nullptr) return;
    size_t size = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = live_.find(p);
      if (it != live_.end()) {
        size = it->second;
        live_.erase(it);
        liveBytes_ -= size;
        if (inTask_) {
          free_[size].emplace_back(p, generation_);
          cachedBytes_ += size;
          return;
        }
        unmapped_++;
      }
    }
    if (size == 0) {
      std::free(p);
    } else {
      munmap(p, size);
    }
  }

  void BeginTask() {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_++;
    inTask_ = true;
  }

  // Unmaps the cached blocks that the task just ended did not free (so did not use); with release, all of them.
  void EndTask(bool release) {
    std::vector<std::pair<void*, size_t>> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      inTask_ = false;
      for (auto& bucket : free_) {
        auto& blocks = bucket.second;
        size_t kept = 0;
        for (auto& b : blocks) {
          if (release || b.second != generation_) {
            drop.emplace_back(b.first, bucket.first);
          } else {
            blocks[kept++] = b;
          }
        }
        blocks.resize(kept);
      }
      Forget(drop);
    }
    for (auto& d : drop) munmap(d.first, d.second);
  }

  size_t ReleaseAll() {
    std::vector<std::pair<void*, size_t>> drop;
    size_t bytes = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& bucket : free_) {
        for (auto& b : bucket.second) drop.emplace_back(b.first, bucket.first);
      }
      free_.clear();
      bytes = Forget(drop);
    }
    for (auto& d : drop) munmap(d.first, d.second);
    return bytes;
  }

  void Fill(Stats* s) {
    std::lock_guard<std::mutex> lock(mutex_);
    s->mapped = mapped_;
    s->reused = reused_;
    s->unmapped = unmapped_;
    s->liveBytes = liveBytes_;
    s->cachedBytes = cachedBytes_;
    s->peakBytes = peakBytes_;
  }

  size_t CachedBytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cachedBytes_;
  }

 private:
  // Accounts for blocks taken out of the cache to be unmapped (mutex_ held); returns their bytes.
  size_t Forget(const std::vector<std::pair<void*, size_t>>& drop) {
    size_t bytes = 0;
    for (auto& d : drop) bytes += d.second;
    cachedBytes_ -= bytes;
    unmapped_ += drop.size();
    return bytes;
  }

  std::mutex mutex_;
  std::unordered_map<void*, size_t> live_;
  // size -> cached blocks (address, generation of the task that freed it); the last freed is reused first.
  std::unordered_map<size_t, std::vector<std::pair<void*, uint64_t>>> free_;
  uint64_t generation_ = 0;
  bool inTask_ = false;
  uint64_t mapped_ = 0, reused_ = 0, unmapped_ = 0;
  size_t liveBytes_ = 0, cachedBytes_ = 0, peakBytes_ = 0;
};

BlockCache& Cache() {
  static BlockCache* cache = new BlockCache();  // never destroyed: tensors may be freed during exit
  return *cache;
}

void FreeBlock(void* p) { Cache().Free(p); }

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    void* p = Cache().Allocate(n);
    return {p, p, &FreeBlock, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &FreeBlock; }
};

struct Task {
  int threads;
  const std::function<void()>* fn;
  std::promise<void> done;
};

class TrainingThread {
 public:
  void Run(int threads, const std::function<void()>& fn) {
    Task task{threads, &fn, {}};
    std::future<void> done = task.done.get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
      if (std::this_thread::get_id() != thread_.get_id()) queue_.push_back(&task);
    }
    if (std::this_thread::get_id() == thread_.get_id()) {
      // A call from inside a task (one model's call using another's): it runs as part of that task.
      fn();
      return;
    }
    wake_.notify_one();
    done.get();
  }

  void Fill(Stats* s) {
    std::lock_guard<std::mutex> lock(mutex_);
    s->tasks = tasks_;
    s->threadId = threadId_;
    s->lastThreads = lastThreads_;
    s->idleReleaseMs = idleReleaseMs_;
  }

  void SetIdleReleaseMs(int ms) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idleReleaseMs_ = ms;
    }
    wake_.notify_one();
  }

 private:
  void Loop() {
    at::init_num_threads();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      threadId_ = static_cast<int64_t>(syscall(SYS_gettid));
    }
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      const auto ready = [this] { return !queue_.empty(); };
      while (!ready()) {
        if (Cache().CachedBytes() > 0) {
          const int ms = idleReleaseMs_;
          const auto wakeUp = [&] { return ready() || idleReleaseMs_ != ms; };  // a task, or a new idle time
          if (!wake_.wait_for(lock, std::chrono::milliseconds(ms), wakeUp)) {
            lock.unlock();
            Cache().ReleaseAll();
            lock.lock();
          }
        } else {
          wake_.wait(lock, ready);
        }
      }
      Task* task = queue_.front();
      queue_.pop_front();
      const bool releaseAfter = idleReleaseMs_ == 0;
      lock.unlock();
      // OpenMP keeps the thread count per calling thread: set it here, on the thread that computes.
      // After SingleThreadCaller() (which set the process-wide count and the pthreadpool's size to 1) the next task
      // sets them back to its own count, even where this thread's OpenMP count already equals it.
      if (callerChangedThreads.exchange(false) || at::get_num_threads() != task->threads) at::set_num_threads(task->threads);
      const int threads = at::get_num_threads();
      Cache().BeginTask();
      std::exception_ptr error;
      try {
        (*task->fn)();
      } catch (...) {
        error = std::current_exception();
      }
      Cache().EndTask(releaseAfter);
      lock.lock();
      tasks_++;
      lastThreads_ = threads;
      if (error) {
        task->done.set_exception(error);
      } else {
        task->done.set_value();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task*> queue_;
  std::thread thread_;
  uint64_t tasks_ = 0;
  int64_t threadId_ = 0;
  int lastThreads_ = 0;
  int idleReleaseMs_ = 5000;
};

TrainingThread& Thread() {
  static TrainingThread* thread = new TrainingThread();  // never destroyed: its thread runs until the process ends
  return *thread;
}

std::once_flag installed;
std::atomic<bool> isInstalled{false};

}  // namespace

void Install() {
  std::call_once(installed, [] {
    static CachingCpuAllocator* allocator = new CachingCpuAllocator();
    // Priority 1 outranks libtorch's default CPU allocator (registered at 0).
    c10::SetCPUAllocator(allocator, /*priority=*/1);
    isInstalled = c10::GetCPUAllocator() == allocator;
  });
}

void SingleThreadCaller() {
  // ATen sets a thread's OpenMP count once, lazily, from the process-wide count at the thread's first parallel call;
  // do that now, so that it cannot later replace the 1 set here with the training thread's count.
  at::internal::lazy_init_num_threads();
  at::set_num_threads(1);
  callerChangedThreads = true;
}

void Run(int threads, const std::function<void()>& fn) { Thread().Run(threads, fn); }

Stats GetStats() {
  Stats s;
  Thread().Fill(&s);
  Cache().Fill(&s);
  s.installed = isInstalled;
  s.callerThreads = at::get_num_threads();
  return s;
}

size_t ReleaseCache() { return Cache().ReleaseAll(); }

void SetIdleReleaseMs(int ms) { Thread().SetIdleReleaseMs(ms); }

}  // namespace runtime
}  // namespace train
}  // namespace imiad
