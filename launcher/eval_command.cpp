#include "launcher/eval_command.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "core/logging.h"
#include "launcher/data_preparation.h"
#include "model/llama_weights.h"
#include "trainer/eval.h"

namespace ptrain {

namespace {

namespace fs = std::filesystem;

bool same_directory(const std::string& a, const std::string& b) {
  std::error_code ec;
  return a == b || fs::equivalent(a, b, ec);
}

// The validation samples of the config's prepared dataset, with their labels, tokenized by the
// evaluated model's tokenizer: a loss only means something over the ids that model reads, so the
// config's base_model (which may be another model, with another vocabulary) is not used for it.
std::vector<TokenSample> config_validation_samples(RankSession& session,
                                                   const ResolvedConfig& config,
                                                   const std::string& model_dir) {
  PTRAIN_CHECK(!config.job.datasets.empty() && config.job.val_set_size > 0,
               "eval without --data evaluates the validation split of the config's datasets: "
               "'{}' needs 'datasets' and a 'val_set_size' > 0",
               config.source);
  JobConfig job = config.job;
  if (!job.base_model.empty() && !same_directory(job.base_model, model_dir))
    session.context().log->info(
        "eval: tokenizing the validation split with the tokenizer of '{}', the model evaluated "
        "(not that of the config's base_model '{}')",
        model_dir, job.base_model);
  job.base_model = model_dir;
  PreparedData prepared = prepare_data(job, session.context(), session.threads());
  return validation_samples(*prepared.dataset);
}

}  // namespace

void register_eval_command(CommandLine& cli) {
  auto options = std::make_shared<EvalCommandOptions>();
  CLI::App* eval = cli.add_job_command(
      "eval",
      "Mean loss and perplexity of a model on pre-tokenized JSONL or the config's validation "
      "split, over all ranks",
      ConfigArgument::kOptional, JobRecord::kNone,
      [options](RankSession& session, const ResolvedConfig& config) {
        return run_eval_command(session, config, *options);
      });
  add_model_options(eval, options->model);
  add_path_option(eval, "--data", options->data,
                  "JSONL, one {\"input_ids\": [...]} per line; omitted: the validation split of "
                  "the config's datasets (val_set_size)",
                  PathKind::kFile);
  eval->add_option("--seq-len", options->seq_len,
                   "Tokens per packed row (longer samples are windowed); 0: 2048, or the model's "
                   "context when shorter");
  eval->add_option("--rows", options->rows, "Packed rows per forward pass")->check(at_least(1));
}

int run_eval_command(RankSession& session, const ResolvedConfig& config,
                     const EvalCommandOptions& options) {
  PTRAIN_CHECK(options.rows >= 1, "--rows: expected >= 1, got {}", options.rows);
  RankContext& ctx = session.context();
  const std::string data_name = options.data.empty()
                                    ? fmt::format("'{}' (validation split)", config.source)
                                    : fmt::format("'{}'", options.data);
  const ModelLoadOptions load = model_load_options(options.model, config);
  // The model first: a model that does not load leaves nothing written (no prepared-data cache).
  LlamaForCausalLM model = load_model(load).model;
  model->eval();
  std::vector<TokenSample> samples = options.data.empty()
                                         ? config_validation_samples(session, config, load.dir)
                                         : read_token_jsonl(options.data);
  const int64_t seq_len = options.seq_len > 0
                              ? options.seq_len
                              : std::min<int64_t>(2048, model->config().max_position_embeddings);
  EvalResult result = evaluate(model, samples, seq_len, options.rows, *ctx.comm);
  // Every rank holds the all-reduced result, so every rank refuses it alike.
  PTRAIN_CHECK(result.tokens > 0,
               "eval: {} has no token to score ({}): a sample needs 2 tokens or more, and labels "
               "other than -100",
               data_name, counted(result.samples, "sample"));
  PTRAIN_CHECK(std::isfinite(result.mean_loss()),
               "eval: the loss on {} is {}: model '{}'{} holds NaN/inf values, or the activations "
               "overflow in {} (try --dtype fp32)",
               data_name, result.mean_loss(), load.dir,
               load.adapter.empty() ? "" : fmt::format(" or adapter '{}'", load.adapter),
               load.dtype);
  if (ctx.rank == 0) {
    nlohmann::json line = {
        {"model", load.dir},
        {"data", options.data.empty() ? config.source + " (validation split)" : options.data},
        {"samples", result.samples},
        {"rows", result.rows},
        {"tokens", result.tokens},
        {"loss", result.mean_loss()},
        {"perplexity", result.perplexity()},
        {"world", ctx.world},
        {"dtype", load.dtype},
        {"load_in_4bit", load.load_in_4bit}};
    if (!load.adapter.empty()) line["adapter"] = load.adapter;
    std::cout << line.dump() << std::endl;
  }
  ctx.log->info("eval: {}, mean loss {:.6f}, perplexity {:.4f}", counted(result.tokens, "token"),
                result.mean_loss(), result.perplexity());
  return 0;
}

}  // namespace ptrain
