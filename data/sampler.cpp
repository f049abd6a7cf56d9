#include "data/sampler.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <numeric>
#include <utility>

#include "core/error.h"

namespace ptrain {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------- splitmix64

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

// splitmix64's output function (Stafford's Mix13 variant, as in Vigna's splitmix64.c).
uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}

  uint64_t next() {
    state_ += kGoldenGamma;
    return splitmix64_mix(state_);
  }

  // Uniform in 0..bound-1 (bound > 0). Lemire's method: the high word of next() * bound, redrawn
  // while the low word falls in the 2^64 mod bound values that would favour some results.
  uint64_t below(uint64_t bound) {
    unsigned __int128 product = static_cast<unsigned __int128>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(product);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        product = static_cast<unsigned __int128>(next()) * bound;
        low = static_cast<uint64_t>(product);
      }
    }
    return static_cast<uint64_t>(product >> 64);
  }

 private:
  uint64_t state_;
};

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// ---------------------------------------------------------------- state JSON fields

// `state[key]`, a non-negative integer that fits `T`.
template <typename T>
T state_field(const json& state, const char* key) {
  auto it = state.find(key);
  PTRAIN_CHECK(it != state.end(), "sampler state: missing field '{}'", key);
  PTRAIN_CHECK(it->is_number_unsigned() &&
                   it->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max()),
               "sampler state: field '{}' must be a non-negative integer, got {}", key, it->dump());
  return static_cast<T>(it->get<uint64_t>());
}

}  // namespace

// ---------------------------------------------------------------- permutations

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  PTRAIN_ASSERT(n >= 0, "cannot shuffle {} indices", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

uint64_t splitmix64_output(uint64_t seed, uint64_t index) {
  return splitmix64_mix(seed + (index + 1) * kGoldenGamma);
}

std::vector<int64_t> epoch_order(int64_t rows, uint64_t seed, int64_t epoch) {
  PTRAIN_ASSERT(epoch >= 0, "epoch {}", epoch);
  return shuffled_indices(rows, splitmix64_output(seed, static_cast<uint64_t>(epoch)));
}

// ---------------------------------------------------------------- state

std::string SamplerState::to_json() const {
  return json{
      {"seed", seed}, {"rows", rows}, {"epoch", epoch}, {"position", position}, {"data", data}}
      .dump();
}

SamplerState SamplerState::from_json(const std::string& text) {
  json state;
  try {
    state = json::parse(text);
  } catch (const json::parse_error& e) {
    throw UserError(fmt::format("sampler state: not valid JSON: {}", e.what()));
  }
  PTRAIN_CHECK(state.is_object(), "sampler state: expected a JSON object, got {}", state.dump());
  SamplerState s;
  s.seed = state_field<uint64_t>(state, "seed");
  s.rows = state_field<int64_t>(state, "rows");
  s.epoch = state_field<int64_t>(state, "epoch");
  s.position = state_field<int64_t>(state, "position");
  auto data = state.find("data");
  if (data != state.end()) {
    PTRAIN_CHECK(data->is_string(), "sampler state: field 'data' must be a string, got {}",
                 data->dump());
    s.data = data->get<std::string>();
  }
  return s;
}

void to_json(json& out, const SamplerState& state) {
  out = json::parse(state.to_json());
}

void from_json(const json& in, SamplerState& state) {
  state = SamplerState::from_json(in.dump());
}

// ---------------------------------------------------------------- sampler

DistributedSampler::DistributedSampler(int64_t rows, int64_t micro_batch_size, int rank, int world,
                                       uint64_t seed)
    : rows_(rows), micro_batch_size_(micro_batch_size), rank_(rank), world_(world), seed_(seed) {
  PTRAIN_ASSERT(rows > 0, "a sampler over {} rows", rows);
  PTRAIN_ASSERT(micro_batch_size > 0, "micro_batch_size {}", micro_batch_size);
  PTRAIN_ASSERT(world > 0 && rank >= 0 && rank < world, "rank {} of world {}", rank, world);
  start_epoch(0);
}

void DistributedSampler::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  order_ = epoch_order(rows_, seed_, epoch);
}

std::vector<int64_t> DistributedSampler::next() {
  const int64_t first = position_ + rank_ * micro_batch_size_;
  std::vector<int64_t> batch(static_cast<size_t>(micro_batch_size_));
  for (int64_t i = 0; i < micro_batch_size_; ++i) {
    // Past the end of the epoch the positions wrap around the order: the padding.
    batch[i] = order_[(first + i) % rows_];
  }
  position_ = std::min(position_ + world_ * micro_batch_size_, rows_);
  if (position_ == rows_) start_epoch(epoch_ + 1);
  return batch;
}

int64_t DistributedSampler::micro_batches_left_in_epoch() const {
  return ceil_div(rows_ - position_, world_ * micro_batch_size_);
}

int64_t DistributedSampler::micro_batches_per_epoch() const {
  return ceil_div(rows_, world_ * micro_batch_size_);
}

SamplerState DistributedSampler::state() const {
  SamplerState state;
  state.seed = seed_;
  state.rows = rows_;
  state.epoch = epoch_;
  state.position = position_;
  return state;
}

void DistributedSampler::restore(const SamplerState& state) {
  PTRAIN_CHECK(state.rows == rows_,
               "the prepared dataset has {} rows, the sampler state {}: the state was written for "
               "another dataset (or another preparation of it)",
               rows_, state.rows);
  PTRAIN_CHECK(state.seed == seed_,
               "the sampler state was written with seed {}, this run's seed is {}: resume with "
               "the seed of the run that wrote it",
               state.seed, seed_);
  PTRAIN_CHECK(state.epoch >= 0, "sampler state: epoch {} is negative", state.epoch);
  PTRAIN_CHECK(state.position >= 0 && state.position <= rows_,
               "sampler state: position {} is out of range 0..{}", state.position, rows_);
  if (state.position == rows_) {
    start_epoch(state.epoch + 1);
  } else {
    start_epoch(state.epoch);
    position_ = state.position;
  }
}

}  // namespace ptrain
