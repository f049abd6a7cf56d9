#include "data/prompt.h"

#include <fmt/format.h>

#include <utility>

#include "core/error.h"
#include "data/chat_template.h"

namespace ptrain {
namespace {

// Appends `ids`, each learned or not.
void append(std::vector<int64_t>& ids, std::vector<bool>& learned, const std::vector<int64_t>& more,
            bool learn) {
  ids.insert(ids.end(), more.begin(), more.end());
  learned.insert(learned.end(), more.size(), learn);
}

int64_t eos_of(const Tokenizer& tokenizer) {
  PTRAIN_CHECK(tokenizer.eos_id.has_value(),
               "{} has no eos token, which every training sample ends with; give it one "
               "(tokenizer_config.json's \"eos_token\" beside a tokenizer.json)",
               tokenizer.describe());
  return *tokenizer.eos_id;
}

// `encode` of a row's text: what the tokenizer refuses (a tokenizer.json pattern that gives up on
// this text) names the row as well.
template <typename Encode>
auto encode_row(const std::string& source, int64_t line, Encode&& encode) {
  try {
    return encode();
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}:{}: {}", source, line, e.what()));
  }
}

// What the chat template renders, no bos or eos added (chat_template.h).
TokenizedSample render_conversation(const DatasetRow& row, const std::string& source,
                                    const Tokenizer& tokenizer, const RenderOptions& options) {
  const ChatFormat format = resolve_chat_format(options.chat_template, tokenizer);
  const std::vector<ChatPiece> pieces =
      render_chat(row.turns, format, tokenizer, fmt::format("{}:{}: ", source, row.line));
  ChatTokens chat = encode_row(source, row.line, [&] { return tokenize_chat(pieces, tokenizer); });
  if (options.train_on_inputs) chat.learned.assign(chat.learned.size(), true);
  TokenizedSample sample;
  sample.labels = shifted_labels(chat.ids, chat.learned);
  sample.input_ids = std::move(chat.ids);
  return sample;
}

}  // namespace

std::string alpaca_prompt(const AlpacaFields& fields) {
  if (fields.input.empty()) {
    return "Below is an instruction that describes a task. Write a response that appropriately "
           "completes the request.\n\n### Instruction:\n" +
           fields.instruction + "\n\n### Response:\n";
  }
  return "Below is an instruction that describes a task, paired with an input that provides "
         "further context. Write a response that appropriately completes the request.\n\n"
         "### Instruction:\n" +
         fields.instruction + "\n\n### Input:\n" + fields.input + "\n\n### Response:\n";
}

std::vector<int64_t> shifted_labels(const std::vector<int64_t>& input_ids,
                                    const std::vector<bool>& learned) {
  PTRAIN_ASSERT(input_ids.size() == learned.size(), "{} ids, {} flags", input_ids.size(),
                learned.size());
  std::vector<int64_t> labels(input_ids.size(), kIgnoreLabel);
  for (size_t t = 0; t + 1 < input_ids.size(); ++t) {
    if (learned[t + 1]) labels[t] = input_ids[t + 1];
  }
  return labels;
}

TokenizedSample render_row(const DatasetRow& row, const std::string& source,
                           const Tokenizer& tokenizer, const RenderOptions& options) {
  if (row.kind == DatasetRow::Kind::kConversation) {
    return render_conversation(row, source, tokenizer, options);
  }
  const bool train_on_inputs = options.train_on_inputs;
  std::vector<int64_t> ids;
  std::vector<bool> learned;
  if (tokenizer.add_bos && tokenizer.bos_id) append(ids, learned, {*tokenizer.bos_id}, false);
  switch (row.kind) {
    case DatasetRow::Kind::kAlpaca:
      append(
          ids, learned,
          encode_row(source, row.line, [&] { return tokenizer.encode(alpaca_prompt(row.alpaca)); }),
          train_on_inputs);
      append(ids, learned,
             encode_row(source, row.line, [&] { return tokenizer.encode(row.alpaca.output); }),
             true);
      break;
    case DatasetRow::Kind::kCompletion:
      append(ids, learned, encode_row(source, row.line, [&] { return tokenizer.encode(row.text); }),
             true);
      break;
    case DatasetRow::Kind::kConversation:
      PTRAIN_ASSERT(false, "conversation rows are rendered above");
  }
  append(ids, learned, {eos_of(tokenizer)}, true);
  TokenizedSample sample;
  sample.labels = shifted_labels(ids, learned);
  sample.input_ids = std::move(ids);
  return sample;
}

std::vector<TokenizedSample> render_dataset(const Dataset& dataset, const Tokenizer& tokenizer,
                                            const RenderOptions& options) {
  std::vector<TokenizedSample> samples;
  samples.reserve(dataset.rows.size());
  for (const DatasetRow& row : dataset.rows) {
    samples.push_back(render_row(row, dataset.path, tokenizer, options));
  }
  return samples;
}

LengthPolicy parse_length_policy(std::string_view name) {
  if (name == "truncate") return LengthPolicy::kTruncate;
  if (name == "drop") return LengthPolicy::kDrop;
  throw UserError(
      fmt::format("unknown policy '{}' for samples longer than sequence_len (expected truncate "
                  "or drop)",
                  name));
}

LengthOutcome fit_length(TokenizedSample& sample, int64_t sequence_len, LengthPolicy policy) {
  PTRAIN_CHECK(sequence_len > 0, "sequence_len must be positive, got {}", sequence_len);
  const auto limit = static_cast<size_t>(sequence_len);
  if (sample.input_ids.size() <= limit) return LengthOutcome::kFits;
  if (policy == LengthPolicy::kDrop) return LengthOutcome::kDropped;
  sample.input_ids.resize(limit);
  sample.labels.resize(limit);
  sample.labels.back() = kIgnoreLabel;
  return LengthOutcome::kTruncated;
}

LengthSummary apply_length_policy(std::vector<TokenizedSample>& samples, int64_t sequence_len,
                                  LengthPolicy policy) {
  PTRAIN_CHECK(sequence_len > 0, "sequence_len must be positive, got {}", sequence_len);
  LengthSummary summary;
  size_t out = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    TokenizedSample& sample = samples[i];
    const LengthOutcome outcome = fit_length(sample, sequence_len, policy);
    if (outcome == LengthOutcome::kDropped) {
      ++summary.dropped;
      continue;
    }
    if (outcome == LengthOutcome::kTruncated) ++summary.truncated;
    if (out != i) samples[out] = std::move(sample);
    ++out;
  }
  samples.resize(out);
  summary.kept = static_cast<int64_t>(out);
  return summary;
}

}  // namespace ptrain
