// A minimal fork-join over std::thread: a team of threads (Team) for kernels of many short steps, and one-shot
// parallelChunks() on a team made for the call. Work is split into fixed, contiguous chunks whose boundaries depend
// only on the problem size, never on the thread count, so every kernel built on it gives bit-identical results
// whatever the number of threads (STYLE.md rule 6). IMIAD_THREADS overrides the thread count (tests use it to prove
// that).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
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

// A team of threads kept for many short fork-joins (a kernel that runs thousands of dependent steps, each too short
// to start threads for). Chunk k of every run goes to member k % size(), so a member sees the same rows step after
// step and keeps them in its cache; the chunks still depend only on the problem size, so results do not depend on
// the team's size. Members spin briefly between runs, then yield, then sleep. Not reentrant: one run at a time, from
// the thread that made the team. Chunks never depend on who runs them, so none of this changes a result.
class Team {
 public:
  explicit Team(unsigned threads = threadCount()) : size_(threads == 0 ? 1 : threads) {
    members_.reserve(size_ - 1);
    for (unsigned m = 1; m < size_; ++m) members_.emplace_back([this, m] { serve(m); });
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  ~Team() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : members_) t.join();
  }

  unsigned size() const { return size_; }

  // What a run costs beyond its share of the work: the time the calling thread waits for the members after its own
  // chunks (their wake-up, a member that waits for a core). A moving average over the runs on the team (the first
  // samples averaged evenly); WorkGate reads it. `samples` is 0 until a run has been measured.
  double handOff() const { return handOff_; }
  uint64_t handOffSamples() const { return handOffSamples_; }
  void noteHandOff(double seconds) {
    handOff_ += (seconds - handOff_) * std::max(1.0 / 16.0, 1.0 / static_cast<double>(++handOffSamples_));
  }

  // fn(chunkIndex, begin, end) over [0, n) in chunks of `chunk`; the first exception is rethrown here after all
  // members are done (later chunks are skipped). Chunk k runs on member k % size(), or, with `balance`, on whichever
  // member is free first (for chunks of uneven cost, when cache affinity does not matter).
  template <typename Fn>
  void run(size_t n, size_t chunk, Fn&& fn, bool balance = false) {
    if (n == 0) return;
    if (chunk == 0) chunk = 1;
    const size_t chunks = (n + chunk - 1) / chunk;
    if (size_ == 1 || chunks == 1 || solo_ > 0) {
      if (solo_ > 0) --solo_;
      for (size_t k = 0; k < chunks; ++k) fn(k, k * chunk, std::min(n, k * chunk + chunk));
      return;
    }
    failed_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
    next_.store(0, std::memory_order_relaxed);
    job_ = [&](unsigned m) {
      for (size_t k = balance ? next_.fetch_add(1, std::memory_order_relaxed) : m; k < chunks;
           k = balance ? next_.fetch_add(1, std::memory_order_relaxed) : k + size_) {
        if (failed_.load(std::memory_order_relaxed)) return;
        fn(k, k * chunk, std::min(n, k * chunk + chunk));
      }
    };
    pending_.store(size_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
      if (sleepers_ > 0) wake_.notify_all();
    }
    const auto started = std::chrono::steady_clock::now();
    work(0);
    const auto worked = std::chrono::steady_clock::now();
    for (unsigned spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) backOff(spins);
    job_ = nullptr;
    // When the members keep this thread waiting longer than its own share took (they do not get their cores:
    // another process is busy), the next kSoloRuns runs go on this thread alone, then the team is tried again.
    const double own = std::chrono::duration<double>(worked - started).count();
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - worked).count();
    noteHandOff(waited);
    waitShare_ += (waited / (own + waited + 1e-9) - waitShare_) / 32.0;
    if (waitShare_ > 0.5) {
      solo_ = kSoloRuns;
      waitShare_ = 0.0;
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // One turn of a wait: spin briefly, then yield. When the machine has more runnable threads than cores, the thread
  // waited for may need this very core, and pure spinning would stall both for a whole time slice.
  static void backOff(unsigned spins) {
#if defined(__x86_64__) || defined(__i386__)
    if (spins < kSpins) {
      __builtin_ia32_pause();
      return;
    }
#endif
    std::this_thread::yield();
  }

  void work(unsigned m) {
    try {
      job_(m);
    } catch (...) {
      std::lock_guard<std::mutex> lock(errorMutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }

  void serve(unsigned m) {
    uint64_t seen = 0;
    for (;;) {
      // Wait for the next run: back off (spin, then yield) for up to ~1 ms, then sleep until woken.
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(1000);
      for (unsigned spins = 0; generation_.load(std::memory_order_acquire) == seen; ++spins) {
        backOff(spins);
        if ((spins & 63) == 63 && std::chrono::steady_clock::now() > until) {
          std::unique_lock<std::mutex> lock(mutex_);
          ++sleepers_;
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
          --sleepers_;
          break;
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      work(m);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  static constexpr unsigned kSpins = 2048;     // pause instructions before yielding (some microseconds)
  static constexpr unsigned kSoloRuns = 256;  // runs on the calling thread alone after the members fell behind
  double waitShare_ = 0.0;                    // moving average of the share of a run spent waiting for members
  double handOff_ = 0.0;
  uint64_t handOffSamples_ = 0;
  unsigned solo_ = 0;
  const unsigned size_;
  std::vector<std::thread> members_;
  std::function<void(unsigned)> job_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<unsigned> pending_{0};
  std::atomic<size_t> next_{0};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
  std::mutex errorMutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  unsigned sleepers_ = 0;
  bool stop_ = false;
};

// Chooses, pass by pass, whether a team runs a pass of a kernel or the calling thread runs it alone, from timings on
// this machine: a team saves at most (1 - 1/size) of a pass's work but costs a hand-off (waking the members, waiting
// for the last), which on a quiet machine is some microseconds and on a busy one, where a member waits for a core,
// milliseconds. A kernel of thousands of short dependent steps (the greedy coreset: at 20,000 rows a step is a few
// microseconds of work) would otherwise lose more to the hand-off than the second thread gains. The model: a pass of
// `work` units (rows, say) takes rate * work alone and rate * work / size + handOff on the team. The rate is learnt
// per gate from passes run alone (moving average); the hand-off is the team's own measure (Team::handOff, from
// every run on the team, including the kernel's one-off passes). The team runs a pass when it is expected to be
// faster; every kExplore-th pass near the break-even point takes the other choice, so that the estimates follow the
// machine's load. Passes touch the same chunks either way, so the choice never changes a result. One gate per kind
// of pass (their work units differ); used by the thread that owns the team.
class WorkGate {
 public:
  explicit WorkGate(Team& team) : team_(team) {}

  // fn(chunkIndex, begin, end) over [0, n) in chunks of `chunk`, on the team or on this thread alone (see above).
  template <typename Fn>
  void run(double work, size_t n, size_t chunk, Fn&& fn, bool balance = false) {
    const bool onTeam = chooseTeam(work);
    const auto t0 = std::chrono::steady_clock::now();
    if (onTeam) {
      team_.run(n, chunk, fn, balance);
    } else {
      if (chunk == 0) chunk = 1;
      for (size_t k = 0, begin = 0; begin < n; ++k, begin += chunk) fn(k, begin, std::min(n, begin + chunk));
      recordAlone(work, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }

  // Whether the next pass of `work` units should run on the team.
  bool chooseTeam(double work) {
    if (team_.size() <= 1 || !(work > 0.0)) return false;
    ++passes_;
    if (rateCount_ < kLearn) return false;          // first learn the cost of work alone
    if (team_.handOffSamples() == 0) return true;   // and the team's hand-off, when nothing has measured it yet
    const double saved = rate_ * work * (1.0 - 1.0 / team_.size());
    const double handOff = team_.handOff();
    const bool better = saved > handOff;
    if (passes_ % kExplore == 0 && saved * kExploreRange > handOff && saved < handOff * kExploreRange) return !better;
    return better;
  }

  // A pass of `work` units run alone took `seconds` (the first samples are averaged evenly, later ones with weight
  // kWeight).
  void recordAlone(double work, double seconds) {
    if (!(work > 0.0)) return;
    rate_ += (seconds / work - rate_) * std::max(kWeight, 1.0 / static_cast<double>(++rateCount_));
  }

  double rate() const { return rate_; }

 private:
  static constexpr double kWeight = 1.0 / 16.0;  // of a new timing in the moving average
  static constexpr uint64_t kLearn = 4;          // passes measured alone before the gate chooses
  static constexpr uint64_t kExplore = 32;
  static constexpr double kExploreRange = 16.0;
  Team& team_;
  uint64_t passes_ = 0, rateCount_ = 0;
  double rate_ = 0.0;  // seconds per unit of work on one thread
};

// Runs fn(chunkIndex, begin, end) over [0, n) in chunks of `chunk` items, once, on a team of up to threadCount()
// threads made for the call, chunks claimed as threads become free. The first exception thrown by any chunk is
// rethrown on the caller's thread after all threads are done; remaining chunks are skipped once one has failed.
template <typename Fn>
void parallelChunks(size_t n, size_t chunk, Fn&& fn) {
  if (n == 0) return;
  if (chunk == 0) chunk = 1;
  Team team(static_cast<unsigned>(std::min<size_t>(threadCount(), (n + chunk - 1) / chunk)));
  team.run(n, chunk, fn, true);
}

}  // namespace imiad
