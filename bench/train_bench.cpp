#include "bench/train_bench.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "bench/bench_common.h"
#include "bench/model_bench.h"
#include "core/config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "data/sampler.h"
#include "launcher/job_options.h"
#include "launcher/model_loader.h"
#include "launcher/model_tools.h"
#include "tokenizer/tokenizer.h"

namespace ptrain::bench {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string mode;  // full | lora | qlora
  std::string preset;
};

Case parse_case(const std::string& text) {
  const auto colon = text.find(':');
  PTRAIN_CHECK(colon != std::string::npos,
               "--cases: expected mode:preset (e.g. qlora:1b), got '{}'", text);
  Case c{text.substr(0, colon), text.substr(colon + 1)};
  PTRAIN_CHECK(c.mode == "full" || c.mode == "lora" || c.mode == "qlora",
               "--cases '{}': the mode must be full, lora or qlora", text);
  return c;
}

// Completion rows of random words (the byte tokenizer reads about one token per byte), each a
// third to two thirds of `seq` tokens, so packing fills every row of `seq` tokens.
void write_text_data(const std::string& path, int rows, int64_t seq) {
  static const char* kWords[] = {"apple", "river", "stone", "cloud", "lamp",  "tiger",
                                 "honey", "north", "quiet", "green", "seven", "paper"};
  uint64_t draws = 0;
  auto next = [&] { return splitmix64_output(12345, draws++); };
  std::string out;
  for (int r = 0; r < rows; ++r) {
    std::string text;
    // About 6 bytes per word with its space.
    const int64_t words =
        seq / 18 + static_cast<int64_t>(next() % static_cast<uint64_t>(seq / 18 + 1));
    for (int64_t w = 0; w < words; ++w) text += std::string(w ? " " : "") + kWords[next() % 12];
    out += nlohmann::json{{"text", text}}.dump() + "\n";
  }
  write_file_atomic(path, out);
}

std::string job_yaml(const Case& c, const std::string& model_dir, const std::string& data,
                     const std::string& prepared, const std::string& output_dir,
                     const TrainBenchOptions& o) {
  std::string adapter;
  if (c.mode != "full")
    adapter = fmt::format(
        "adapter: {}\nload_in_4bit: {}\nlora_r: 16\nlora_alpha: 32\n"
        "lora_target_linear: true\n",
        c.mode, c.mode == "qlora" ? "true" : "false");
  return fmt::format(
      "base_model: {}\n{}datasets:\n  - path: {}\n    type: completion\n"
      "dataset_prepared_path: {}\nval_set_size: 0\nsequence_len: {}\nsample_packing: true\n"
      "pad_to_sequence_len: true\nmicro_batch_size: {}\ngradient_accumulation_steps: 1\n"
      "max_steps: {}\nlearning_rate: {}\nbf16: true\ngradient_checkpointing: true\n"
      "output_dir: {}\nlogging_steps: 1\nseed: 0\ndevice: cpu\n",
      model_dir, adapter, data, prepared, o.seq, o.micro_batch_size, o.warmup_steps + o.steps,
      c.mode == "full" ? "1e-5" : "1e-4", output_dir);
}

// What one run's metrics.jsonl says about its timed steps.
struct RunFigures {
  double step_s = 0, learned_tokens_per_s = 0, mfu = 0, exposed_comm_fraction = 0;
  double gemm_peak_gflops = 0;
  int64_t peak_rss_bytes = 0, ideal_bytes = 0;
  int timed = 0;
};

RunFigures read_metrics(const std::string& path, int warmup) {
  std::ifstream in(path);
  PTRAIN_CHECK(in.good(), "cannot read '{}'", path);
  RunFigures f;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("type") == "start") {
      f.gemm_peak_gflops = j.at("gemm_peak_gflops").get<double>();
      f.ideal_bytes = j.at("ideal_bytes").get<int64_t>();
    } else if (j.at("type") == "step") {
      f.peak_rss_bytes = std::max(f.peak_rss_bytes, j.at("peak_rss_bytes").get<int64_t>());
      if (j.at("step").get<int>() <= warmup) continue;
      ++f.timed;
      f.step_s += j.at("step_s").get<double>();
      f.learned_tokens_per_s += j.at("tokens_per_s").get<double>();
      f.mfu += j.at("mfu").get<double>();
      f.exposed_comm_fraction += j.at("exposed_comm_fraction").get<double>();
    }
  }
  PTRAIN_CHECK(f.timed > 0, "'{}' has no timed steps", path);
  for (double* v : {&f.step_s, &f.learned_tokens_per_s, &f.mfu, &f.exposed_comm_fraction})
    *v /= f.timed;
  return f;
}

// The baseline: the same model (NF4 base and LoRA adapters for qlora) and the same rows per step,
// forward+backward only (no sharding, no optimizer, no data pipeline), in this process on every
// core.
double bare_step_seconds(const Case& c, const std::string& model_dir, const std::string& yaml,
                         const TrainBenchOptions& o) {
  const ResolvedConfig config = load_config_text(yaml, "train bench job");
  ModelLoadOptions load;
  load.dir = model_dir;
  load.load_in_4bit = c.mode == "qlora";
  LlamaForCausalLM model = load_model(load).model;
  model->set_activation_checkpointing(true);
  if (const auto adapter = adapter_spec_from_config(config.job)) apply_lora(model, *adapter);
  const PackedBatch batch =
      random_batch(model->config().vocab_size, o.micro_batch_size, o.seq, /*seed=*/0);
  return forward_backward_seconds(model, batch, o.steps);
}

std::string self_directory() {
  return fs::read_symlink("/proc/self/exe").parent_path().string();
}

}  // namespace

int run_train_bench(const TrainBenchOptions& options) {
  const nlohmann::json machine = machine_json();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::string work = options.work_dir;
  if (work.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/ptrain-bench-train-XXXXXX";
    PTRAIN_CHECK(::mkdtemp(pattern.data()) != nullptr, "cannot create a directory under {}",
                 pattern);
    work = pattern;
  }
  fs::create_directories(work);
  const std::string ptrain = self_directory() + "/ptrain";
  PTRAIN_CHECK(fs::exists(ptrain), "ptrain-bench train runs '{}', which does not exist", ptrain);
  const std::string data = work + "/text.jsonl";
  write_text_data(data, 400, options.seq);

  for (const std::string& text : options.cases) {
    const Case c = parse_case(text);
    const std::string model_dir = work + "/" + c.preset;
    if (!fs::exists(model_dir + "/config.json")) {
      InitModelOptions init;
      init.preset = c.preset;
      init.out_dir = model_dir;
      write_random_llama_model(init);
      write_file_atomic(model_dir + "/tokenizer_config.json", byte_tokenizer_config_json());
    }
    const std::string prepared = work + "/prepared";
    at::set_num_threads(static_cast<int>(cores));
    const double bare_s = bare_step_seconds(
        c, model_dir, job_yaml(c, model_dir, data, prepared, work + "/unused", options), options);
    const double bare_tokens_per_s =
        static_cast<double>(options.micro_batch_size * options.seq) / bare_s;

    // The prepared-data cache first (shared by every world size), so no run's peak RSS includes
    // tokenizing.
    const std::string prepare_config = work + "/prepare.yaml";
    write_file_atomic(prepare_config,
                      job_yaml(c, model_dir, data, prepared, work + "/prepare-out", options));
    const std::string prepare = fmt::format("{} preprocess --config {} > {}/prepare.log 2>&1",
                                            ptrain, prepare_config, work);
    PTRAIN_CHECK(std::system(prepare.c_str()) == 0, "'{}' failed; see {}/prepare.log", prepare,
                 work);
    std::vector<int> worlds = options.worlds;
    std::sort(worlds.begin(), worlds.end());  // the 1-rank run first: scaling's reference
    std::optional<double> one_rank_tokens_per_s;
    for (int world : worlds) {
      const std::string run = fmt::format("{}/run-{}-{}-np{}", work, c.mode, c.preset, world);
      fs::remove_all(run);
      fs::create_directories(run);
      const std::string config = run + "/job.yaml";
      write_file_atomic(config, job_yaml(c, model_dir, data, prepared, run + "/out", options));
      // --bind-to none: Open MPI binds up to 2 ranks to one core each, which would give a single
      // rank one core while the baseline has them all.
      const std::string command = fmt::format(
          "{} --oversubscribe --bind-to none {}-np {} {} train --config {} > {}/log.txt 2>&1",
          options.mpirun, ::getuid() == 0 ? "--allow-run-as-root " : "", world, ptrain, config,
          run);
      const int status = std::system(command.c_str());
      PTRAIN_CHECK(status == 0, "'{}' failed (status {}); see {}/log.txt", command, status, run);
      const RunFigures f = read_metrics(run + "/out/metrics.jsonl", options.warmup_steps);
      const double tokens_per_s =
          static_cast<double>(world * options.micro_batch_size * options.seq) / f.step_s;
      if (world == 1) one_rank_tokens_per_s = tokens_per_s;
      nlohmann::json line = {
          {"suite", "train"},
          {"machine", machine},
          {"preset", c.preset},
          {"mode", c.mode},
          {"seq", options.seq},
          {"world", world},
          {"rows_per_step", world * options.micro_batch_size},
          {"timed_steps", f.timed},
          {"step_s", f.step_s},
          {"tokens_per_s", tokens_per_s},
          {"learned_tokens_per_s", f.learned_tokens_per_s},
          {"gflops", f.mfu * f.gemm_peak_gflops * world},
          {"mfu", f.mfu},
          {"gemm_peak_gflops", f.gemm_peak_gflops},
          {"exposed_comm_fraction", f.exposed_comm_fraction},
          {"peak_rss_bytes", f.peak_rss_bytes},
          {"ideal_bytes", f.ideal_bytes},
          {"rss_vs_ideal", static_cast<double>(f.peak_rss_bytes) / f.ideal_bytes},
          {"baseline", "bare forward+backward of the same model and rows per step, 1 process"},
          {"baseline_tokens_per_s", bare_tokens_per_s},
          {"vs_baseline", tokens_per_s / bare_tokens_per_s},
      };
      if (one_rank_tokens_per_s) line["scaling"] = tokens_per_s / *one_rank_tokens_per_s;
      print_result(line);
    }
  }
  if (!options.keep && options.work_dir.empty()) fs::remove_all(work);
  return 0;
}

}  // namespace ptrain::bench
