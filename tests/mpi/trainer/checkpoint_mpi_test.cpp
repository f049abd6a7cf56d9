// Checkpoints across world and shard sizes (trainer/checkpointer.h), on real ranks. A sharded
// model trained two steps is saved by every rank (Checkpointer::save: phase 1 files, the
// all-gathered reports, rank 0's commit). Restored into a fresh model sharded every other way
// this world allows (FSDP over all ranks, HSDP groups, every rank holding everything), each
// trainable tensor's fp32 master and both AdamW moments, gathered whole, must equal the saved
// ones exactly; the sampler state comes back; and at the saving layout the step after the
// restore (dropout drawn from the restored generator) is bit-identical to the step the saving
// run takes next. The reference is the saving run's own in-memory state, gathered whole before
// anything is written. A damaged newest checkpoint is refused by name and skipped by `latest`.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>

#include "core/error.h"
#include "parallel/fsdp_groups.h"
#include "tests/mpi/mpi_test_env.h"
#include "trainer/checkpointer.h"
#include "trainer/train_step.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

// The data position a checkpoint carries, standing in for TrainBatches.
struct Position final : Stateful {
  int64_t rows = 0;
  nlohmann::json state() const override { return {{"rows", rows}}; }
  void restore(const nlohmann::json& s) override { rows = s.at("rows").get<int64_t>(); }
};

std::vector<PackedBatch> micro_batches(int step, int world, int rank) {
  std::mt19937 rng(1000 + step);
  std::vector<std::vector<std::vector<int64_t>>> rows(static_cast<size_t>(world) * 2);
  for (auto& row : rows)
    for (int s = 0; s < 2; ++s) {
      std::vector<int64_t> sample(3 + rng() % 5);
      for (auto& id : sample) id = static_cast<int64_t>(rng() % 259);
      row.push_back(sample);
    }
  return {make_packed_batch({rows[2 * rank]}, 16), make_packed_batch({rows[2 * rank + 1]}, 16)};
}

struct Trained {
  LlamaForCausalLM model = nullptr;
  std::unique_ptr<ShardedModel> sharded;
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<LrSchedule> schedule;
  std::unique_ptr<TrainStep> step;
  Position position;
};

std::unique_ptr<Trained> build(bool qlora, int shard_size) {
  Communicator& world = test::world();
  auto t = std::make_unique<Trained>();
  t->model = tiny_model(qlora ? at::kFloat : at::kBFloat16, qlora);
  t->model->generator().set_current_seed(77 + world.rank());
  auto world_ptr = std::shared_ptr<Communicator>(&world, [](Communicator*) {});
  t->sharded = std::make_unique<ShardedModel>(
      t->model, make_fsdp_groups(world_ptr, shard_size, "test"), FsdpOptions{});
  AdamWOptions adam;
  adam.weight_decay = 0.1;
  t->optimizer = std::make_unique<AdamW>(optimized_tensors(*t->sharded), adam);
  t->schedule = std::make_unique<LrSchedule>("cosine", 1e-2, 10, 1);
  t->step =
      std::make_unique<TrainStep>(t->model, *t->sharded, *t->optimizer, *t->schedule, world, 1.0);
  return t;
}

void run_step(Trained& t) {
  Communicator& world = test::world();
  const int s = static_cast<int>(t.step->next_step());
  ASSERT_TRUE(t.step->run(micro_batches(s, world.size(), world.rank())).applied);
  t.position.rows += 2 * world.size();
}

// Every trainable tensor's master and moments, whole (all-gathered over the shard group).
std::map<std::string, at::Tensor> whole_state(Trained& t) {
  std::map<std::string, at::Tensor> out;
  const auto trainable = t.sharded->trainable();
  Communicator& shard = *t.sharded->groups().shard;
  for (size_t i = 0; i < trainable.size(); ++i) {
    const FlatParameter& flat = *trainable[i];
    const std::pair<const char*, at::Tensor> parts[] = {
        {"master", flat.master},
        {"exp_avg", t.optimizer->exp_avg()[i]},
        {"exp_avg_sq", t.optimizer->exp_avg_sq()[i]}};
    for (const auto& [what, tensor] : parts) {
      at::Tensor full = torch::empty({flat.layout.padded_numel()}, tensor.options());
      shard.all_gather(comm_buffer_of(full), comm_buffer_of(tensor));
      for (const FlatEntry& e : flat.layout.entries())
        out[e.name + "/" + what] = full.narrow(0, e.offset, e.numel).clone();
    }
  }
  return out;
}

// One scratch root for all ranks: rank 0's process id.
std::string shared_root(const std::string& name) {
  int64_t pid = ::getpid();
  test::world().broadcast(comm_buffer(&pid, 1), 0);
  return (fs::path(::testing::TempDir()) / fmt::format("ptrain-ckpt-mpi-{}", pid) / name).string();
}

TrainingState state_of(Trained& t) {
  return TrainingState{*t.sharded, *t.optimizer, t.position, t.model->generator()};
}

class CheckpointAcrossLayouts : public ::testing::TestWithParam<bool> {};

TEST_P(CheckpointAcrossLayouts, RestoresExactlyAtEveryShardSize) {
  const bool qlora = GetParam();
  Communicator& world = test::world();
  const std::string root = shared_root(qlora ? "qlora" : "full");
  auto log = std::make_shared<spdlog::logger>("test");

  auto saved = build(qlora, world.size());
  run_step(*saved);
  run_step(*saved);
  const auto expected = whole_state(*saved);
  CheckpointerOptions options;
  options.root = root;
  options.identity = {{"test", true}};
  {
    Checkpointer checkpointer(state_of(*saved), world, options, log);
    checkpointer.save(2);
    ASSERT_TRUE(checkpointer.last_result().committed) << checkpointer.last_result().error;
  }

  // The saving run's next step, the reference for the restored one.
  run_step(*saved);
  const auto after_next = whole_state(*saved);

  for (int shard_size = 1; shard_size <= world.size(); ++shard_size) {
    if (world.size() % shard_size != 0) continue;
    SCOPED_TRACE(fmt::format("restored with shard size {} of {}", shard_size, world.size()));
    auto restored = build(qlora, shard_size);
    TrainingState state = state_of(*restored);
    const std::optional<Resumed> resumed = resume_training("latest", root, state, world, *log);
    ASSERT_TRUE(resumed.has_value());
    EXPECT_EQ(resumed->manifest.step, 2);
    EXPECT_EQ(resumed->manifest.json.at("shard_size"), world.size());
    const ResumeInfo& info = resumed->info;
    EXPECT_EQ(info.step, 2);
    EXPECT_EQ(info.same_layout, shard_size == world.size());
    EXPECT_EQ(restored->position.rows, 4 * world.size());
    EXPECT_EQ(restored->optimizer->steps(), 2);
    const auto got = whole_state(*restored);
    ASSERT_EQ(got.size(), expected.size());
    for (const auto& [name, value] : expected)
      EXPECT_TRUE(torch::equal(got.at(name), value)) << name;
    if (!info.same_layout) continue;
    restored->step->set_next_step(info.step);
    run_step(*restored);
    for (const auto& [name, value] : whole_state(*restored))
      EXPECT_TRUE(torch::equal(after_next.at(name), value)) << name << " after the next step";
  }
  world.barrier();
  if (world.rank() == 0) fs::remove_all(fs::path(root).parent_path());
}

// A damaged newest checkpoint: `latest` names the file and falls back to the one before, whose
// state (frozen shards too, with save_frozen) comes back exactly; the directory named itself is
// refused. The last rank's file is damaged, so at every world the rank that reads it is not rank 0.
TEST_P(CheckpointAcrossLayouts, LatestFallsBackPastADamagedFile) {
  const bool qlora = GetParam();
  Communicator& world = test::world();
  const std::string root = shared_root(qlora ? "fallback-qlora" : "fallback-full");
  auto log = std::make_shared<spdlog::logger>("test");
  auto saved = build(qlora, world.size());
  CheckpointerOptions options;
  options.root = root;
  options.save_frozen = true;
  std::map<std::string, at::Tensor> at_step_1;
  {
    Checkpointer checkpointer(state_of(*saved), world, options, log);
    run_step(*saved);
    at_step_1 = whole_state(*saved);
    checkpointer.save(1);
    run_step(*saved);
    checkpointer.save(2);
    ASSERT_TRUE(checkpointer.last_result().committed) << checkpointer.last_result().error;
  }
  const std::string damaged = rank_file_name(world.size() - 1);
  if (world.rank() == 0) {
    const fs::path path = fs::path(committed_dir(root, 2)) / damaged;
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(fs::file_size(path) - 5));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(fs::file_size(path) - 5));
    f.put(static_cast<char>(c ^ 0x01));
  }
  world.barrier();

  auto restored = build(qlora, world.size());
  TrainingState state = state_of(*restored);
  try {
    resume_training(committed_dir(root, 2), root, state, world, *log);
    ADD_FAILURE() << "a damaged checkpoint loaded";
  } catch (const CorruptData& e) {
    EXPECT_NE(std::string(e.what()).find(damaged), std::string::npos) << e.what();
  }
  const std::optional<Resumed> resumed = resume_training("latest", root, state, world, *log);
  ASSERT_TRUE(resumed.has_value());
  EXPECT_EQ(resumed->info.step, 1);
  for (const auto& [name, value] : whole_state(*restored))
    EXPECT_TRUE(torch::equal(at_step_1.at(name), value)) << name;
  EXPECT_EQ(restored->optimizer->steps(), 1);
  world.barrier();
  if (world.rank() == 0) fs::remove_all(fs::path(root).parent_path());
}

// checkpoint.async on the CPU writes the live masters and moments: the next step's optimizer
// waits for the write (TrainStep's before_update hook), so the checkpoint holds the state of the
// step it was taken at, not of the step after, and restores to it exactly.
TEST_P(CheckpointAcrossLayouts, AsyncSaveHoldsTheStateOfItsStep) {
  const bool qlora = GetParam();
  Communicator& world = test::world();
  const std::string root = shared_root(qlora ? "async-qlora" : "async-full");
  auto log = std::make_shared<spdlog::logger>("test");
  auto saved = build(qlora, world.size());
  CheckpointerOptions options;
  options.root = root;
  options.async = true;
  // The write is held back until the next step's optimizer is about to change the state, so a
  // write that did not wait would read the changed values. (A bound, never reached when the
  // optimizer does wait: released at once.)
  std::promise<void> optimizer_reached;
  std::shared_future<void> reached = optimizer_reached.get_future().share();
  options.before_write = [reached] { reached.wait_for(std::chrono::seconds(5)); };
  std::map<std::string, at::Tensor> at_step_1;
  {
    Checkpointer checkpointer(state_of(*saved), world, options, log);
    bool armed = false, released = false;
    saved->step->set_before_update([&] {
      if (armed && !released) {
        optimizer_reached.set_value();
        released = true;
      }
      checkpointer.before_update();
    });
    run_step(*saved);
    at_step_1 = whole_state(*saved);
    checkpointer.save(1);
    armed = true;
    run_step(*saved);  // its optimizer waits for the write
    run_step(*saved);
    checkpointer.finish_pending();
    ASSERT_TRUE(checkpointer.last_result().committed) << checkpointer.last_result().error;
    saved->step->set_before_update({});
  }
  auto restored = build(qlora, world.size());
  TrainingState state = state_of(*restored);
  const std::optional<Resumed> resumed = resume_training("latest", root, state, world, *log);
  ASSERT_TRUE(resumed.has_value());
  EXPECT_EQ(resumed->info.step, 1);
  for (const auto& [name, value] : whole_state(*restored))
    EXPECT_TRUE(torch::equal(at_step_1.at(name), value)) << name;
  world.barrier();
  if (world.rank() == 0) fs::remove_all(fs::path(root).parent_path());
}

INSTANTIATE_TEST_SUITE_P(Modes, CheckpointAcrossLayouts, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "qlora" : "full_bf16"; });

}  // namespace
}  // namespace ptrain
