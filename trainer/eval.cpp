#include "trainer/eval.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "core/error.h"

namespace ptrain {
namespace {

struct Window {
  const TokenSample* sample;
  int64_t begin;
  int64_t length;
};

// Packs windows first-fit into rows of seq_len tokens.
std::vector<std::vector<Window>> pack_rows(const std::vector<Window>& windows, int64_t seq_len) {
  std::vector<std::vector<Window>> rows;
  std::vector<int64_t> used;
  for (const auto& w : windows) {
    size_t r = 0;
    while (r < rows.size() && used[r] + w.length > seq_len) ++r;
    if (r == rows.size()) {
      rows.emplace_back();
      used.push_back(0);
    }
    rows[r].push_back(w);
    used[r] += w.length;
  }
  return rows;
}

PackedBatch make_batch(const std::vector<std::vector<Window>>& rows, int64_t seq_len) {
  const int64_t b = static_cast<int64_t>(rows.size());
  PackedBatch batch;
  batch.input_ids = torch::zeros({b, seq_len}, torch::kLong);
  batch.position_ids = torch::zeros({b, seq_len}, torch::kLong);
  batch.sequence_ids = torch::full({b, seq_len}, -1, torch::kLong);
  batch.labels = torch::full({b, seq_len}, -100, torch::kLong);
  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto pos = batch.position_ids.accessor<int64_t, 2>();
  auto seq = batch.sequence_ids.accessor<int64_t, 2>();
  auto lab = batch.labels.accessor<int64_t, 2>();
  for (int64_t r = 0; r < b; ++r) {
    int64_t t = 0;
    for (size_t s = 0; s < rows[r].size(); ++s) {
      const Window& w = rows[r][s];
      const auto& in = w.sample->input_ids;
      for (int64_t i = 0; i < w.length; ++i, ++t) {
        const int64_t at = w.begin + i;
        ids[r][t] = in[at];
        pos[r][t] = i;
        seq[r][t] = static_cast<int64_t>(s);
        if (!w.sample->labels.empty()) {
          lab[r][t] = w.sample->labels[at];
        } else if (i + 1 < w.length) {
          lab[r][t] = in[at + 1];
        }
      }
    }
  }
  return batch;
}

}  // namespace

double EvalResult::perplexity() const { return std::exp(mean_loss()); }

std::vector<TokenSample> read_token_jsonl(const std::string& path) {
  std::ifstream in(path);
  PTRAIN_CHECK(in.good(), "cannot read data file '{}'", path);
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
    auto ids = [&](const char* key) {
      std::vector<int64_t> out;
      PTRAIN_CHECK(row[key].is_array(), "{}:{}: '{}' must be a list of token ids", path, number, key);
      for (const auto& v : row[key]) {
        PTRAIN_CHECK(v.is_number_integer(), "{}:{}: '{}' holds a non-integer", path, number, key);
        out.push_back(v.get<int64_t>());
      }
      return out;
    };
    PTRAIN_CHECK(row.is_object() && row.contains("input_ids"),
                 "{}:{}: expected an object with \"input_ids\" (pre-tokenized data)", path, number);
    TokenSample sample;
    sample.input_ids = ids("input_ids");
    PTRAIN_CHECK(!sample.input_ids.empty(), "{}:{}: \"input_ids\" is empty", path, number);
    if (row.contains("labels")) {
      sample.labels = ids("labels");
      PTRAIN_CHECK(sample.labels.size() == sample.input_ids.size(),
                   "{}:{}: \"labels\" has {} entries but \"input_ids\" has {}", path, number,
                   sample.labels.size(), sample.input_ids.size());
    }
    samples.push_back(std::move(sample));
  }
  return samples;
}

EvalResult evaluate(LlamaForCausalLM& model, const std::vector<TokenSample>& samples,
                    int64_t seq_len, int64_t rows_per_step, Communicator& comm) {
  PTRAIN_CHECK(seq_len >= 2, "sequence length must be at least 2, got {}", seq_len);
  const int64_t vocab = model->config().vocab_size;
  std::vector<Window> windows;
  for (size_t i = comm.rank(); i < samples.size(); i += comm.size()) {
    for (int64_t id : samples[i].input_ids)
      PTRAIN_CHECK(id >= 0 && id < vocab, "sample {} has token id {} outside the vocabulary of {}",
                   i + 1, id, vocab);
    const int64_t n = static_cast<int64_t>(samples[i].input_ids.size());
    for (int64_t begin = 0; begin < n; begin += seq_len)
      windows.push_back({&samples[i], begin, std::min(seq_len, n - begin)});
  }
  const auto rows = pack_rows(windows, seq_len);
  torch::NoGradGuard no_grad;
  double sums[3] = {0, 0, 0};  // loss, tokens, rows
  for (size_t first = 0; first < rows.size(); first += rows_per_step) {
    std::vector<std::vector<Window>> step(rows.begin() + first,
                                          rows.begin() + std::min(rows.size(), first + rows_per_step));
    PackedBatch batch = make_batch(step, seq_len);
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
