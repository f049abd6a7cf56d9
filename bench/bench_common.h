// Shared pieces of ptrain-bench suites: the machine description every result line carries.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>

namespace ptrain::bench {

// {"cores": N, "cpu": "model name"} of this host.
nlohmann::json machine_json();

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start);

// Prints one result line and flushes it (a crash later in the suite keeps the lines so far).
void print_result(const nlohmann::json& line);

// Best-of-N seconds of `fn`: at least 3 runs, and at least `min_seconds` of them in all.
template <class Fn>
double best_seconds(Fn fn, double min_seconds = 1.0) {
  double best = 1e30, total = 0;
  for (int i = 0; i < 3 || total < min_seconds; ++i) {
    auto start = Clock::now();
    fn();
    const double s = seconds_since(start);
    best = s < best ? s : best;
    total += s;
  }
  return best;
}

// bf16 GEMM throughput of this machine: the best of many large square matmuls (the best, since
// MFU must be judged against what the hardware demonstrably reaches).
double gemm_peak_gflops();

// Peak resident memory (Linux VmHWM) since the last reset_peak_rss(), which asks the kernel to
// restart the count (/proc/self/clear_refs; not every kernel honours it, see benchmarks.md).
int64_t peak_rss_bytes();
void reset_peak_rss();

}  // namespace ptrain::bench
