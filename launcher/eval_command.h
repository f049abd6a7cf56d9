#pragma once

#include <cstdint>
#include <string>

#include "launcher/model_loader.h"
#include "launcher/rank_session.h"

namespace ptrain {

// `ptrain eval`: loads the model on every rank, evaluates data spread over the ranks, and prints
// one JSON line (loss, perplexity, tokens, ...) on rank 0. Collective. The data is the
// pre-tokenized JSONL `data`, or (when `data` is empty) the validation split of the config's
// prepared dataset (built first when needed, as `ptrain preprocess` does), with its labels.
int run_eval_command(RankSession& session, const ResolvedConfig& config,
                     const ModelLoadOptions& model, const std::string& data, int64_t seq_len,
                     int64_t rows);

}  // namespace ptrain
