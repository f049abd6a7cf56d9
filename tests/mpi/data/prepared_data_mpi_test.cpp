// The prepared dataset and the sampler across real ranks: rank 0 builds the cache while the others
// wait, every rank maps the same directory, and one epoch of micro-batches, gathered from all
// ranks, is the epoch order (epoch_order, computed independently on every rank) dealt as
// sampler.h documents, with every row trained on.
#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "data/sampler.h"
#include "data/train_batches.h"
#include "launcher/data_preparation.h"
#include "parallel/communicator.h"
#include "tests/mpi/mpi_test_env.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace ptrain {
namespace {

using test::world;

// A job over a scratch directory that rank 0 fills and every rank sees (one host).
class PreparedDataMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    int64_t id = ::getpid();
    world().broadcast(comm_buffer(&id, 1), 0);
    root_ = fs::temp_directory_path() / ("ptrain-mpi-data-" + std::to_string(id));
    if (world().rank() == 0) {
      fs::remove_all(root_);
      fs::create_directories(root_ / "model");
      std::ofstream(root_ / "model" / "tokenizer_config.json") << byte_tokenizer_config_json();
      std::ofstream rows(root_ / "rows.jsonl");
      std::mt19937_64 rng(11);
      for (int i = 0; i < 157; ++i)
        rows << "{\"text\": \"" << std::string(1 + rng() % 90, 'a' + i % 26) << "\"}\n";
    }
    world().barrier();
    job_.base_model = (root_ / "model").string();
    DatasetConfig d;
    d.path = (root_ / "rows.jsonl").string();
    d.type = "completion";
    job_.datasets = {d};
    job_.sequence_len = 128;
    job_.sample_packing = true;
    job_.dataset_prepared_path = (root_ / "prepared").string();
    ctx_.rank = world().rank();
    ctx_.world = world().size();
    ctx_.comm = std::shared_ptr<Communicator>(&world(), [](Communicator*) {});
    ctx_.log = std::make_shared<spdlog::logger>("test");
  }
  void TearDown() override {
    world().barrier();
    if (world().rank() == 0) fs::remove_all(root_);
  }

  fs::path root_;
  JobConfig job_;
  RankContext ctx_;
};

TEST_F(PreparedDataMpi, RankZeroBuildsOnceAndEveryRankMapsTheSameData) {
  PreparedData first = prepare_data(job_, ctx_, 1);
  EXPECT_EQ(first.built, ctx_.rank == 0) << "only rank 0 builds";
  int64_t dirs = 0;
  for (const auto& entry : fs::directory_iterator(root_ / "prepared")) dirs += entry.is_directory();
  EXPECT_EQ(dirs, 1);
  // Every rank sees the same rows: compare a checksum of the layout across ranks.
  int64_t mine[2] = {first.dataset->train_rows(), 0};
  for (int64_t r = 0; r < first.dataset->train_rows(); ++r)
    for (int64_t s : first.dataset->train_row(r)) mine[1] = mine[1] * 31 + s + 1;
  std::vector<int64_t> all(2 * static_cast<size_t>(ctx_.world));
  world().all_gather(comm_buffer(all.data(), all.size()), comm_buffer(mine, 2));
  for (int r = 0; r < ctx_.world; ++r) {
    EXPECT_EQ(all[2 * r], mine[0]) << "rank " << r;
    EXPECT_EQ(all[2 * r + 1], mine[1]) << "rank " << r;
  }
  PreparedData again = prepare_data(job_, ctx_, 1);
  EXPECT_FALSE(again.built) << "the second call reuses the cache";
}

TEST_F(PreparedDataMpi, AnEpochDealsTheEpochOrderToTheRanks) {
  PreparedData prepared = prepare_data(job_, ctx_, 1);
  const PreparedDataset& data = *prepared.dataset;
  const int64_t mbs = 2, world_size = ctx_.world, rows = data.train_rows();
  TrainBatches batches(data, mbs, ctx_.rank, ctx_.world, 42, false);
  const int64_t steps = (rows + world_size * mbs - 1) / (world_size * mbs);
  ASSERT_EQ(batches.micro_batches_per_epoch(), steps);
  std::vector<int64_t> order = epoch_order(rows, 42, 0);
  for (int64_t k = 0; k < steps; ++k) {
    const std::vector<int64_t> mine = batches.next_rows();
    ASSERT_EQ(static_cast<int64_t>(mine.size()), mbs);
    std::vector<int64_t> all(static_cast<size_t>(mbs * world_size));
    world().all_gather(comm_buffer(all.data(), all.size()), comm_buffer(mine.data(), mbs));
    for (int64_t i = 0; i < mbs * world_size; ++i)
      EXPECT_EQ(all[i], order[(k * mbs * world_size + i) % rows]) << "micro-batch " << k;
  }
  EXPECT_EQ(batches.epoch(), 1) << "the epoch ends on every rank at once";
  // Collated micro-batches are sequence_len wide (packed) and hold their rows' tokens.
  RowBatch b = batches.next();
  EXPECT_EQ(b.width, 128);
  EXPECT_EQ(b.rows, mbs);
}

TEST_F(PreparedDataMpi, ARankZeroFailureReachesEveryRank) {
  if (ctx_.rank == 0) std::ofstream(root_ / "rows.jsonl", std::ios::app) << "{\"text\": 7}\n";
  world().barrier();
  try {
    prepare_data(job_, ctx_, 1);
    ADD_FAILURE() << "a bad row did not fail the preparation";
  } catch (const UserError& e) {
    const std::string message = e.what();
    if (ctx_.rank == 0) {
      EXPECT_NE(message.find("rows.jsonl:158: 'text' must be a string"), std::string::npos)
          << message;
    } else {
      EXPECT_NE(message.find("rank 0 could not prepare the dataset"), std::string::npos) << message;
    }
  }
  // The communicator is still in step: a collective after the failure completes on every rank.
  int64_t one = 1;
  world().all_reduce(comm_buffer(&one, 1), ReduceOp::kSum);
  EXPECT_EQ(one, ctx_.world);
}

}  // namespace
}  // namespace ptrain
