// One optimizer step of sharded training, on every rank in lockstep (ARCHITECTURE.md, "Data flow
// of one optimizer step"):
//   1. the step's learned tokens (labels != -100) over all micro-batches and all ranks: N, by one
//      all-reduce; every micro-batch backpropagates loss_sum / N, so the summed gradient is that of
//      the mean over the whole global batch, however rows and tokens fall on ranks and
//      micro-batches;
//   2. per micro-batch: forward and backward through the sharded model (its hooks gather, recompute
//      and reduce-scatter unit by unit), then ShardedModel::finish_backward;
//   3. the global gradient norm (one all-reduce of shard norms over the shard group), clipping,
//      AdamW on the fp32 master shards at the schedule's rate, masters cast to compute shards.
// A step whose loss or gradient norm is not finite changes no weight: it is skipped and counted
// (every rank sees the same all-reduced values, so all skip together). A step with no learned
// token anywhere is skipped too.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "model/llama.h"
#include "trainer/fsdp/sharded_model.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/lr_schedule.h"

namespace ptrain {

struct StepResult {
  int64_t step = 0;        // the optimizer step this was (0-based), whether applied or not
  double loss = 0;         // mean token loss over the global batch
  double grad_norm = 0;    // before clipping
  double lr = 0;           // the rate applied
  int64_t tokens = 0;      // learned tokens in the global batch
  int64_t row_tokens = 0;  // tokens the model computed on (not padding) in the global batch
  int64_t micro_batches = 0;
  bool applied = false;     // false: skipped (non-finite, or no learned token)
  bool non_finite = false;  // skipped because the loss or the gradient norm was not finite
};

// The optimizer tensors of a sharded model's trainable flat parameters: master shards, gradient
// shards, and the ranges that take weight decay (matrices; not norms, biases or other vectors).
std::vector<OptimizedTensor> optimized_tensors(ShardedModel& sharded);

class TrainStep {
 public:
  TrainStep(LlamaForCausalLM model, ShardedModel& sharded, AdamW& optimizer,
            const LrSchedule& schedule, Communicator& world, double max_grad_norm);

  // Runs one step over this rank's micro-batches of it (the same count on every rank).
  StepResult run(const std::vector<PackedBatch>& micro_batches);

  int64_t next_step() const { return next_step_; }
  void set_next_step(int64_t step) { next_step_ = step; }
  // Called right before the optimizer changes the masters and moments (a background checkpoint
  // write of them must be done by then: Checkpointer::before_update).
  void set_before_update(std::function<void()> hook) { before_update_ = std::move(hook); }

 private:
  LlamaForCausalLM model_;
  ShardedModel& sharded_;
  AdamW& optimizer_;
  const LrSchedule& schedule_;
  Communicator& world_;
  double max_grad_norm_;
  int64_t next_step_ = 0;
  std::function<void()> before_update_;
};

}  // namespace ptrain
