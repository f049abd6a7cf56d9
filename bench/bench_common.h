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

// bf16 GEMM throughput of this machine: the best of many large square matmuls (the best, since
// MFU must be judged against what the hardware demonstrably reaches).
double gemm_peak_gflops();

// Peak resident memory (Linux VmHWM) since the last reset_peak_rss(), which asks the kernel to
// restart the count (/proc/self/clear_refs; not every kernel honours it, see benchmarks.md).
int64_t peak_rss_bytes();
void reset_peak_rss();

}  // namespace ptrain::bench
