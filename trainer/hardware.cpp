#include "trainer/hardware.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>

namespace ptrain {
namespace {

int64_t status_field_bytes(const char* file, const std::string& key) {
  std::ifstream status(file);
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;
  return -1;
}

}  // namespace

double gemm_peak_gflops(int rounds, bool large) {
  return gemm_peak_gflops(c10::Device(c10::kCPU), rounds, large);
}

double gemm_peak_gflops(const c10::Device& device, int rounds, bool large) {
  double best = 0;
  std::vector<int64_t> sizes = {1024, 2048};
  if (large) sizes = {2048, 4096};
  if (!device.is_cpu()) sizes = {4096, 8192};  // a GPU needs larger matmuls to reach its peak
  // Reading one element waits for the device's queued work (no CUDA header needed here).
  auto synchronize = [](const at::Tensor& t) {
    if (!t.is_cpu()) t.view(-1)[0].item<float>();
  };
  for (int64_t n : sizes) {
    at::Tensor a = torch::randn({n, n}).to(device, at::kBFloat16),
               b = torch::randn({n, n}).to(device, at::kBFloat16);
    at::Tensor c = at::matmul(a, b);  // warm-up, and the output buffer
    synchronize(c);
    for (int round = 0; round < rounds; ++round) {
      const auto start = std::chrono::steady_clock::now();
      at::matmul_out(c, a, b);
      synchronize(c);
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, 2.0 * n * n * n / s / 1e9);
    }
  }
  return best;
}

int64_t peak_rss_bytes() {
  return status_field_bytes("/proc/self/status", "VmHWM:");
}

int64_t current_rss_bytes() {
  return status_field_bytes("/proc/self/status", "VmRSS:");
}

void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

int64_t available_memory_bytes() {
  int64_t available = status_field_bytes("/proc/meminfo", "MemAvailable:");
  // A cgroup v2 limit (containers, Slurm's cgroup plugin) binds before the host's memory.
  std::ifstream limit_file("/sys/fs/cgroup/memory.max"),
      usage_file("/sys/fs/cgroup/memory.current");
  std::string limit, usage;
  if (limit_file >> limit && limit != "max" && usage_file >> usage)
    available = std::min<int64_t>(available, std::stoll(limit) - std::stoll(usage));
  return available;
}

}  // namespace ptrain
