// Shared pieces of ptrain-bench suites: the machine description every result line carries.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>

#include "trainer/hardware.h"

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

// The bf16 GEMM peak and the peak RSS are the training loop's too (trainer/hardware.h).
using ::ptrain::gemm_peak_gflops;
using ::ptrain::peak_rss_bytes;
using ::ptrain::reset_peak_rss;

}  // namespace ptrain::bench
