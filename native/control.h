// Cancellation and progress for long kernels. Plain C++ (no Node): the glue hands a kernel a RunControl whose
// cancel flag is a 32-bit word that the JavaScript side sets from an AbortSignal; kernels poll it once per block
// and throw Cancelled, so a cancelled call unwinds cleanly through the same path as any other error.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace imiad {

struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("The operation was aborted") {}
};

// A kernel's argument error that slipped past the TypeScript and glue checks; the glue turns it into a RangeError.
struct InvalidArgument : std::invalid_argument {
  std::string code;
  InvalidArgument(std::string codeIn, const std::string& message)
      : std::invalid_argument(message), code(std::move(codeIn)) {}
};

struct RunControl {
  // Nonzero means stop. Read with an atomic load: JavaScript stores to it with Atomics.store from another thread.
  const int32_t* cancelFlag = nullptr;
  // Called from a worker thread with (done, total); may be empty.
  std::function<void(uint64_t, uint64_t)> progress;

  bool cancelled() const {
    return cancelFlag != nullptr && __atomic_load_n(cancelFlag, __ATOMIC_RELAXED) != 0;
  }
  void throwIfCancelled() const {
    if (cancelled()) throw Cancelled();
  }
  void report(uint64_t done, uint64_t total) const {
    if (progress) progress(done, total);
  }
};

}  // namespace imiad
