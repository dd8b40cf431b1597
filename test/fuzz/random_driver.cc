// Fallback driver where libFuzzer is unavailable (no clang): feeds LLVMFuzzerTestOneInput deterministic
// pseudo-random inputs for a bounded time (first argument, seconds).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 30.0;
  std::mt19937 gen(12345);
  std::vector<uint8_t> input;
  const auto start = std::chrono::steady_clock::now();
  uint64_t runs = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    input.resize(gen() % 2048);
    for (auto& b : input) b = static_cast<uint8_t>(gen());
    LLVMFuzzerTestOneInput(input.data(), input.size());
    ++runs;
  }
  std::printf("random driver: %llu runs in %.0f s, no failure\n", static_cast<unsigned long long>(runs), seconds);
  return 0;
}
