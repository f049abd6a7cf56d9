#include "data/train_batches.h"

#include <algorithm>

#include "core/error.h"

namespace ptrain {

TrainBatches::TrainBatches(const PreparedDataset& data, int64_t micro_batch_size, int rank,
                           int world, uint64_t seed, bool pad_to_sequence_len)
    : data_(data),
      sampler_(data.train_rows(), micro_batch_size, rank, world, seed),
      fixed_width_(data.sample_packing() || pad_to_sequence_len) {}

std::vector<int64_t> TrainBatches::next_rows() {
  return sampler_.next();
}

RowBatch TrainBatches::next() {
  const std::vector<int64_t> rows = next_rows();
  return data_.collate(rows, width(rows));
}

nlohmann::json TrainBatches::state() const {
  SamplerState state = sampler_.state();
  state.data = data_.fingerprint();
  return state;
}

void TrainBatches::restore(const nlohmann::json& json) {
  const SamplerState state = json.get<SamplerState>();
  PTRAIN_CHECK(state.data.empty() || state.data == data_.fingerprint(),
               "the sampler state was saved over prepared dataset {}, this run prepared {}: the "
               "data files, the tokenizer or a data setting changed since it was saved",
               state.data, data_.fingerprint());
  sampler_.restore(state);
}

int64_t TrainBatches::width(const std::vector<int64_t>& rows) const {
  if (fixed_width_) return data_.sequence_len();
  int64_t widest = 1;
  for (int64_t r : rows) widest = std::max(widest, data_.row_tokens(r));
  return widest;
}

}  // namespace ptrain
