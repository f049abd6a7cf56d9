// TrainBatches: this rank's micro-batches of the prepared dataset's training rows, in the
// distributed sampler's order (sampler.h), collated into RowBatch arrays.
//
// Width of a micro-batch: sequence_len when the rows are packed or pad_to_sequence_len is set (so
// every step has the same shape), else the longest row of the micro-batch. Every rank holds one
// TrainBatches over the same prepared dataset and calls next() in lockstep; the state() of any rank
// is the state of all of them, and restore() continues from it with this rank's world size.
#pragma once

#include <cstdint>
#include <vector>

#include "core/stateful.h"
#include "data/prepared_data.h"
#include "data/sampler.h"

namespace ptrain {

class TrainBatches final : public Stateful {
 public:
  TrainBatches(const PreparedDataset& data, int64_t micro_batch_size, int rank, int world,
               uint64_t seed, bool pad_to_sequence_len);

  // The rows of this rank's next micro-batch (training row indices), and the same laid out.
  std::vector<int64_t> next_rows();
  RowBatch next();

  int64_t epoch() const { return sampler_.epoch(); }
  int64_t micro_batches_left_in_epoch() const { return sampler_.micro_batches_left_in_epoch(); }
  int64_t micro_batches_per_epoch() const { return sampler_.micro_batches_per_epoch(); }
  // The sampler's state (a SamplerState object), tagged with the prepared dataset's fingerprint.
  nlohmann::json state() const override;
  // Continues from `state`; UserError when it is not a SamplerState, was saved over other
  // prepared data (another fingerprint: the data files, tokenizer or data settings changed), or
  // as DistributedSampler::restore.
  void restore(const nlohmann::json& state) override;

  // The width next() lays `rows` out at.
  int64_t width(const std::vector<int64_t>& rows) const;

 private:
  const PreparedDataset& data_;
  DistributedSampler sampler_;
  bool fixed_width_;
};

}  // namespace ptrain
