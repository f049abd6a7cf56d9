// The training loop: optimizer steps over the distributed sampler's micro-batches until the
// planned number of steps, with periodic evaluation on the validation split, metrics, and the
// observers' step-boundary decisions (train_observer.h).
//
// Step accounting is exact before the first step: the sampler deals ceil(rows / (world x
// micro_batch_size)) micro-batches per epoch to every rank, the micro-batches of all epochs form
// one stream, and step k takes micro-batches [k x accumulation, (k + 1) x accumulation) of it (the
// last step of the run takes what is left). So total_steps = max_steps, or ceil(num_epochs x
// micro-batches per epoch / accumulation), and the schedule, the progress bar and warmup_ratio
// know it from step one. A resumed run counts from the restored sampler's position instead
// (planned_steps below), so a resume at another world size runs what is left. Every rank runs the
// same steps with the same number of micro-batches, so no rank waits alone, whatever rows it got.
//
// Evaluation (before the first step, every eval_steps, at the end) runs in lockstep too: the
// validation samples are packed into rows once (the same layout on every rank), rank r scores rows
// r, r + world, ...; a rank without a row in a round runs an all-padding one, since every forward
// of a sharded model is collective.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "data/train_batches.h"
#include "trainer/eval.h"
#include "trainer/train_observer.h"
#include "trainer/train_step.h"

namespace ptrain {

struct LoopOptions {
  int64_t num_epochs = 1;
  int64_t max_steps = 0;  // > 0: exactly this many steps
  int64_t gradient_accumulation_steps = 1;
  int64_t logging_steps = 1;
  int64_t eval_steps = 0;  // 0: evaluate only at the end (when there is a validation split)
  int64_t max_nonfinite_steps = 3;
  int64_t sequence_len = 2048;
  int64_t micro_batch_size = 1;
  double flops_per_token = 0;    // model FLOPs per (non-padding) token of a step, fwd + bwd
  double gemm_peak_gflops = 0;   // this rank's bf16 GEMM peak
  int64_t ideal_bytes = 0;       // the memory pre-flight's per-rank estimate (reported at start)
  at::Device device = at::kCPU;  // where the model computes: batches are moved there
};

// The loop's own state that a checkpoint carries: the non-finite steps skipped so far and the
// current run of them (max_nonfinite_steps counts it), so a resumed run ends where an
// uninterrupted one would.
struct LoopCounters final : Stateful {
  int64_t skipped = 0;
  int64_t consecutive_nonfinite = 0;
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;
};

// Micro-batches the run has left when step `first_step` comes next and `batches` is where it
// is (restored from a checkpoint, perhaps written at another world size): max_steps' worth, or
// the rest of the current epoch (as this world deals it) and the epochs after it.
int64_t micro_batches_left(const LoopOptions& options, const TrainBatches& batches,
                           int64_t first_step);
// The run's total_steps from there (see the accounting above): first_step + ceil(micro_batches_left
// / accumulation), or max_steps. At the world size that wrote the checkpoint, the same total as a
// run that never stopped.
int64_t planned_steps(const LoopOptions& options, const TrainBatches& batches, int64_t first_step);

// A RowBatch (data/) as the model's PackedBatch.
PackedBatch to_packed_batch(const RowBatch& rows);

class TrainLoop {
 public:
  TrainLoop(LlamaForCausalLM model, ShardedModel& sharded, TrainStep& step, TrainBatches& batches,
            std::vector<TokenSample> validation, Communicator& world, LoopOptions options);

  void add_observer(TrainingObserver& observer) { observers_.push_back(&observer); }

  // Runs from the current step to the planned total; returns why it ended. UserError when
  // max_nonfinite_steps consecutive steps were non-finite (naming the step).
  TrainEnd run();

  // Loss and perplexity on the validation split (collective; the model in eval mode meanwhile).
  EvalMetrics evaluate(int64_t completed_steps);

  int64_t total_steps() const { return total_steps_; }
  LoopCounters& counters() { return counters_; }

 private:
  StepDecision agree(int64_t completed_steps);
  StepMetrics measure(const StepResult& result, double seconds, double exposed, int64_t skipped);

  LlamaForCausalLM model_;
  ShardedModel& sharded_;
  TrainStep& step_;
  TrainBatches& batches_;
  std::vector<TokenSample> validation_;
  Communicator& world_;
  LoopOptions options_;
  std::vector<TrainingObserver*> observers_;
  int64_t total_steps_ = 0;
  int64_t micro_batches_left_ = 0;  // from the first step of this run
  LoopCounters counters_;
};

}  // namespace ptrain
