#include "trainer/train_step.h"

#include <cmath>

#include "core/error.h"

namespace ptrain {
namespace {

int64_t learned_tokens(const PackedBatch& batch) {
  return batch.labels.ne(-100).sum().item<int64_t>();
}

}  // namespace

std::vector<OptimizedTensor> optimized_tensors(ShardedModel& sharded) {
  std::vector<OptimizedTensor> out;
  for (FlatParameter* flat : sharded.trainable()) {
    OptimizedTensor t{flat->master, flat->grad, {}};
    for (size_t p = 0; p < flat->pieces.size(); ++p)
      if (flat->piece_decays[p])
        t.decay_ranges.emplace_back(flat->pieces[p].shard_offset,
                                    flat->pieces[p].shard_offset + flat->pieces[p].count);
    out.push_back(std::move(t));
  }
  return out;
}

TrainStep::TrainStep(LlamaForCausalLM model, ShardedModel& sharded, AdamW& optimizer,
                     const LrSchedule& schedule, Communicator& world, double max_grad_norm)
    : model_(std::move(model)),
      sharded_(sharded),
      optimizer_(optimizer),
      schedule_(schedule),
      world_(world),
      max_grad_norm_(max_grad_norm) {}

StepResult TrainStep::run(const std::vector<PackedBatch>& micro_batches) {
  StepResult result;
  result.step = next_step_++;
  // Watchdog reports and hang triage name the step each collective belongs to (1-based, as the
  // logs count steps).
  world_.set_step(result.step + 1);
  sharded_.groups().shard->set_step(result.step + 1);
  if (sharded_.groups().replicate) sharded_.groups().replicate->set_step(result.step + 1);
  result.micro_batches = static_cast<int64_t>(micro_batches.size());
  result.lr = schedule_.at(result.step);

  // 1. The global count of learned tokens normalises every micro-batch's loss.
  int64_t counts[2] = {0, 0};  // learned tokens, non-padding tokens
  for (const PackedBatch& b : micro_batches) {
    counts[0] += learned_tokens(b);
    counts[1] += b.sequence_ids.ge(0).sum().item<int64_t>();
  }
  world_.all_reduce(comm_buffer(counts, 2), ReduceOp::kSum);
  const int64_t tokens = counts[0];
  result.tokens = tokens;
  result.row_tokens = counts[1];

  // 2. Forward and backward per micro-batch; every rank runs the same number of them.
  sharded_.zero_grad();
  double loss_sum = 0;
  const double scale = tokens > 0 ? 1.0 / static_cast<double>(tokens) : 0.0;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    at::Tensor loss = model_->loss_sum(micro_batches[i]);
    loss_sum += loss.item<double>();
    if (loss.requires_grad()) (loss * scale).backward();
    sharded_.finish_backward(i + 1 == micro_batches.size());
  }
  world_.all_reduce(comm_buffer(&loss_sum, 1), ReduceOp::kSum);
  result.loss = loss_sum * scale;

  // 3. Global gradient norm over the shard group (replicas hold the same shards), clip, update.
  const std::vector<OptimizedTensor> tensors = optimized_tensors(sharded_);
  // Reduced where the gradients live: the shard group's communicator moves device buffers when
  // the model is on a GPU (NCCL), host buffers otherwise.
  const at::Device device = tensors.empty() ? at::Device(at::kCPU) : tensors[0].grad.device();
  at::Tensor squared =
      torch::full({1}, squared_norm(tensors), torch::dtype(at::kDouble).device(device));
  sharded_.groups().shard->all_reduce(comm_buffer_of(squared), ReduceOp::kSum);
  result.grad_norm = std::sqrt(squared.item<double>());
  result.non_finite = !std::isfinite(result.loss) || !std::isfinite(result.grad_norm);
  if (result.non_finite || tokens == 0) return result;
  if (before_update_) before_update_();
  clip_gradients(tensors, result.grad_norm, max_grad_norm_);
  optimizer_.step(result.lr);
  sharded_.update_compute_shards();
  result.applied = true;
  return result;
}

}  // namespace ptrain
