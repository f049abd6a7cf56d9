// Prompt rendering: a DatasetRow becomes token ids and labels, and samples are fitted to the
// sequence length.
//
// Labels follow the trainer's convention (TokenSample in trainer/eval.h): they are already
// shifted, labels[t] is the target of position t, i.e. input_ids[t + 1] when token t + 1 is
// learned and -100 otherwise; the last position is always -100. Which tokens are learned:
//   alpaca      [bos] + prompt + output + eos: with train_on_inputs false only the output tokens
//               and the eos; with true every token after bos.
//   completion  [bos] + text + eos: every token after bos.
//   conversation  (chat_template and sharegpt rows) what the chat template renders, see
//               chat_template.h: with train_on_inputs false each assistant turn's content and the
//               marker ending it; with true every token after the first. No bos or eos is added to
//               what the template renders, and the conversation must end with an assistant turn.
// For alpaca and completion, bos is present when the tokenizer's add_bos is set; the tokenizer
// must have an eos id.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"
#include "tokenizer/tokenizer.h"

namespace ptrain {

constexpr int64_t kIgnoreLabel = -100;

struct TokenizedSample {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // same length as input_ids
};

// The Alpaca prompt (FORMATS.md), up to and including "### Response:\n"; an empty input selects
// the variant without "### Input:".
std::string alpaca_prompt(const AlpacaFields& fields);

// Shifted labels from per-token "learned" flags: labels[t] = learned[t + 1] ? ids[t + 1] : -100.
std::vector<int64_t> shifted_labels(const std::vector<int64_t>& input_ids,
                                    const std::vector<bool>& learned);

struct RenderOptions {
  bool train_on_inputs = false;
  // Conversation rows: "chatml", "llama3", "llama2", or "tokenizer_default" for the model's own
  // chat_template (tokenizer_config.json) when it is one of those.
  std::string chat_template = "tokenizer_default";
};

// One row; `source` names the file in errors ("data.jsonl:7: ...").
TokenizedSample render_row(const DatasetRow& row, const std::string& source,
                           const Tokenizer& tokenizer, const RenderOptions& options);

std::vector<TokenizedSample> render_dataset(const Dataset& dataset, const Tokenizer& tokenizer,
                                            const RenderOptions& options);

// What to do with a sample longer than sequence_len: keep its first sequence_len tokens, or drop
// it. "truncate" / "drop"; UserError otherwise.
enum class LengthPolicy { kTruncate, kDrop };
LengthPolicy parse_length_policy(std::string_view name);

struct LengthSummary {
  int64_t kept = 0;       // samples kept, truncated ones included
  int64_t truncated = 0;  // samples cut to sequence_len
  int64_t dropped = 0;    // samples removed
};

// What the length policy did to one sample.
enum class LengthOutcome { kFits, kTruncated, kDropped };

// Applies `policy` to one sample: truncates it in place (as apply_length_policy describes) or
// says it is to be dropped.
LengthOutcome fit_length(TokenizedSample& sample, int64_t sequence_len, LengthPolicy policy);

// Applies `policy` in place, keeping the order of the samples kept. A truncated sample's last
// label becomes -100 (its target was cut off); it is kept even when no learned token is left.
LengthSummary apply_length_policy(std::vector<TokenizedSample>& samples, int64_t sequence_len,
                                  LengthPolicy policy);

}  // namespace ptrain
