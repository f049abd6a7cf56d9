#include "launcher/eval_command.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "launcher/data_preparation.h"
#include "model/llama_weights.h"
#include "trainer/eval.h"

namespace ptrain {

namespace {

// The validation samples of the config's prepared dataset, with their labels. The tokenizer is
// base_model's, or the evaluated model's when the config names no base_model.
std::vector<TokenSample> validation_samples(RankSession& session, const ResolvedConfig& config,
                                            const std::string& model_dir) {
  PTRAIN_CHECK(!config.job.datasets.empty() && config.job.val_set_size > 0,
               "eval without --data evaluates the validation split of the config's datasets: "
               "'{}' needs 'datasets' and a 'val_set_size' > 0",
               config.source);
  JobConfig job = config.job;
  if (job.base_model.empty()) job.base_model = model_dir;
  PreparedData prepared = prepare_data(job, session.context(), session.threads());
  const PreparedDataset& data = *prepared.dataset;
  std::vector<TokenSample> samples;
  for (int64_t i = 0; i < data.val_samples(); ++i) {
    const SampleView view = data.sample(data.val_samples_data()[i]);
    TokenSample sample;
    for (int64_t t = 0; t < view.length; ++t) sample.input_ids.push_back(view.token(t));
    sample.labels = sample_labels(view);
    samples.push_back(std::move(sample));
  }
  return samples;
}

}  // namespace

void register_eval_command(CommandLine& cli) {
  auto options = std::make_shared<EvalCommandOptions>();
  CLI::App* eval = cli.add_job_command(
      "eval",
      "Mean loss and perplexity of a model on pre-tokenized JSONL or the config's validation "
      "split, over all ranks",
      ConfigArgument::kOptional, [options](RankSession& session, const ResolvedConfig& config) {
        return run_eval_command(session, config, *options);
      });
  add_model_options(eval, options->model);
  eval->add_option("--data", options->data,
                   "JSONL, one {\"input_ids\": [...]} per line; omitted: the validation split of "
                   "the config's datasets (val_set_size)");
  eval->add_option("--seq-len", options->seq_len,
                   "Tokens per packed row (longer samples are windowed)");
  eval->add_option("--rows", options->rows, "Packed rows per forward pass");
}

int run_eval_command(RankSession& session, const ResolvedConfig& config,
                     const EvalCommandOptions& options) {
  PTRAIN_CHECK(options.rows >= 1, "--rows: expected >= 1, got {}", options.rows);
  RankContext& ctx = session.context();
  std::vector<TokenSample> samples = options.data.empty()
                                         ? validation_samples(session, config, options.model.dir)
                                         : read_token_jsonl(options.data);
  LlamaForCausalLM model = load_model(options.model).model;
  model->eval();
  EvalResult result = evaluate(model, samples, options.seq_len, options.rows, *ctx.comm);
  if (ctx.rank == 0) {
    nlohmann::json line = {
        {"model", options.model.dir},
        {"data", options.data.empty() ? config.source + " (validation split)" : options.data},
        {"samples", result.samples},
        {"rows", result.rows},
        {"tokens", result.tokens},
        {"loss", result.mean_loss()},
        {"perplexity", result.perplexity()},
        {"world", ctx.world},
        {"dtype", options.model.dtype},
        {"load_in_4bit", options.model.load_in_4bit}};
    if (!options.model.adapter.empty()) line["adapter"] = options.model.adapter;
    std::cout << line.dump() << std::endl;
  }
  ctx.log->info("eval: {} tokens, mean loss {:.6f}, perplexity {:.4f}", result.tokens,
                result.mean_loss(), result.perplexity());
  return 0;
}

}  // namespace ptrain
