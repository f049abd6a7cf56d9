// What this rank's machine can do and is using: the bf16 GEMM peak MFU is judged against, and the
// process's resident memory. Shared by the training loop and ptrain-bench.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

namespace ptrain {

// bf16 GEMM throughput of this process's cores: the best of `rounds` square matmuls of each of two
// sizes (2048 and 4096 when `large`, else 1024 and 2048; the best, since MFU must be judged against
// what the hardware demonstrably reaches).
double gemm_peak_gflops(int rounds = 8, bool large = true);
// The same on `device` (a GPU's figure for device cuda:N; the CPU's for the CPU), synchronising
// with the device around each timed matmul.
double gemm_peak_gflops(const c10::Device& device, int rounds, bool large);

// Peak resident memory (Linux VmHWM) since the last reset_peak_rss(), which asks the kernel to
// restart the count (/proc/self/clear_refs; not every kernel honours it, see benchmarks.md).
int64_t peak_rss_bytes();
void reset_peak_rss();
// Resident memory now (VmRSS).
int64_t current_rss_bytes();
// Memory this process could still get: MemAvailable of /proc/meminfo, capped by a cgroup limit.
int64_t available_memory_bytes();

}  // namespace ptrain
