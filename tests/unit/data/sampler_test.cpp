// The sampler against independent computations: splitmix64 checked on its published reference
// outputs, a Fisher-Yates with Lemire's draw written out here, and a model of the dealing written
// from the contract in sampler.h (real rows from the global order, padding from the epoch start).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/sampler.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------- reference generator

// Vigna's splitmix64.c.
struct ReferenceSplitMix64 {
  uint64_t x;
  uint64_t next() {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
};

// Lemire, "Fast Random Integer Generation in an Interval" (2019), algorithm 5.
uint64_t reference_bounded(ReferenceSplitMix64& rng, uint64_t s) {
  uint64_t x = rng.next();
  unsigned __int128 m = static_cast<unsigned __int128>(x) * s;
  uint64_t l = static_cast<uint64_t>(m);
  if (l < s) {
    uint64_t t = -s % s;
    while (l < t) {
      x = rng.next();
      m = static_cast<unsigned __int128>(x) * s;
      l = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

std::vector<int64_t> reference_shuffle(int64_t n, uint64_t seed) {
  std::vector<int64_t> a(n);
  std::iota(a.begin(), a.end(), 0);
  ReferenceSplitMix64 rng{seed};
  for (int64_t i = n - 1; i >= 1; --i) {
    std::swap(a[i], a[reference_bounded(rng, static_cast<uint64_t>(i) + 1)]);
  }
  return a;
}

// ---------------------------------------------------------------- a model of the dealing

// The rows every rank would train on, written from the contract: global micro-batch = the next
// world * mbs rows of the epoch order, padded cyclically from the epoch order's start.
class DealingModel {
 public:
  DealingModel(int64_t rows, uint64_t seed, int64_t epoch, int64_t position)
      : rows_(rows), seed_(seed), epoch_(epoch), position_(position) {}

  // The global micro-batch (all ranks, rank by rank) and the real rows in it (a prefix).
  std::vector<int64_t> next_global(int64_t world_times_mbs, std::vector<int64_t>* real) {
    const std::vector<int64_t> order = epoch_order(rows_, seed_, epoch_);
    std::vector<int64_t> global;
    for (int64_t i = 0; i < world_times_mbs; ++i) {
      if (position_ + i < rows_) {
        global.push_back(order[position_ + i]);
        real->push_back(order[position_ + i]);
      } else {
        global.push_back(order[(position_ + i - rows_) % rows_]);
      }
    }
    position_ += world_times_mbs;
    if (position_ >= rows_) {
      ++epoch_;
      position_ = 0;
    }
    return global;
  }

  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }

 private:
  int64_t rows_;
  uint64_t seed_;
  int64_t epoch_, position_;
};

std::vector<DistributedSampler> ranks(int64_t rows, int64_t mbs, int world, uint64_t seed) {
  std::vector<DistributedSampler> samplers;
  for (int r = 0; r < world; ++r) samplers.emplace_back(rows, mbs, r, world, seed);
  return samplers;
}

// One global micro-batch: every rank's next(), rank by rank.
std::vector<int64_t> next_global(std::vector<DistributedSampler>& samplers) {
  std::vector<int64_t> global;
  for (auto& sampler : samplers) {
    const std::vector<int64_t> batch = sampler.next();
    global.insert(global.end(), batch.begin(), batch.end());
  }
  return global;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

std::string restore_error(const SamplerState& state) {
  DistributedSampler sampler(10, 2, 0, 1, 42);
  try {
    sampler.restore(state);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string from_json_error(const std::string& text) {
  try {
    SamplerState::from_json(text);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------- the permutation

TEST(SplitMix64Reference, MatchesPublishedOutputs) {
  // Vigna's splitmix64.c seeded with 1234567 (also Rosetta Code's "Splitmix64" task), and with 0.
  ReferenceSplitMix64 rng{1234567};
  EXPECT_EQ(rng.next(), 6457827717110365317ULL);
  EXPECT_EQ(rng.next(), 3203168211198807973ULL);
  EXPECT_EQ(rng.next(), 9817491932198370423ULL);
  EXPECT_EQ(rng.next(), 4593380528125082431ULL);
  EXPECT_EQ(rng.next(), 16408922859458223821ULL);
  ReferenceSplitMix64 zero{0};
  EXPECT_EQ(zero.next(), 0xe220a8397b1dcdafULL);
}

TEST(ShuffledIndices, MatchesReferenceFisherYates) {
  for (int64_t n : {0, 1, 2, 3, 10, 1000}) {
    for (uint64_t seed : {0ULL, 1ULL, 42ULL, 1234567ULL, ~0ULL}) {
      EXPECT_EQ(shuffled_indices(n, seed), reference_shuffle(n, seed)) << n << " " << seed;
    }
  }
}

TEST(EpochOrder, IsTheShuffleSeededByTheEpochthSplitMix64Output) {
  for (uint64_t seed : {0ULL, 42ULL, 987654321ULL}) {
    ReferenceSplitMix64 epochs{seed};
    for (int64_t epoch = 0; epoch < 5; ++epoch) {
      EXPECT_EQ(epoch_order(37, seed, epoch), reference_shuffle(37, epochs.next()))
          << "seed " << seed << " epoch " << epoch;
    }
  }
}

TEST(EpochOrder, IsAPermutation) {
  for (int64_t rows : {1, 2, 7, 100, 1001}) {
    std::vector<int64_t> order = epoch_order(rows, 5, 3);
    std::sort(order.begin(), order.end());
    std::vector<int64_t> all(rows);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(order, all);
  }
}

TEST(EpochOrder, EpochsReshuffle) {
  for (int64_t rows : {10, 100, 1000}) {
    for (uint64_t seed = 0; seed < 10; ++seed) {
      std::set<std::vector<int64_t>> orders;
      for (int64_t epoch = 0; epoch < 5; ++epoch) orders.insert(epoch_order(rows, seed, epoch));
      EXPECT_EQ(orders.size(), 5u) << rows << " rows, seed " << seed;
    }
  }
  // 4 rows have 24 orders: 24 epochs must not keep coming back to a few of them.
  std::set<std::vector<int64_t>> small;
  for (int64_t epoch = 0; epoch < 24; ++epoch) small.insert(epoch_order(4, 42, epoch));
  EXPECT_GE(small.size(), 10u);
  EXPECT_NE(epoch_order(4, 42, 0), epoch_order(4, 42, 1));
  EXPECT_NE(epoch_order(50, 1, 0), epoch_order(50, 2, 0));
}

// Each value at each position about equally often over many epochs: 8 rows, 8000 epochs, so each
// count is Binomial(8000, 1/8), mean 1000 and standard deviation ~30; the bound is ~6.7 sigma, and
// the fixed seed makes the counts the same on every run.
TEST(EpochOrder, PositionsAreRoughlyUniform) {
  constexpr int64_t kRows = 8, kEpochs = 8000;
  std::vector<std::vector<int64_t>> count(kRows, std::vector<int64_t>(kRows, 0));
  for (int64_t epoch = 0; epoch < kEpochs; ++epoch) {
    const std::vector<int64_t> order = epoch_order(kRows, 2024, epoch);
    for (int64_t i = 0; i < kRows; ++i) ++count[i][order[i]];
  }
  for (int64_t i = 0; i < kRows; ++i) {
    for (int64_t v = 0; v < kRows; ++v) {
      EXPECT_NEAR(count[i][v], kEpochs / kRows, 200) << "position " << i << " value " << v;
    }
  }
}

// ---------------------------------------------------------------- dealing

TEST(DistributedSampler, DealsTheEpochOrderThenPadsFromItsStart) {
  const uint64_t seed = 17;
  for (int world = 1; world <= 5; ++world) {
    for (int64_t mbs : {1, 2, 3, 7}) {
      for (int64_t rows : {1, 2, 3, 5, 10, 12, 13, 29, 60}) {
        SCOPED_TRACE(testing::Message()
                     << "world " << world << ", mbs " << mbs << ", rows " << rows);
        std::vector<DistributedSampler> samplers = ranks(rows, mbs, world, seed);
        const int64_t global = world * mbs;
        const int64_t per_epoch = ceil_div(rows, global);
        for (int64_t epoch = 0; epoch < 3; ++epoch) {
          const std::vector<int64_t> order = epoch_order(rows, seed, epoch);
          std::vector<int64_t> dealt;
          for (int64_t k = 0; k < per_epoch; ++k) {
            for (const auto& s : samplers) {
              EXPECT_EQ(s.epoch(), epoch);
              EXPECT_EQ(s.micro_batches_per_epoch(), per_epoch);
              EXPECT_EQ(s.micro_batches_left_in_epoch(), per_epoch - k);
            }
            const std::vector<int64_t> batch = next_global(samplers);
            ASSERT_EQ(static_cast<int64_t>(batch.size()), global);
            if ((k + 1) * global <= rows) {
              EXPECT_EQ(std::set<int64_t>(batch.begin(), batch.end()).size(), batch.size())
                  << "ranks share rows in micro-batch " << k;
            }
            dealt.insert(dealt.end(), batch.begin(), batch.end());
          }
          std::vector<int64_t> expected = order;
          for (int64_t i = 0; static_cast<int64_t>(expected.size()) < per_epoch * global; ++i) {
            expected.push_back(order[i % rows]);
          }
          EXPECT_EQ(dealt, expected) << "epoch " << epoch;
        }
        for (const auto& s : samplers) EXPECT_EQ(s.state().epoch, 3);
      }
    }
  }
}

TEST(DistributedSampler, FewRowsForManyRanksRepeatTheOrderCyclically) {
  std::vector<DistributedSampler> samplers = ranks(2, 3, 5, 9);
  const std::vector<int64_t> order = epoch_order(2, 9, 0);
  EXPECT_EQ(samplers[0].micro_batches_per_epoch(), 1);
  std::vector<int64_t> expected;
  for (int i = 0; i < 15; ++i) expected.push_back(order[i % 2]);
  EXPECT_EQ(next_global(samplers), expected);
  EXPECT_EQ(samplers[4].state().epoch, 1);
  EXPECT_EQ(samplers[4].state().position, 0);
}

TEST(DistributedSampler, WorldOneMicroBatchOneIsTheEpochOrders) {
  DistributedSampler sampler(11, 1, 0, 1, 3);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> dealt;
    for (int i = 0; i < 11; ++i) dealt.push_back(sampler.next().at(0));
    EXPECT_EQ(dealt, epoch_order(11, 3, epoch));
  }
}

TEST(DistributedSampler, FreshSamplerAtAnEpochDealsThatEpochsOrder) {
  DistributedSampler a(23, 4, 1, 2, 77);
  for (int i = 0; i < 2 * a.micro_batches_per_epoch(); ++i) a.next();
  DistributedSampler b(23, 4, 1, 2, 77);
  b.restore({77, 23, 2, 0});
  for (int i = 0; i < a.micro_batches_per_epoch(); ++i) EXPECT_EQ(a.next(), b.next());
  EXPECT_EQ(epoch_order(23, 77, 2), epoch_order(23, 77, 2));
}

// ---------------------------------------------------------------- resume

// Deals a while with one world, saves, restores into another world, deals on, and checks both
// parts against the model: the real rows continue the global order exactly, padding included.
TEST(DistributedSampler, ResumesWithAnyWorldWhereItStopped) {
  for (uint64_t trial = 0; trial < 400; ++trial) {
    std::mt19937_64 rng(trial);
    auto pick = [&](int64_t lo, int64_t hi) {
      return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    };
    const int64_t rows = pick(1, 60);
    const uint64_t seed = rng();
    const int world_before = static_cast<int>(pick(1, 5)),
              world_after = static_cast<int>(pick(1, 5));
    const int64_t mbs_before = pick(1, 4), mbs_after = pick(1, 4);
    const int64_t steps_before = pick(0, 3 * ceil_div(rows, world_before * mbs_before));
    const int64_t steps_after = pick(1, 3 * ceil_div(rows, world_after * mbs_after));
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": rows " << rows << ", world "
                                    << world_before << "x" << mbs_before << " for " << steps_before
                                    << ", then " << world_after << "x" << mbs_after);

    DealingModel model(rows, seed, 0, 0);
    std::vector<int64_t> real_rows;
    std::vector<DistributedSampler> before = ranks(rows, mbs_before, world_before, seed);
    for (int64_t k = 0; k < steps_before; ++k) {
      ASSERT_EQ(next_global(before), model.next_global(world_before * mbs_before, &real_rows));
    }
    const SamplerState saved = before[world_before - 1].state();
    EXPECT_EQ(saved.epoch, model.epoch());
    EXPECT_EQ(saved.position, model.position());

    std::vector<DistributedSampler> after = ranks(rows, mbs_after, world_after, seed);
    for (auto& s : after) s.restore(SamplerState::from_json(saved.to_json()));
    for (int64_t k = 0; k < steps_after; ++k) {
      const int64_t left = ceil_div(rows - model.position(), world_after * mbs_after);
      for (const auto& s : after) ASSERT_EQ(s.micro_batches_left_in_epoch(), left);
      ASSERT_EQ(next_global(after), model.next_global(world_after * mbs_after, &real_rows));
    }

    // The real rows dealt before and after are the global order, uninterrupted.
    std::vector<int64_t> global_order;
    for (int64_t epoch = 0;
         static_cast<int64_t>(global_order.size()) < static_cast<int64_t>(real_rows.size());
         ++epoch) {
      const std::vector<int64_t> order = epoch_order(rows, seed, epoch);
      global_order.insert(global_order.end(), order.begin(), order.end());
    }
    global_order.resize(real_rows.size());
    EXPECT_EQ(real_rows, global_order);
  }
}

TEST(DistributedSampler, RestoreAtTheEndOfAnEpochStartsTheNext) {
  DistributedSampler sampler(6, 2, 0, 1, 5);
  sampler.restore({5, 6, 1, 6});
  EXPECT_EQ(sampler.state().epoch, 2);
  EXPECT_EQ(sampler.state().position, 0);
  const std::vector<int64_t> order = epoch_order(6, 5, 2);
  EXPECT_EQ(sampler.next(), std::vector<int64_t>(order.begin(), order.begin() + 2));
}

TEST(DistributedSampler, StateAfterTheLastMicroBatchIsTheNextEpoch) {
  DistributedSampler sampler(5, 2, 1, 2, 5);
  sampler.next();
  EXPECT_EQ(sampler.state().epoch, 0);
  EXPECT_EQ(sampler.state().position, 4);
  EXPECT_EQ(sampler.micro_batches_left_in_epoch(), 1);
  sampler.next();
  EXPECT_EQ(sampler.state().epoch, 1);
  EXPECT_EQ(sampler.state().position, 0);
  EXPECT_EQ(sampler.micro_batches_left_in_epoch(), 2);
}

// ---------------------------------------------------------------- state and errors

TEST(SamplerState, JsonRoundTrip) {
  for (const SamplerState& state :
       {SamplerState{0, 1, 0, 0}, SamplerState{42, 52002, 3, 4096},
        SamplerState{~0ULL, 9007199254740993, 123456789, 9007199254740992}}) {
    const SamplerState back = SamplerState::from_json(state.to_json());
    EXPECT_EQ(back.seed, state.seed);
    EXPECT_EQ(back.rows, state.rows);
    EXPECT_EQ(back.epoch, state.epoch);
    EXPECT_EQ(back.position, state.position);
  }
}

TEST(SamplerState, FromJsonErrorsNameTheField) {
  EXPECT_THAT(from_json_error("{\"seed\": 1"), HasSubstr("sampler state: not valid JSON"));
  EXPECT_THAT(from_json_error("[1, 2]"), HasSubstr("expected a JSON object"));
  EXPECT_THAT(from_json_error(R"({"rows": 1, "epoch": 0, "position": 0})"),
              HasSubstr("missing field 'seed'"));
  EXPECT_THAT(from_json_error(R"({"seed": 1, "epoch": 0, "position": 0})"),
              HasSubstr("missing field 'rows'"));
  EXPECT_THAT(from_json_error(R"({"seed": 1, "rows": 1, "position": 0})"),
              HasSubstr("missing field 'epoch'"));
  EXPECT_THAT(from_json_error(R"({"seed": 1, "rows": 1, "epoch": 0})"),
              HasSubstr("missing field 'position'"));
  EXPECT_THAT(from_json_error(R"({"seed": -1, "rows": 1, "epoch": 0, "position": 0})"),
              HasSubstr("field 'seed' must be a non-negative integer, got -1"));
  EXPECT_THAT(from_json_error(R"({"seed": 1, "rows": "5", "epoch": 0, "position": 0})"),
              HasSubstr("field 'rows' must be a non-negative integer, got \"5\""));
  EXPECT_THAT(from_json_error(R"({"seed": 1, "rows": 5, "epoch": -1, "position": 0})"),
              HasSubstr("field 'epoch' must be a non-negative integer"));
  EXPECT_THAT(from_json_error(R"({"seed": 1, "rows": 5, "epoch": 0, "position": 1.5})"),
              HasSubstr("field 'position' must be a non-negative integer, got 1.5"));
  EXPECT_THAT(
      from_json_error(R"({"seed": 1, "rows": 9223372036854775808, "epoch": 0, "position": 0})"),
      HasSubstr("field 'rows' must be a non-negative integer"));
}

TEST(DistributedSampler, RestoreErrors) {
  EXPECT_THAT(restore_error({42, 11, 0, 0}),
              HasSubstr("the prepared dataset has 10 rows, the sampler state 11"));
  EXPECT_THAT(restore_error({43, 10, 0, 0}),
              HasSubstr("the sampler state was written with seed 43, this run's seed is 42"));
  EXPECT_THAT(restore_error({42, 10, 0, 11}),
              HasSubstr("sampler state: position 11 is out of range 0..10"));
  EXPECT_THAT(restore_error({42, 10, 0, -1}),
              HasSubstr("sampler state: position -1 is out of range 0..10"));
  EXPECT_THAT(restore_error({42, 10, -1, 0}), HasSubstr("sampler state: epoch -1 is negative"));
  EXPECT_EQ(restore_error({42, 10, 0, 10}), "(no error)");
}

TEST(DistributedSampler, BadArgumentsAreBugs) {
  EXPECT_THROW(DistributedSampler(0, 1, 0, 1, 0), RuntimeFailure);
  EXPECT_THROW(DistributedSampler(5, 0, 0, 1, 0), RuntimeFailure);
  EXPECT_THROW(DistributedSampler(5, 1, 2, 2, 0), RuntimeFailure);
  EXPECT_THROW(DistributedSampler(5, 1, -1, 2, 0), RuntimeFailure);
}

}  // namespace
}  // namespace ptrain
