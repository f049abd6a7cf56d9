#include "trainer/fsdp/sharded_model.h"

#include <chrono>
#include <map>

#include "core/error.h"
#include "model/deferred_weights.h"

namespace ptrain {

CommBuffer comm_buffer_of(const at::Tensor& t) {
  PTRAIN_ASSERT(t.is_contiguous(), "collective on a non-contiguous tensor");
  CommBuffer b;
  b.data = t.data_ptr();
  b.numel = t.numel();
  b.dtype = t.scalar_type();
  b.device = t.is_cuda() ? DeviceType::kCuda : DeviceType::kCpu;
  return b;
}

namespace {

// The kinds of a unit, in the order their flat parameters are laid out.
struct KindList {
  const char* name;
  const std::vector<UnitTensor>* tensors;
  bool trainable;
};

}  // namespace

// ---------------------------------------------------------------- construction

ShardedModel::ShardedModel(LlamaForCausalLM model, FsdpGroups groups, FsdpOptions options,
                           const UnitLoader& load)
    : model_(std::move(model)), groups_(std::move(groups)), options_(options) {
  const std::vector<ModelUnit> units = model_->units();
  units_.resize(units.size());
  for (size_t u = 0; u < units.size(); ++u) {
    if (load) load(static_cast<int>(u));
    shard_unit(units[u], units_[u]);
  }
  model_->set_unit_hooks(this);
}

ShardedModel::~ShardedModel() {
  model_->set_unit_hooks(nullptr);
}

void ShardedModel::shard_unit(const ModelUnit& unit, Unit& out) {
  torch::NoGradGuard no_grad;
  out.name = unit.name;
  const int shards = groups_.shard_size(), rank = groups_.shard->rank();
  for (const KindList& kind :
       {KindList{"frozen_bytes", &unit.frozen_bytes, false},
        KindList{"frozen", &unit.frozen, false}, KindList{"trainable", &unit.trainable, true}}) {
    // One flat parameter per dtype of the kind, tensors in their listed order.
    std::map<at::ScalarType, std::vector<const UnitTensor*>> by_dtype;
    for (const UnitTensor& t : *kind.tensors) {
      PTRAIN_ASSERT(!is_deferred(t.tensor), "unit {}: tensor '{}' was never loaded", unit.name,
                    t.name);
      by_dtype[t.tensor.scalar_type()].push_back(&t);
    }
    for (const auto& [dtype, tensors] : by_dtype) {
      std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
      for (const UnitTensor* t : tensors) shapes.emplace_back(t->name, t->tensor.sizes().vec());
      FlatParameter flat{FlatLayout(unit.name + "/" + kind.name + "/" + c10::toString(dtype), dtype,
                                    shapes, shards)};
      flat.trainable = kind.trainable;
      const auto device_options = torch::dtype(dtype).device(options_.device);
      at::Tensor full = torch::zeros({flat.layout.padded_numel()}, device_options);
      for (size_t i = 0; i < tensors.size(); ++i) {
        const FlatEntry& e = flat.layout.entries()[i];
        full.narrow(0, e.offset, e.numel).copy_(tensors[i]->tensor.detach().reshape({-1}));
        flat.tensors.push_back(tensors[i]->tensor);
      }
      flat.shard =
          full.narrow(0, rank * flat.layout.shard_numel(), flat.layout.shard_numel()).clone();
      if (flat.trainable) {
        flat.master = dtype == at::kFloat ? flat.shard : flat.shard.to(at::kFloat);
        flat.grad = torch::zeros({flat.layout.shard_numel()},
                                 torch::dtype(at::kFloat).device(options_.device));
        flat.pieces = flat.layout.pieces(rank);
        for (const ShardPiece& p : flat.pieces)
          flat.piece_decays.push_back(flat.layout.entries()[p.entry].shape.size() >= 2);
      }
      out.flats.push_back(std::move(flat));
    }
  }
  out.full.resize(out.flats.size());
  out.gathers.resize(out.flats.size());
  // The tensors still hold their own storage: release it.
  for (auto& flat : out.flats)
    for (auto& t : flat.tensors) t.set_data(torch::empty({0}, t.options()));
  out.state = State::kSharded;
}

// ---------------------------------------------------------------- gather and release

void ShardedModel::wait(const WorkHandle& work) {
  const auto start = std::chrono::steady_clock::now();
  work->wait();
  stats_.exposed_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void ShardedModel::start_gather(int unit) {
  Unit& u = units_[unit];
  PTRAIN_ASSERT(u.state == State::kSharded, "unit {} gathered twice", u.name);
  for (size_t f = 0; f < u.flats.size(); ++f) {
    const FlatParameter& flat = u.flats[f];
    ++stats_.all_gathers;
    if (groups_.shard_size() == 1) {
      u.full[f] = flat.shard;  // a rank's only shard is the whole buffer: nothing to gather
      continue;
    }
    u.full[f] = torch::empty({flat.layout.padded_numel()}, flat.shard.options());
    u.gathers[f] =
        groups_.shard->all_gather_async(comm_buffer_of(u.full[f]), comm_buffer_of(flat.shard));
  }
  u.state = State::kGathering;
}

void ShardedModel::ensure_gathered(int unit) {
  Unit& u = units_[unit];
  if (u.state == State::kGathered) return;
  if (u.state == State::kSharded) start_gather(unit);
  torch::NoGradGuard no_grad;
  for (size_t f = 0; f < u.flats.size(); ++f) {
    if (u.gathers[f]) wait(u.gathers[f]);
    u.gathers[f].reset();
    FlatParameter& flat = u.flats[f];
    for (size_t i = 0; i < flat.tensors.size(); ++i) {
      const FlatEntry& e = flat.layout.entries()[i];
      flat.tensors[i].set_data(u.full[f].narrow(0, e.offset, e.numel).view(e.shape));
    }
  }
  u.state = State::kGathered;
}

void ShardedModel::release(int unit) {
  Unit& u = units_[unit];
  if (u.state == State::kSharded) return;
  PTRAIN_ASSERT(u.state == State::kGathered, "unit {} released while its all-gather runs", u.name);
  torch::NoGradGuard no_grad;
  for (size_t f = 0; f < u.flats.size(); ++f) {
    for (auto& t : u.flats[f].tensors) t.set_data(torch::empty({0}, t.options()));
    u.full[f] = at::Tensor();
  }
  u.state = State::kSharded;
}

void ShardedModel::gather_all() {
  for (size_t u = 0; u < units_.size(); ++u) ensure_gathered(static_cast<int>(u));
}

void ShardedModel::gather_trainable() {
  torch::NoGradGuard no_grad;
  for_each_full_tensor(true, [&](const std::string& name, const at::Tensor& value) {
    for (Unit& u : units_)
      for (FlatParameter& flat : u.flats)
        for (size_t i = 0; flat.trainable && i < flat.tensors.size(); ++i)
          if (flat.layout.entries()[i].name == name) flat.tensors[i].set_data(value);
  });
}

void ShardedModel::release_trainable() {
  torch::NoGradGuard no_grad;
  for (Unit& u : units_) {
    if (u.state != State::kSharded) continue;
    for (FlatParameter& flat : u.flats)
      if (flat.trainable)
        for (at::Tensor& t : flat.tensors) t.set_data(torch::empty({0}, t.options()));
  }
}

// ---------------------------------------------------------------- hooks

void ShardedModel::pre_forward(int unit) {
  ensure_gathered(unit);
  const int next = unit + 1;
  if (options_.prefetch && next < static_cast<int>(units_.size()) &&
      units_[next].state == State::kSharded)
    start_gather(next);
}

void ShardedModel::post_forward(int unit) {
  const bool backward_follows = torch::GradMode::is_enabled();
  if (unit == 0) {
    // The root (embeddings, final norm, lm_head) serves both ends of the model: it stays
    // gathered until its post_backward, unless no backward follows.
    if (!backward_follows) release(0);
    return;
  }
  // Without activation checkpointing the layer's autograd graph holds views of the gathered
  // buffer (matmul saves weight.t()), so freeing it would only add a second copy at backward:
  // such a unit stays gathered until its backward (ZeRO-2 for it).
  const bool recomputes = model_->options().activation_checkpointing;
  if (!backward_follows || (options_.reshard_after_forward && recomputes)) release(unit);
}

void ShardedModel::pre_backward(int unit) {
  ensure_gathered(unit);
  // Backward visits the root's head first, then the layers last to first.
  const int next = unit == 0 ? static_cast<int>(units_.size()) - 1 : unit - 1;
  if (options_.prefetch && next >= 1 && next != unit && units_[next].state == State::kSharded)
    start_gather(next);
}

void ShardedModel::post_backward(int unit) {
  reduce_gradients(unit);
  release(unit);
}

// ---------------------------------------------------------------- gradients

at::Tensor ShardedModel::flatten_gradients(FlatParameter& flat) {
  torch::NoGradGuard no_grad;
  at::Tensor padded = torch::zeros({flat.layout.padded_numel()},
                                   torch::dtype(options_.reduce_dtype).device(options_.device));
  for (size_t i = 0; i < flat.tensors.size(); ++i) {
    at::Tensor& t = flat.tensors[i];
    if (!t.grad().defined()) continue;  // a tensor the loss did not reach
    const FlatEntry& e = flat.layout.entries()[i];
    padded.narrow(0, e.offset, e.numel).copy_(t.grad().reshape({-1}));
    t.mutable_grad().reset();
  }
  return padded;
}

void ShardedModel::reduce_gradients(int unit) {
  // The previous unit's reductions ran while this unit's backward computed: complete them first,
  // so at most one unit's gradient buffers are in flight.
  complete_reductions();
  for (FlatParameter& flat : units_[unit].flats) {
    if (!flat.trainable) continue;
    if (options_.reduce_every_micro_batch && !groups_.replicate) {
      if (groups_.shard_size() == 1) {
        add_gradients_locally(flat);
        continue;
      }
      if (flat.layout.shard_numel() > options_.reduce_chunk_numel) {
        reduce_in_chunks(flat);
        continue;
      }
    }
    at::Tensor padded = flatten_gradients(flat);
    if (options_.reduce_every_micro_batch) {
      start_reduction(flat, std::move(padded));
    } else if (flat.deferred_grad.defined()) {
      flat.deferred_grad.add_(padded);
    } else {
      flat.deferred_grad = std::move(padded);
    }
  }
}

void ShardedModel::add_gradients_locally(FlatParameter& flat) {
  torch::NoGradGuard no_grad;
  ++stats_.reductions;
  for (size_t i = 0; i < flat.tensors.size(); ++i) {
    at::Tensor& t = flat.tensors[i];
    if (!t.grad().defined()) continue;
    const FlatEntry& e = flat.layout.entries()[i];
    flat.grad.narrow(0, e.offset, e.numel).add_(t.grad().reshape({-1}));
    t.mutable_grad().reset();
  }
}

void ShardedModel::reduce_in_chunks(FlatParameter& flat) {
  torch::NoGradGuard no_grad;
  const int ranks = groups_.shard_size();
  const int64_t shard = flat.layout.shard_numel();
  const auto options = torch::dtype(options_.reduce_dtype).device(options_.device);
  for (int64_t k = 0; k < shard; k += options_.reduce_chunk_numel) {
    const int64_t n = std::min(options_.reduce_chunk_numel, shard - k);
    // Elements [k, k + n) of every rank's shard, rank after rank, straight from the gradients.
    at::Tensor input = torch::zeros({ranks * n}, options);
    for (int r = 0; r < ranks; ++r) {
      const int64_t lo = r * shard + k, hi = lo + n;
      for (size_t i = 0; i < flat.tensors.size(); ++i) {
        const FlatEntry& e = flat.layout.entries()[i];
        const int64_t a = std::max(lo, e.offset), b = std::min(hi, e.offset + e.numel);
        const at::Tensor& g = flat.tensors[i].grad();
        if (a >= b || !g.defined()) continue;
        input.narrow(0, r * n + (a - lo), b - a)
            .copy_(g.reshape({-1}).narrow(0, a - e.offset, b - a));
      }
    }
    at::Tensor output = torch::empty({n}, options);
    wait(groups_.shard->reduce_scatter_async(comm_buffer_of(output), comm_buffer_of(input),
                                             ReduceOp::kSum));
    ++stats_.reductions;
    flat.grad.narrow(0, k, n).add_(output.to(at::kFloat));
  }
  for (at::Tensor& t : flat.tensors) t.mutable_grad().reset();
}

void ShardedModel::start_reduction(FlatParameter& flat, at::Tensor padded) {
  PendingReduction r;
  r.flat = &flat;
  r.input = std::move(padded);
  r.output = torch::empty({flat.layout.shard_numel()}, r.input.options());
  r.work = groups_.shard->reduce_scatter_async(comm_buffer_of(r.output), comm_buffer_of(r.input),
                                               ReduceOp::kSum);
  ++stats_.reductions;
  pending_.push_back(std::move(r));
}

void ShardedModel::complete_reductions() {
  torch::NoGradGuard no_grad;
  for (PendingReduction& r : pending_) {
    wait(r.work);
    if (groups_.replicate)
      wait(groups_.replicate->all_reduce_async(comm_buffer_of(r.output), ReduceOp::kSum));
    r.flat->grad.add_(r.output.to(at::kFloat));
  }
  pending_.clear();
}

void ShardedModel::finish_backward(bool last_micro_batch) {
  complete_reductions();
  if (!last_micro_batch || options_.reduce_every_micro_batch) return;
  for (Unit& u : units_)
    for (FlatParameter& flat : u.flats)
      if (flat.trainable && flat.deferred_grad.defined()) {
        start_reduction(flat, std::move(flat.deferred_grad));
        flat.deferred_grad = at::Tensor();
      }
  complete_reductions();
}

void ShardedModel::zero_grad() {
  for (Unit& u : units_)
    for (FlatParameter& flat : u.flats)
      if (flat.trainable) {
        flat.grad.zero_();
        flat.deferred_grad = at::Tensor();
      }
}

std::vector<FlatParameter*> ShardedModel::flat_parameters() {
  std::vector<FlatParameter*> out;
  for (Unit& u : units_)
    for (FlatParameter& flat : u.flats) out.push_back(&flat);
  return out;
}

std::vector<FlatParameter*> ShardedModel::trainable() {
  std::vector<FlatParameter*> out;
  for (Unit& u : units_)
    for (FlatParameter& flat : u.flats)
      if (flat.trainable) out.push_back(&flat);
  return out;
}

void ShardedModel::update_compute_shards() {
  torch::NoGradGuard no_grad;
  for (FlatParameter* flat : trainable())
    if (!flat->master.is_same(flat->shard)) flat->shard.copy_(flat->master);
}

// ---------------------------------------------------------------- whole tensors

void ShardedModel::for_each_full_tensor(
    bool trainable_only, const std::function<void(const std::string&, const at::Tensor&)>& visit) {
  torch::NoGradGuard no_grad;
  for (Unit& u : units_)
    for (FlatParameter& flat : u.flats) {
      if (trainable_only && !flat.trainable) continue;
      at::Tensor full = torch::empty({flat.layout.padded_numel()}, flat.shard.options());
      wait(groups_.shard->all_gather_async(comm_buffer_of(full), comm_buffer_of(flat.shard)));
      for (const FlatEntry& e : flat.layout.entries())
        visit(e.name, full.narrow(0, e.offset, e.numel).view(e.shape));
    }
}

int64_t ShardedModel::sharded_bytes() const {
  int64_t bytes = 0;
  for (const Unit& u : units_)
    for (const FlatParameter& flat : u.flats) {
      bytes += flat.shard.nbytes();
      if (flat.trainable) {
        if (!flat.master.is_same(flat.shard)) bytes += flat.master.nbytes();
        bytes += flat.grad.nbytes();
      }
    }
  return bytes;
}

int64_t ShardedModel::unit_bytes(int unit) const {
  int64_t bytes = 0;
  for (const FlatParameter& flat : units_[unit].flats)
    bytes += flat.layout.padded_numel() * static_cast<int64_t>(flat.shard.element_size());
  return bytes;
}

}  // namespace ptrain
