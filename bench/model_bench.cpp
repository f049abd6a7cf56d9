#include "bench/model_bench.h"

#include <sys/resource.h>

#include <chrono>
#include <thread>
#include <cstdio>

#include "bench/bench_common.h"
#include "trainer/model/llama.h"

namespace ptrain::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// bf16 GEMM throughput of this machine: the best of several large square matmuls.
double gemm_peak_gflops() {
  const int64_t n = 2048;
  at::Tensor a = torch::randn({n, n}).to(at::kBFloat16), b = torch::randn({n, n}).to(at::kBFloat16);
  at::matmul(a, b);  // warm-up
  double best = 0;
  for (int round = 0; round < 5; ++round) {
    auto start = Clock::now();
    at::matmul(a, b);
    best = std::max(best, 2.0 * n * n * n / seconds_since(start) / 1e9);
  }
  return best;
}

int64_t peak_rss_bytes() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

int run_model_bench(const ModelBenchOptions& options) {
  torch::manual_seed(0);
  at::set_num_threads(options.threads > 0 ? options.threads
                                          : static_cast<int>(std::thread::hardware_concurrency()));
  const nlohmann::json machine = machine_json();
  const double peak = gemm_peak_gflops();
  std::printf("%s\n", nlohmann::json({{"suite", "model"}, {"machine", machine}, {"op", "gemm_peak"},
                                      {"dtype", "bf16"}, {"gemm_peak_gflops", peak},
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
      at::Tensor ids = torch::randint(config.vocab_size, {rows, seq}, torch::kLong);
      PackedBatch batch;
      batch.input_ids = ids;
      batch.position_ids = torch::arange(seq, torch::kLong).repeat({rows, 1});
      batch.sequence_ids = torch::zeros({rows, seq}, torch::kLong);
      batch.labels = ids.roll(-1, 1);
      for (bool checkpointing : {false, true}) {
        model->set_activation_checkpointing(checkpointing);
        auto step = [&] {
          model->zero_grad();
          model->loss_sum(batch).backward();
        };
        step();  // warm-up
        auto start = Clock::now();
        for (int s = 0; s < options.steps; ++s) step();
        const double per_step = seconds_since(start) / options.steps;
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
