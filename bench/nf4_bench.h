#pragma once

#include <string>
#include <vector>

namespace ptrain::bench {

struct Nf4BenchOptions {
  int64_t rows = 4096, cols = 4096;  // the weight quantized and dequantized
  std::string preset = "1b";         // the QLoRA vs LoRA step
  int64_t seq = 512;
  int steps = 2;     // timed steps after one warm-up step
  bool step = true;  // run the training-step comparison (minutes on 2 cores)
};

// ptrain-bench nf4: NF4 quantize and dequantize throughput against a memcpy of the same bytes
// (one thread each, same run), per dequantization kernel; bits per parameter; and a QLoRA
// forward+backward step of `preset` against the same step with a bf16 base (LoRA r=64, alpha 16,
// every linear layer), with each one's peak RSS.
int run_nf4_bench(const Nf4BenchOptions& options);

}  // namespace ptrain::bench
