// Evaluation of a causal LM on pre-tokenized data: mean loss and perplexity over every labelled
// token, with the samples spread over the ranks of a communicator.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/prepared_data.h"
#include "model/llama.h"
#include "parallel/communicator.h"

namespace ptrain {

// One sample: token ids and, optionally, per-token labels (already shifted; -100 = no loss).
struct TokenSample {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // empty: the next token of the sample at every position
  std::string origin;           // where it was read ("data.jsonl:12"), for messages; may be empty
};

// The validation split of a prepared dataset, with its labels (the learned tokens' targets).
std::vector<TokenSample> validation_samples(const PreparedDataset& data);

// Reads JSONL with one object per line: {"input_ids": [...]} and optionally "labels": [...] of the
// same length. Blank lines are skipped. UserError naming the file and line otherwise.
std::vector<TokenSample> read_token_jsonl(const std::string& path);

struct EvalResult {
  double loss_sum = 0;  // summed token cross-entropy (nats)
  int64_t tokens = 0;   // labelled tokens
  int64_t samples = 0;
  int64_t rows = 0;  // packed rows evaluated
  double mean_loss() const { return tokens ? loss_sum / static_cast<double>(tokens) : 0.0; }
  double perplexity() const;
};

// Rank r evaluates samples r, r + world, ...: samples longer than `seq_len` are split into
// consecutive windows, windows are packed first-fit-decreasing (packing.h) into rows of `seq_len`
// tokens, `rows_per_step` rows at a time. Loss sums and counts are all-reduced, so every rank
// returns the global result. UserError (on every rank, before any collective) when seq_len is
// below 2 or beyond the model's max_position_embeddings, or rows_per_step below 1.
EvalResult evaluate(LlamaForCausalLM& model, const std::vector<TokenSample>& samples,
                    int64_t seq_len, int64_t rows_per_step, Communicator& comm);

}  // namespace ptrain
