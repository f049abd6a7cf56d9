#pragma once

#include <string>
#include <vector>

namespace ptrain::bench {

struct ModelBenchOptions {
  std::vector<std::string> presets = {"tiny", "160m", "1b"};
  std::vector<int64_t> seqs = {512, 2048};
  int64_t tokens_per_step = 0;  // 0: one row of `seq` tokens
  int steps = 3;                // timed steps after one warm-up step
  int threads = 0;              // compute threads; 0: every core
};

// ptrain-bench model: forward+backward of the Llama presets in bf16 on one rank, with and without
// activation checkpointing, beside the bf16 GEMM peak measured at start (a large torch matmul).
int run_model_bench(const ModelBenchOptions& options);

}  // namespace ptrain::bench
