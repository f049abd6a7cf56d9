#pragma once

#include <cstdint>
#include <string>

#include "launcher/model_loader.h"
#include "launcher/rank_session.h"

namespace ptrain {

// `ptrain eval`: loads the model on every rank, evaluates the pre-tokenized JSONL spread over the
// ranks, and prints one JSON line (loss, perplexity, tokens, ...) on rank 0. Collective.
int run_eval_command(RankSession& session, const ModelLoadOptions& model, const std::string& data,
                     int64_t seq_len, int64_t rows);

}  // namespace ptrain
