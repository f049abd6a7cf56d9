#include "launcher/eval_command.h"

#include <nlohmann/json.hpp>

#include <iostream>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "trainer/eval.h"
#include "trainer/model/llama_weights.h"

namespace ptrain {

int run_eval_command(RankSession& session, const std::string& model_dir, const std::string& data,
                     int64_t seq_len, int64_t rows, const std::string& dtype) {
  PTRAIN_CHECK(dtype == "bf16" || dtype == "fp32", "--dtype: expected bf16 or fp32, got '{}'",
               dtype);
  PTRAIN_CHECK(rows >= 1, "--rows: expected >= 1, got {}", rows);
  RankContext& ctx = session.context();
  ModelOptions options;
  options.dtype = dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  LlamaForCausalLM model(load_llama_config(model_dir), options);
  load_llama_weights(model, SafetensorsModel(model_dir));
  std::vector<TokenSample> samples = read_token_jsonl(data);
  EvalResult result = evaluate(model, samples, seq_len, rows, *ctx.comm);
  if (ctx.rank == 0) {
    nlohmann::json line = {{"model", model_dir},
                           {"data", data},
                           {"samples", result.samples},
                           {"rows", result.rows},
                           {"tokens", result.tokens},
                           {"loss", result.mean_loss()},
                           {"perplexity", result.perplexity()},
                           {"world", ctx.world},
                           {"dtype", dtype}};
    std::cout << line.dump() << std::endl;
  }
  ctx.log->info("eval: {} tokens, mean loss {:.6f}, perplexity {:.4f}", result.tokens,
                result.mean_loss(), result.perplexity());
  return 0;
}

}  // namespace ptrain
