// ShardedModel: FSDP applied to a model from outside, through its unit seam (model/model_units.h).
//
// [Note: what each rank holds]
// Every unit's tensors are grouped by (kind, dtype) into flat parameters (parallel/
// flat_parameter.h) sharded over the shard group: frozen NF4 bytes, frozen tensors and trainable
// tensors each in their registered dtype (bf16 for a bf16 model, fp32 for LoRA masters). Between
// uses a rank holds only its shards, and the model's tensors hold no storage (zero elements).
// Trainable flat parameters also have, on this rank's shard only: an fp32 master (the shard itself
// when the dtype is fp32) and an fp32 gradient accumulated over the step's micro-batches; the
// optimizer updates the masters and update_compute_shards() casts them back.
//
// [Note: the schedule]
// As the model calls its hooks (this object is the model's UnitHooks while it lives):
//   pre_forward(u)   all-gather unit u (unless still gathered), wait, point its tensors at views
//                    of the gathered buffer; prefetch unit u + 1's all-gather (async)
//   post_forward(u)  layers: free the gathered buffer when reshard_after_forward (ZeRO-3) and the
//                    model recomputes in backward, or when no backward will follow; the root stays
//                    gathered until its post_backward
//   pre_backward(u)  gather again if freed; prefetch the unit backward visits next (u - 1)
//   post_backward(u) flatten the unit's gradients into a reduce_dtype buffer and reduce-scatter
//                    it (async) over the shard group, then (HSDP) all-reduce across replicas;
//                    free the gradients and the gathered buffer
// With reduce_every_micro_batch false the flattened gradients are summed locally instead and
// reduced once, in finish_backward(true) after the step's last micro-batch (less communication,
// one unsharded gradient buffer per trainable unit kept across micro-batches).
// Every rank must run the same units the same number of times (a unit skipped on one rank is a
// hang, as in every FSDP): the training loop guarantees equal micro-batch counts.
//
// Gradients are summed across ranks (not averaged): the loss a rank backpropagates is already
// divided by the step's global token count, so the sum is the gradient of the global mean.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"
#include "model/model_units.h"
#include "parallel/flat_parameter.h"
#include "parallel/fsdp_groups.h"

namespace ptrain {

struct FsdpOptions {
  bool reshard_after_forward = true;     // false: ZeRO-2 (keep gathered from forward to backward)
  bool reduce_every_micro_batch = true;  // false: reduce once per step
  at::ScalarType reduce_dtype = at::kFloat;
  bool prefetch = true;  // all-gather the next unit while the current one computes
  at::Device device = at::kCPU;
  // A trainable flat parameter whose shard is larger than this is reduce-scattered in chunks of
  // this many elements per rank, one after the other, built straight from the gradients: no
  // unsharded reduce_dtype copy of it exists (the root's embeddings and lm_head).
  int64_t reduce_chunk_numel = int64_t{1} << 22;
};

// One flat parameter of one unit on this rank.
struct FlatParameter {
  FlatLayout layout;
  bool trainable = false;
  std::vector<at::Tensor> tensors;  // the model's registered tensors, in layout order
  at::Tensor shard;          // [shard_numel] in the tensors' dtype: what the all-gather sends
  at::Tensor master;         // trainable: [shard_numel] fp32 (the shard itself when fp32)
  at::Tensor grad;           // trainable: [shard_numel] fp32, this step's gradient
  at::Tensor deferred_grad;  // !reduce_every_micro_batch: [padded] unreduced sum
  // Pieces of this rank's shard, and whether each piece's tensor takes weight decay (matrices
  // do; norms, biases and other vectors do not).
  std::vector<ShardPiece> pieces;
  std::vector<bool> piece_decays;
};

// Seconds this rank's host waited for collectives (the communication compute did not hide).
struct CommStats {
  double exposed_seconds = 0;
  int64_t all_gathers = 0, reductions = 0;
};

// The CommBuffer over a contiguous tensor's elements, on its device.
CommBuffer comm_buffer_of(const at::Tensor& t);

class ShardedModel final : public UnitHooks {
 public:
  // Called with a unit's index before that unit is sharded: it gives the unit's deferred tensors
  // (model/deferred_weights.h) their values, e.g. from the checkpoint.
  using UnitLoader = std::function<void(int unit)>;

  // Shards `model` (complete: adapters applied, trainability set) unit by unit: `load` (when
  // given) fills the unit's tensors, they are copied into flat buffers on options.device, this
  // rank keeps its shards, and the tensors are released; so with a model built with deferred
  // weights no more than one unit is ever whole on this rank. Installs itself as the model's
  // hooks. Collective-free.
  ShardedModel(LlamaForCausalLM model, FsdpGroups groups, FsdpOptions options,
               const UnitLoader& load = {});
  // Removes the hooks; the model's tensors stay released (call gather_all() first to use it).
  ~ShardedModel() override;
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  // ---- the step protocol (every rank, in lockstep)
  // Zeroes every gradient shard (and deferred sum): before a step's first micro-batch.
  void zero_grad();
  // After a micro-batch's backward: completes its pending reductions; when `last_micro_batch`
  // and gradients are reduced once per step, reduces the step's summed gradients.
  void finish_backward(bool last_micro_batch);
  // The trainable flat parameters (masters and gradient shards for the optimizer).
  std::vector<FlatParameter*> trainable();
  // Every flat parameter, unit by unit (names are "<unit>/<kind>/<dtype>", the same on every
  // rank and at every world size: what a checkpoint keys shards by).
  std::vector<FlatParameter*> flat_parameters();
  // Casts every updated master back into its compute shard (a no-op for fp32 tensors).
  void update_compute_shards();

  // ---- whole tensors (collective over the shard group)
  // Gathers unit by unit and calls visit(name, tensor) with each tensor's full value (of the
  // trainable tensors only, or of all), then frees it again.
  void for_each_full_tensor(
      bool trainable_only, const std::function<void(const std::string&, const at::Tensor&)>& visit);
  // Gathers every unit and leaves it gathered (the model works as an unsharded one; hooks stay).
  void gather_all();
  // Points the model's trainable tensors at their full values (the frozen ones stay released):
  // what saving an adapter reads, without gathering the base.
  void gather_trainable();
  // Releases what gather_trainable() pointed at (units that are not gathered): training goes on
  // without the full copies. Collective-free.
  void release_trainable();

  const FsdpGroups& groups() const { return groups_; }
  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  // Bytes this rank holds between uses: shards, masters and gradient shards.
  int64_t sharded_bytes() const;
  int unit_count() const { return static_cast<int>(units_.size()); }
  // Bytes of unit `unit`'s gathered buffers (0: the root).
  int64_t unit_bytes(int unit) const;

  // UnitHooks
  void pre_forward(int unit) override;
  void post_forward(int unit) override;
  void pre_backward(int unit) override;
  void post_backward(int unit) override;

 private:
  enum class State { kSharded, kGathering, kGathered };
  struct Unit {
    std::string name;
    std::vector<FlatParameter> flats;
    State state = State::kSharded;
    std::vector<at::Tensor> full;  // one gathered buffer per flat parameter while not sharded
    std::vector<WorkHandle> gathers;
  };
  struct PendingReduction {
    FlatParameter* flat = nullptr;
    at::Tensor input, output;  // kept alive until the collective is complete
    WorkHandle work;
  };

  void shard_unit(const ModelUnit& unit, Unit& out);
  void start_gather(int unit);
  void ensure_gathered(int unit);
  void release(int unit);
  void reduce_gradients(int unit);
  // Flattens the unit's gradients of `flat` into a padded reduce_dtype buffer (zero padding) and
  // frees them.
  at::Tensor flatten_gradients(FlatParameter& flat);
  void start_reduction(FlatParameter& flat, at::Tensor padded);
  // One rank alone (shard group of 1, no replicas): the gradients are added into the shard's.
  void add_gradients_locally(FlatParameter& flat);
  // The chunked reduce-scatter (FsdpOptions::reduce_chunk_numel), waited for chunk by chunk.
  void reduce_in_chunks(FlatParameter& flat);
  void complete_reductions();
  void wait(const WorkHandle& work);

  LlamaForCausalLM model_;
  FsdpGroups groups_;
  FsdpOptions options_;
  std::vector<Unit> units_;
  std::vector<PendingReduction> pending_;
  CommStats stats_;
};

}  // namespace ptrain
