// `ptrain eval`: loads the model on every rank, evaluates data spread over the ranks, and prints
// one JSON line (loss, perplexity, tokens, ...) on rank 0. Collective. The model is --model, else
// the config's base_model; load_in_4bit likewise (model_load_options()). The data is the
// pre-tokenized JSONL `data`, or (when `data` is empty) the validation split of the config's
// prepared dataset (built first when needed, as `ptrain preprocess` does, but tokenized with the
// evaluated model's tokenizer), with its labels. Data with no token to score (empty, rows of one
// token, every label -100) and a loss that is not finite are UserErrors naming the data and the
// model, not a loss of 0 or null.
#pragma once

#include <cstdint>
#include <string>

#include "launcher/model_loader.h"
#include "launcher/ptrain_commands.h"
#include "launcher/rank_session.h"

namespace ptrain {

struct EvalCommandOptions {
  ModelFlags model;  // --model (else the config's base_model), --dtype, --load-in-4bit, --adapter
  std::string data;  // pre-tokenized JSONL; empty: the config's validation split
  int64_t seq_len = 0;  // 0: min(2048, the model's max_position_embeddings)
  int64_t rows = 1;     // packed rows per forward pass
};

void register_eval_command(CommandLine& cli);

int run_eval_command(RankSession& session, const ResolvedConfig& config,
                     const EvalCommandOptions& options);

}  // namespace ptrain
