#pragma once

#include <string>
#include <vector>

#include "model/llama.h"

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

// `rows` packed rows of `seq` random ids (one sample per row), labels the next id.
PackedBatch random_batch(int64_t vocab, int64_t rows, int64_t seq, uint64_t seed);

// Mean seconds of one forward+backward of `model` (zero_grad, loss_sum, backward) on `batch` over
// `steps` timed steps after one warm-up step.
double forward_backward_seconds(LlamaForCausalLM& model, const PackedBatch& batch, int steps);

}  // namespace ptrain::bench
