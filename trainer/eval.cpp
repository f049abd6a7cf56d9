#include "trainer/eval.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "data/packing.h"

namespace ptrain {
double EvalResult::perplexity() const {
  return std::exp(mean_loss());
}

std::vector<TokenSample> validation_samples(const PreparedDataset& data) {
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

std::vector<TokenSample> read_token_jsonl(const std::string& path) {
  std::error_code ec;
  PTRAIN_CHECK(!std::filesystem::is_directory(path, ec),
               "data file '{}' is a directory; give a JSONL file of token ids", path);
  std::ifstream in(path);
  PTRAIN_CHECK(in.good(), "cannot read data file '{}': {}", path, std::strerror(errno));
  std::vector<TokenSample> samples;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw UserError(fmt::format("{}:{}: not valid JSON: {}", path, number, e.what()));
    }
    // A token id as JSON gives it: too large a number arrives as unsigned or as a double.
    auto ids = [&](const char* key) {
      std::vector<int64_t> out;
      PTRAIN_CHECK(row[key].is_array(), "{}:{}: '{}' must be a list of token ids", path, number,
                   key);
      for (size_t k = 0; k < row[key].size(); ++k) {
        const nlohmann::json& v = row[key][k];
        const bool whole = v.is_number_integer() ||
                           (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>());
        PTRAIN_CHECK(whole, "{}:{}: '{}' holds a non-integer: entry {} is {}", path, number, key, k,
                     v.is_primitive() ? v.dump() : std::string("an ") + v.type_name());
        PTRAIN_CHECK(!v.is_number_float() &&
                         (!v.is_number_unsigned() ||
                          v.get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()}),
                     "{}:{}: '{}' entry {} is {}, out of range for a token id", path, number, key,
                     k, v.dump());
        out.push_back(v.get<int64_t>());
      }
      return out;
    };
    PTRAIN_CHECK(row.is_object() && row.contains("input_ids"),
                 "{}:{}: expected an object with \"input_ids\" (pre-tokenized data)", path, number);
    TokenSample sample;
    sample.origin = fmt::format("{}:{}", path, number);
    sample.input_ids = ids("input_ids");
    PTRAIN_CHECK(!sample.input_ids.empty(), "{}:{}: \"input_ids\" is empty", path, number);
    for (size_t k = 0; k < sample.input_ids.size(); ++k)
      PTRAIN_CHECK(sample.input_ids[k] >= 0,
                   "{}:{}: 'input_ids' entry {} is {}; token ids are >= 0", path, number, k,
                   sample.input_ids[k]);
    if (row.contains("labels")) {
      sample.labels = ids("labels");
      PTRAIN_CHECK(sample.labels.size() == sample.input_ids.size(),
                   "{}:{}: \"labels\" has {} entries but \"input_ids\" has {}", path, number,
                   sample.labels.size(), sample.input_ids.size());
      for (size_t k = 0; k < sample.labels.size(); ++k)
        PTRAIN_CHECK(
            sample.labels[k] >= 0 || sample.labels[k] == -100,
            "{}:{}: 'labels' entry {} is {}; a label is a token id (>= 0) or -100 (no loss)", path,
            number, k, sample.labels[k]);
    }
    samples.push_back(std::move(sample));
  }
  PTRAIN_CHECK(!in.bad(), "cannot read data file '{}': {}", path, std::strerror(errno));
  return samples;
}

EvalResult evaluate(LlamaForCausalLM& model, const std::vector<TokenSample>& samples,
                    int64_t seq_len, int64_t rows_per_step, Communicator& comm) {
  // Checked before anything is sized by them; every rank sees the same values, so every rank
  // refuses together before the first collective.
  PTRAIN_CHECK(seq_len >= 2, "sequence length must be at least 2, got {}", seq_len);
  const int64_t context = model->config().max_position_embeddings;
  PTRAIN_CHECK(seq_len <= context,
               "sequence length (--seq-len) {} exceeds the model's context of {} positions "
               "(config.json max_position_embeddings): positions past it were never trained",
               seq_len, context);
  PTRAIN_CHECK(rows_per_step >= 1, "rows per forward pass (--rows) must be at least 1, got {}",
               rows_per_step);
  const int64_t vocab = model->config().vocab_size;
  std::vector<SampleSpan> windows;
  for (size_t i = comm.rank(); i < samples.size(); i += comm.size()) {
    const TokenSample& sample = samples[i];
    const std::string where =
        sample.origin.empty() ? fmt::format("sample {}", i + 1) : sample.origin;
    for (int64_t id : sample.input_ids)
      PTRAIN_CHECK(id >= 0 && id < vocab,
                   "{}: token id {} is outside the model's vocabulary [0, {}) (vocab_size)", where,
                   id, vocab);
    for (int64_t label : sample.labels)
      PTRAIN_CHECK(label == -100 || (label >= 0 && label < vocab),
                   "{}: label {} is outside the model's vocabulary [0, {}) (vocab_size); a label "
                   "is a token id or -100",
                   where, label, vocab);
    const int64_t n = static_cast<int64_t>(sample.input_ids.size());
    for (int64_t begin = 0; begin < n; begin += seq_len) {
      // A window without labels of its own predicts its next tokens within the window.
      windows.push_back({sample.input_ids.data() + begin,
                         sample.labels.empty() ? nullptr : sample.labels.data() + begin,
                         std::min(seq_len, n - begin)});
    }
  }
  // Windows packed first-fit-decreasing into rows of seq_len tokens, as training rows are.
  std::vector<int64_t> lengths;
  for (const SampleSpan& w : windows) lengths.push_back(w.length);
  PackingOptions packing;
  packing.sequence_len = seq_len;
  packing.group_size = std::max<int64_t>(1, static_cast<int64_t>(lengths.size()));
  const PackedLayout layout = pack_samples(lengths, packing);
  std::vector<std::vector<SampleSpan>> rows(static_cast<size_t>(layout.rows()));
  for (int64_t r = 0; r < layout.rows(); ++r)
    for (int64_t k = layout.row_offsets[r]; k < layout.row_offsets[r + 1]; ++k)
      rows[r].push_back(windows[layout.samples[k]]);
  torch::NoGradGuard no_grad;
  double sums[3] = {0, 0, 0};  // loss, tokens, rows
  for (size_t first = 0; first < rows.size(); first += rows_per_step) {
    std::vector<std::vector<SampleSpan>> step(
        rows.begin() + first, rows.begin() + std::min(rows.size(), first + rows_per_step));
    PackedBatch batch = pack_rows(step, seq_len);
    sums[0] += model->loss_sum(batch).item<double>();
    sums[1] += static_cast<double>(batch.labels.ne(-100).sum().item<int64_t>());
    sums[2] += static_cast<double>(step.size());
  }
  comm.all_reduce(comm_buffer(sums, 3), ReduceOp::kSum);
  EvalResult result;
  result.loss_sum = sums[0];
  result.tokens = static_cast<int64_t>(sums[1]);
  result.rows = static_cast<int64_t>(sums[2]);
  result.samples = static_cast<int64_t>(samples.size());
  return result;
}

}  // namespace ptrain
