// What a sharded checkpoint holds and how training saves and resumes it (docs/checkpoints.md);
// the files and the commit are checkpoint/sharded_checkpoint.h.
//
// [Note: what a checkpoint holds]
// rank-R.safetensors, for each rank R:
//   "<flat>/master", "<flat>/exp_avg", "<flat>/exp_avg_sq"   fp32 [shard_numel] of every trainable
//       flat parameter (ShardedModel::flat_parameters names, e.g. "layers.3/trainable/Float"):
//       the master shard and AdamW's moments, padding included
//   "<flat>/shard"   frozen flat parameters, in their dtype, with checkpoint.save_frozen
//   "rng/model"      the model's generator (dropout), as get_state() gives it
// Only the first shard group (world ranks 0 .. shard_size - 1: replica 0 of every shard under
// HSDP) writes flat parameters; every rank writes its generator. Compute shards are not saved:
// they are the masters cast to the compute dtype, as after every step.
// manifest.json: the envelope (sharded_checkpoint.h) and the run's identity (the `identity`
// option: config hash and keys, model and tokenizer fingerprints, schedule), "world",
// "shard_size", "replicas", every flat parameter's global layout (FlatLayout::to_json plus
// "trainable" and "saved"), "sampler" (TrainingState::sampler, TrainBatches::state), "loop" (the
// non-finite step counters), "optimizer" (AdamW::state), "step". adapter/ (LoRA): the whole
// adapter, gathered from every shard, as `ptrain eval --adapter` and PEFT read it; never the base.
//
// [Note: saving]
// A save is collective over the world (every rank calls it at the same step boundary): every
// rank writes its file into step-S.tmp (streamed from the shards: nothing is copied on a CPU),
// the adapter is gathered and rank 0 writes it, every rank's size, checksum or error is
// all-gathered, and rank 0 commits (or, when any rank failed, removes step-S.tmp and says which
// rank failed and why). Training goes on after a failed save; the previous checkpoint is intact.
// With checkpoint.async a background thread writes the file while training goes on. On the CPU
// it writes straight from the live masters and moments, which only the optimizer changes: the
// next step's forward and backward run beside the write, and the optimizer waits for it
// (before_update(), TrainStep's hook) only if it is not done by then; no copy is made. Device
// tensors are first copied to host memory (the stall). Each rank reports at every step boundary
// whether its write still runs (StepDecision::writing), and the first boundary where no rank is
// writing commits it. A new save, or the end of training, waits for a pending one first.
#pragma once

#include <spdlog/logger.h>
#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/sharded_checkpoint.h"
#include "core/stateful.h"
#include "parallel/communicator.h"
#include "trainer/fsdp/sharded_model.h"
#include "trainer/optim/adamw.h"
#include "trainer/train_observer.h"

namespace ptrain {

// A save's outcome, the same on every rank.
struct SaveResult {
  int64_t step = 0;
  bool committed = false;
  std::string dir;     // the committed directory
  std::string error;   // why not, naming the rank and the file
  uint64_t bytes = 0;  // committed: the rank files' bytes
  int files = 0;       // committed, on rank 0: the files in the manifest
  // How long training waited for this save: the whole save; async: the save() call (staging on
  // a device) plus the optimizer's wait for the write.
  double stall_seconds = 0;
};

struct CheckpointerOptions {
  std::string root;             // <output_dir>/checkpoints
  int64_t save_steps = 0;       // save every N steps; 0: see saves_per_epoch
  int64_t saves_per_epoch = 0;  // every max(1, steps_per_epoch / N) steps; 0: at the end only
  int64_t keep_last = 0;        // 0: keep every committed checkpoint
  bool save_frozen = false;
  bool async = false;
  nlohmann::json identity = nlohmann::json::object();  // merged into every manifest
  // LoRA: writes the adapter of the model (its trainable tensors pointed at their full values)
  // into a directory; called on rank 0 only. Empty for full training.
  std::function<void(const std::string& dir)> write_adapter;
  // Told of each save as it goes (the launcher reports to the coordinator): on every rank once its
  // file is written (error empty) or failed, before the ranks compare notes; then on every rank
  // with the save's outcome, right after the commit (or the failure). Empty: nothing.
  std::function<void(int64_t step, uint64_t bytes, const std::string& xxh3,
                     const std::string& error)>
      on_rank_written;
  std::function<void(const SaveResult&)> on_saved;
  // Runs on the thread that writes this rank's file, right before it writes (tests hold an
  // asynchronous write back with it). Empty: nothing.
  std::function<void()> before_write;
};

// The training state a checkpoint saves and restores; borrowed.
struct TrainingState {
  ShardedModel& sharded;
  AdamW& optimizer;
  Stateful& sampler;         // the data position (TrainBatches)
  at::Generator generator;   // the model's (dropout)
  Stateful* loop = nullptr;  // the loop's counters (TrainLoop::counters), when there is a loop
};

class Checkpointer final : public TrainingObserver {
 public:
  Checkpointer(TrainingState state, Communicator& world, CheckpointerOptions options,
               std::shared_ptr<spdlog::logger> log);
  // Waits for a background write still running (its checkpoint is not committed).
  ~Checkpointer() override;
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Collective: saves the state after `step` completed optimizer steps; synchronous, or staged
  // for the background (then result().committed comes later). A pending save is committed first.
  void save(int64_t step);
  // Collective: waits for a pending background save and commits it.
  void finish_pending();
  // Before the optimizer changes the state: waits for a background write still reading it (the
  // wait counts in the save's stall). Collective-free.
  void before_update();

  // The last save's outcome (committed, or why not).
  const SaveResult& last_result() const { return last_; }

  // TrainingObserver
  void on_start(const TrainStart& start) override;
  StepDecision at_step_boundary(int64_t completed_steps) override;
  void on_decision(int64_t completed_steps, const StepDecision& agreed) override;
  void on_end(const TrainEnd& end) override;

 private:
  struct Pending;
  struct RankReport;
  // This rank's tensors for its file (views of the state, or staged copies when `stage`).
  std::vector<std::pair<std::string, at::Tensor>> rank_tensors(bool stage);
  nlohmann::json manifest_body(int64_t step);
  std::string write_adapter(const std::string& staging);
  void commit(Pending& pending);

  TrainingState state_;
  Communicator& world_;
  CheckpointerOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  int64_t save_every_ = 0;
  int64_t total_steps_ = 0;
  std::unique_ptr<Pending> pending_;
  SaveResult last_;
};

// ---------------------------------------------------------------- resuming

struct ResumeInfo {
  int64_t step = 0;          // completed optimizer steps: the next step to run
  bool same_layout = false;  // the same world and shard size: generators restored too
};

struct Resumed {
  CheckpointManifest manifest;
  ResumeInfo info;
};

// Collective over `world`: resumes `state` from the checkpoint `spec` names. `spec` is a
// checkpoint directory, or "latest": the newest committed one under `root` that loads, the
// others skipped with a warning naming the bad file; none (nullopt, `state` untouched) when
// `root` holds no committed checkpoint at all (a first start). `check` sees each candidate's
// manifest first (its UserError, e.g. a changed adapter, propagates as is).
//
// Loading: every flat parameter's shard is re-sliced from the saved global layout to this
// rank's (any world or shard size) and the optimizer moments with it; then the optimizer's step
// count, the sampler (which re-deals the remaining rows to this world) and, at the same world
// and shard size, this rank's generator. Every file's checksum is verified before any of that
// counts: each rank reads each file it needs once (stream_safetensors: the copy and the checksum
// on one pass, so a resume at the same layout reads every byte once), the files no rank needs
// are verified on their own (file i by rank i % world), and the ranks agree before the
// optimizer, sampler and generators are restored. UserError (CorruptData) naming the directory
// and the file when `spec` is a directory that fails, or when `root` holds committed
// checkpoints and none loads; UserError naming the flat parameter when the model's layout
// differs from the saved one (another model shape, adapter rank or targets, dtype).
std::optional<Resumed> resume_training(
    const std::string& spec, const std::string& root, TrainingState& state, Communicator& world,
    spdlog::logger& log, const std::function<void(const CheckpointManifest&)>& check = {});

}  // namespace ptrain
