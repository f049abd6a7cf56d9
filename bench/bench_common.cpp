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

void print_result(const nlohmann::json& line) {
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

}  // namespace ptrain::bench
