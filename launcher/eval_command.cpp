#include "launcher/eval_command.h"

#include <nlohmann/json.hpp>

#include <iostream>

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

int run_eval_command(RankSession& session, const ResolvedConfig& config,
                     const ModelLoadOptions& model_options, const std::string& data,
                     int64_t seq_len, int64_t rows) {
  PTRAIN_CHECK(rows >= 1, "--rows: expected >= 1, got {}", rows);
  RankContext& ctx = session.context();
  std::vector<TokenSample> samples = data.empty()
                                         ? validation_samples(session, config, model_options.dir)
                                         : read_token_jsonl(data);
  LlamaForCausalLM model = load_model(model_options).model;
  model->eval();
  EvalResult result = evaluate(model, samples, seq_len, rows, *ctx.comm);
  if (ctx.rank == 0) {
    nlohmann::json line = {{"model", model_options.dir},
                           {"data", data.empty() ? config.source + " (validation split)" : data},
                           {"samples", result.samples},
                           {"rows", result.rows},
                           {"tokens", result.tokens},
                           {"loss", result.mean_loss()},
                           {"perplexity", result.perplexity()},
                           {"world", ctx.world},
                           {"dtype", model_options.dtype},
                           {"load_in_4bit", model_options.load_in_4bit}};
    if (!model_options.adapter.empty()) line["adapter"] = model_options.adapter;
    std::cout << line.dump() << std::endl;
  }
  ctx.log->info("eval: {} tokens, mean loss {:.6f}, perplexity {:.4f}", result.tokens,
                result.mean_loss(), result.perplexity());
  return 0;
}

}  // namespace ptrain
