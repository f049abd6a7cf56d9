#include "bench/nf4_bench.h"

#include <torch/torch.h>

#include <cstring>
#include <thread>

#include "bench/bench_common.h"
#include "model/llama.h"
#include "peft/lora.h"
#include "quant/nf4.h"
#include "quant/nf4_weight.h"

namespace ptrain::bench {
namespace {

void kernel_throughput(const Nf4BenchOptions& o, const nlohmann::json& machine) {
  const int64_t n = o.rows * o.cols;
  at::Tensor w = (torch::randn({o.rows, o.cols}) * 0.02).to(at::kBFloat16);
  at::Tensor w32 = w.to(at::kFloat);
  const double out_bytes = 2.0 * n;  // bf16
  // Baseline: one thread copying the dequantized output's bytes.
  std::vector<uint8_t> src(static_cast<size_t>(out_bytes)), dst(static_cast<size_t>(out_bytes));
  std::memset(src.data(), 1, src.size());
  std::memset(dst.data(), 2, dst.size());
  const double memcpy_s = best_seconds([&] { std::memcpy(dst.data(), src.data(), src.size()); });
  const double memcpy_gbs = out_bytes / memcpy_s / 1e9;

  for (bool double_quant : {true, false}) {
    Nf4Layout layout(n, double_quant);
    std::vector<uint8_t> buffer(layout.bytes);
    const double quant_s =
        best_seconds([&] { nf4_quantize(w32.data_ptr<float>(), layout, buffer.data()); });
    print_result({{"suite", "nf4"},
                  {"machine", machine},
                  {"op", "quantize"},
                  {"double_quant", double_quant},
                  {"params", n},
                  {"threads", 1},
                  {"gb_per_s", out_bytes / quant_s / 1e9},  // bf16 bytes of the weight quantized
                  {"bits_per_param", layout.bits_per_param()}});
    std::vector<uint16_t> out(n);
    for (const char* kernel : {"avx512", "avx2", "portable"}) {
      if (std::string(kernel) == "avx512" && !__builtin_cpu_supports("avx512bw")) continue;
      if (std::string(kernel) == "avx2" && !__builtin_cpu_supports("avx2")) continue;
      const double s = best_seconds([&] {
        nf4_dequantize_bf16_with(kernel, buffer.data(), layout, 0, layout.blocks, out.data());
      });
      const double gbs = out_bytes / s / 1e9;
      print_result({{"suite", "nf4"},
                    {"machine", machine},
                    {"op", "dequantize_bf16"},
                    {"kernel", kernel},
                    {"selected", std::string(kernel) == nf4_kernel_name()},
                    {"double_quant", double_quant},
                    {"params", n},
                    {"threads", 1},
                    {"gb_per_s", gbs},
                    {"baseline", "memcpy"},
                    {"baseline_gb_per_s", memcpy_gbs},
                    {"vs_baseline", gbs / memcpy_gbs}});
    }
  }
}

struct StepResult {
  double step_s = 0;
  int64_t peak_rss = 0;
  int64_t base_bytes = 0;  // projection weights as held (NF4 buffers or bf16)
  int64_t base_params = 0;
};

// A LoRA training step (forward + backward, activation checkpointing) on a model whose
// projections are NF4 or bf16, built tensor by tensor (never a whole dense copy).
StepResult lora_step(const Nf4BenchOptions& o, bool nf4) {
  LlamaConfig config = llama_preset(o.preset);
  ModelOptions options;
  options.dtype = at::kBFloat16;
  options.nf4_base = nf4;
  options.activation_checkpointing = true;
  LlamaForCausalLM model(config, options);
  model->initialize(0);
  AdapterSpec spec;
  spec.target_linear = true;
  spec.lora.r = 64;
  spec.lora.alpha = 16;
  apply_lora(model, spec);
  StepResult r;
  for (const auto& [name, p] : model->projections()) {
    r.base_params += p->in_features() * p->out_features();
    r.base_bytes += p->quantized() ? p->nf4()->layout.bytes : p->dense().nbytes();
  }
  at::Tensor ids = torch::randint(3, config.vocab_size, {1, o.seq}, torch::kLong);
  PackedBatch batch;
  batch.input_ids = ids;
  batch.position_ids = torch::arange(o.seq, torch::kLong).unsqueeze(0);
  batch.sequence_ids = torch::zeros({1, o.seq}, torch::kLong);
  batch.labels = ids.roll(-1, 1);
  auto step = [&] {
    for (auto& p : model->parameters())
      if (p.grad().defined()) p.mutable_grad() = at::Tensor();
    model->loss_sum(batch).backward();
  };
  step();
  auto start = Clock::now();
  for (int s = 0; s < o.steps; ++s) step();
  r.step_s = seconds_since(start) / o.steps;
  r.peak_rss = peak_rss_bytes();
  return r;
}

}  // namespace

int run_nf4_bench(const Nf4BenchOptions& o) {
  const nlohmann::json machine = machine_json();
  // One thread for the kernel figures (the memcpy baseline is one thread), every core for steps.
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(1);
  kernel_throughput(o, machine);
  at::set_num_threads(threads);
  if (!o.step) return 0;
  // QLoRA first: VmHWM only grows, so the smaller run must come first for both peaks to be its
  // own (the bf16 run's peak is then at least the QLoRA one, and is its own when larger).
  reset_peak_rss();
  StepResult qlora = lora_step(o, true);
  StepResult lora = lora_step(o, false);
  for (const auto* r : {&qlora, &lora}) {
    const bool q = r == &qlora;
    nlohmann::json line = {{"suite", "nf4"},
                           {"machine", machine},
                           {"op", "lora_step"},
                           {"base", q ? "nf4" : "bf16"},
                           {"preset", o.preset},
                           {"seq", o.seq},
                           {"lora_r", 64},
                           {"activation_checkpointing", true},
                           {"threads", threads},
                           {"step_s", r->step_s},
                           {"peak_rss_bytes", r->peak_rss},
                           {"base_params", r->base_params},
                           {"base_bytes", r->base_bytes},
                           {"base_bits_per_param", 8.0 * r->base_bytes / r->base_params}};
    if (q) {
      line["baseline"] = "bf16 base, same step";
      line["baseline_step_s"] = lora.step_s;
      // vs_baseline is a speed ratio like every suite's (>1: faster than the baseline);
      // step_ratio is its inverse, the slowdown the QLoRA target is stated in.
      line["vs_baseline"] = lora.step_s / qlora.step_s;
      line["step_ratio"] = qlora.step_s / lora.step_s;
      line["baseline_peak_rss_bytes"] = lora.peak_rss;
    }
    print_result(line);
  }
  return 0;
}

}  // namespace ptrain::bench
