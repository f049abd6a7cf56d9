#include "launcher/eval_command.h"

#include <nlohmann/json.hpp>

#include <iostream>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "trainer/eval.h"
#include "trainer/model/llama_weights.h"

namespace ptrain {

int run_eval_command(RankSession& session, const ModelLoadOptions& model_options,
                     const std::string& data, int64_t seq_len, int64_t rows) {
  PTRAIN_CHECK(rows >= 1, "--rows: expected >= 1, got {}", rows);
  RankContext& ctx = session.context();
  LlamaForCausalLM model = load_model(model_options).model;
  model->eval();
  std::vector<TokenSample> samples = read_token_jsonl(data);
  EvalResult result = evaluate(model, samples, seq_len, rows, *ctx.comm);
  if (ctx.rank == 0) {
    nlohmann::json line = {
        {"model", model_options.dir},        {"data", data},
        {"samples", result.samples},         {"rows", result.rows},
        {"tokens", result.tokens},           {"loss", result.mean_loss()},
        {"perplexity", result.perplexity()}, {"world", ctx.world},
        {"dtype", model_options.dtype},      {"load_in_4bit", model_options.load_in_4bit}};
    if (!model_options.adapter.empty()) line["adapter"] = model_options.adapter;
    std::cout << line.dump() << std::endl;
  }
  ctx.log->info("eval: {} tokens, mean loss {:.6f}, perplexity {:.4f}", result.tokens,
                result.mean_loss(), result.perplexity());
  return 0;
}

}  // namespace ptrain
