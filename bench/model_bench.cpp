#include "bench/model_bench.h"

#include <gperftools/malloc_extension.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include <chrono>
#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "bench/bench_common.h"
#include "model/llama.h"

namespace ptrain::bench {

PackedBatch random_batch(int64_t vocab, int64_t rows, int64_t seq, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor ids = at::randint(vocab, {rows, seq}, generator, torch::kLong);
  PackedBatch batch;
  batch.input_ids = ids;
  batch.position_ids = torch::arange(seq, torch::kLong).repeat({rows, 1});
  batch.sequence_ids = torch::zeros({rows, seq}, torch::kLong);
  batch.labels = ids.roll(-1, 1);
  return batch;
}

double forward_backward_seconds(LlamaForCausalLM& model, const PackedBatch& batch, int steps) {
  auto step = [&] {
    model->zero_grad();
    model->loss_sum(batch).backward();
  };
  step();  // warm-up
  auto start = Clock::now();
  for (int s = 0; s < steps; ++s) step();
  return seconds_since(start) / steps;
}

int run_model_bench(const ModelBenchOptions& options) {
  torch::manual_seed(0);
  at::set_num_threads(options.threads > 0 ? options.threads
                                          : static_cast<int>(std::thread::hardware_concurrency()));
  const nlohmann::json machine = machine_json();
  const double peak = gemm_peak_gflops();
  std::printf("%s\n", nlohmann::json({{"suite", "model"},
                                      {"machine", machine},
                                      {"op", "gemm_peak"},
                                      {"dtype", "bf16"},
                                      {"gemm_peak_gflops", peak},
                                      {"threads", at::get_num_threads()}})
                          .dump()
                          .c_str());
  std::fflush(stdout);
  for (const auto& preset : options.presets) {
    LlamaConfig config = llama_preset(preset);
    ModelOptions model_options;
    model_options.dtype = at::kBFloat16;
    LlamaForCausalLM model(config, model_options);
    model->initialize(0);
    for (int64_t seq : options.seqs) {
      const int64_t rows = std::max<int64_t>(1, options.tokens_per_step / seq);
      const PackedBatch batch = random_batch(config.vocab_size, rows, seq, /*seed=*/0);
      for (bool checkpointing : {false, true}) {
        // Without checkpointing every layer keeps its activations, and rows up to the attention
        // block size also keep their [heads, T, T] probabilities; skip, and say so, when that
        // would not fit in memory.
        const double t = static_cast<double>(seq) * rows;
        const double scores = seq > model_options.attention_block
                                  ? 0.0
                                  : 3.0 * config.num_attention_heads * seq * t * 2;
        const double per_layer =
            scores + t * (12.0 * config.hidden_size + 4.0 * config.intermediate_size) * 2;
        const double estimate = per_layer * (checkpointing ? 1 : config.num_hidden_layers);
        const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
        if (estimate > 0.6 * memory) {
          std::printf("%s\n",
                      nlohmann::json({{"suite", "model"},
                                      {"machine", machine},
                                      {"preset", preset},
                                      {"seq", seq},
                                      {"activation_checkpointing", checkpointing},
                                      {"skipped", fmt::format("activations need about {:.1f} GB of "
                                                              "{:.1f} GB",
                                                              estimate / 1e9, memory / 1e9)}})
                          .dump()
                          .c_str());
          continue;
        }
        model->set_activation_checkpointing(checkpointing);
        reset_peak_rss();
        const double per_step = forward_backward_seconds(model, batch, options.steps);
        const double tokens = static_cast<double>(rows * seq);
        const double flops = 3.0 * config.forward_flops_per_token(seq) * tokens;  // fwd + 2x bwd
        const double gflops = flops / per_step / 1e9;
        nlohmann::json line = {
            {"suite", "model"},
            {"machine", machine},
            {"preset", preset},
            {"mode", "full"},
            {"activation_checkpointing", checkpointing},
            {"dtype", "bf16"},
            {"seq", seq},
            {"rows", rows},
            {"world", 1},
            {"step_s", per_step},
            {"tokens_per_s", tokens / per_step},
            {"gflops", gflops},
            {"gemm_peak_gflops", peak},
            {"mfu", gflops / peak},
            {"baseline", "bf16 GEMM peak"},
            {"baseline_gflops", peak},
            {"vs_baseline", gflops / peak},
            {"peak_rss_bytes", peak_rss_bytes()},
        };
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace ptrain::bench
