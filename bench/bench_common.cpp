#include "bench/bench_common.h"

#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

namespace ptrain::bench {

nlohmann::json machine_json() {
  std::string cpu = "unknown";
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) cpu = line.substr(colon + 2);
      break;
    }
  }
  return {{"cores", std::thread::hardware_concurrency()}, {"cpu", cpu}};
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// bf16 GEMM throughput of this machine: the best of many large square matmuls (the best, since
// MFU must be judged against what the hardware demonstrably reaches).
double gemm_peak_gflops() {
  double best = 0;
  for (int64_t n : {2048, 4096}) {
    at::Tensor a = torch::randn({n, n}).to(at::kBFloat16),
               b = torch::randn({n, n}).to(at::kBFloat16);
    at::Tensor c = at::matmul(a, b);  // warm-up, and the output buffer
    for (int round = 0; round < 8; ++round) {
      auto start = Clock::now();
      at::matmul_out(c, a, b);
      best = std::max(best, 2.0 * n * n * n / seconds_since(start) / 1e9);
    }
  }
  return best;
}

// Peak resident memory since the last reset_peak_rss() (Linux VmHWM).
int64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return -1;
}

// Starts a new peak: each configuration reports its own, not the largest one before it.
void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

void print_result(const nlohmann::json& line) {
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

}  // namespace ptrain::bench
