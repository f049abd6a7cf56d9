// The distributed sampler: which rows each rank trains on, micro-batch by micro-batch.
//
// Each epoch has its own order of all rows, a permutation deterministic in (seed, epoch) and
// independent of the world size. Micro-batches are dealt from that order: global micro-batch k
// takes the next world * micro_batch_size rows of the order, and rank r gets the r-th run of
// micro_batch_size of them. So the ranks' rows are disjoint, and reading the micro-batches in
// order, rank by rank, gives back the epoch order. The epoch's last global micro-batch, when the
// rows left do not fill it, is completed with rows from the start of the epoch order (as PyTorch's
// DistributedSampler pads), so every rank gets the same number of full micro-batches and no rank
// waits alone at the end of an epoch; an epoch has ceil(rows / (world * micro_batch_size))
// micro-batches. When world * micro_batch_size exceeds the rows, the padding wraps around the
// epoch order as often as needed (2 rows, world 5, micro-batch 3: one micro-batch of the order
// repeated cyclically).
//
// The state is (epoch, position): position counts the rows of the epoch order already dealt
// (padding excluded). Restoring a state continues with exactly the rows that come next, also with a
// different world size: the remaining rows of the epoch are dealt to the new ranks the same way.
// A finished epoch is the start of the next one: after the last micro-batch of epoch e the state
// is (e + 1, 0), never (e, rows), and restore() reads (e, rows) as (e + 1, 0).
// Every rank holds the same sampler and advances it in lockstep; no communication is needed.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ptrain {

struct SamplerState {
  uint64_t seed = 0;
  int64_t rows = 0;      // rows in the dataset, checked on restore
  int64_t epoch = 0;     // 0-based
  int64_t position = 0;  // rows of this epoch's order already dealt
  // The prepared dataset's fingerprint when the state was saved ("" when unknown): TrainBatches
  // refuses a state of other data. Optional in the JSON.
  std::string data;
  std::string to_json() const;
  // UserError naming the field when `text` is not a state written by to_json().
  static SamplerState from_json(const std::string& text);
};

// nlohmann::json conversions (the same object as to_json / from_json, with the same checks).
void to_json(nlohmann::json& out, const SamplerState& state);
void from_json(const nlohmann::json& in, SamplerState& state);

// A permutation of 0..n-1 that is the same on every platform and standard library (never
// std::shuffle): a Fisher-Yates shuffle from the last position down, position i swapping with j
// drawn uniformly from 0..i by Lemire's unbiased multiply-and-reject method, on the outputs of a
// splitmix64 generator whose state starts at `seed`. The one shuffle of the data pipeline (the
// sampler's epochs and packing's groups).
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);

// Output number `index` (0-based) of a splitmix64 generator seeded with `seed`, i.e.
// mix(seed + (index + 1) * gamma): the way seeds are derived from the one job seed (each epoch's
// shuffle here; each rank's model generator in launcher/job_options).
uint64_t splitmix64_output(uint64_t seed, uint64_t index);

// Epoch `epoch`'s order of the rows: shuffled_indices(rows, s) where s is output number `epoch`
// (0-based) of a splitmix64 generator seeded with `seed`, i.e. mix(seed + (epoch + 1) * gamma).
// Each epoch's shuffle thus starts at an unrelated point of the splitmix64 sequence.
std::vector<int64_t> epoch_order(int64_t rows, uint64_t seed, int64_t epoch);

class DistributedSampler {
 public:
  // rows > 0, micro_batch_size > 0, 0 <= rank < world.
  DistributedSampler(int64_t rows, int64_t micro_batch_size, int rank, int world, uint64_t seed);

  // This rank's next micro-batch: micro_batch_size row indices. Moves to the next epoch after the
  // epoch's last micro-batch.
  std::vector<int64_t> next();

  // Micro-batches left in the current epoch (the same on every rank).
  int64_t micro_batches_left_in_epoch() const;
  // Micro-batches in a whole epoch for this world size.
  int64_t micro_batches_per_epoch() const;

  SamplerState state() const;
  // Continues from `state` (written by any world size). UserError when it belongs to a dataset of
  // another row count or another seed, or its epoch or position is out of range (position may be
  // 0..rows; rows means the epoch is finished).
  void restore(const SamplerState& state);

  int64_t epoch() const { return epoch_; }

 private:
  void start_epoch(int64_t epoch);

  int64_t rows_, micro_batch_size_;
  int rank_, world_;
  uint64_t seed_;
  int64_t epoch_ = 0, position_ = 0;
  std::vector<int64_t> order_;  // the current epoch's order
};

}  // namespace ptrain
