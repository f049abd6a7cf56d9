// The model's sharding seam: FSDP units, the kinds of their tensors, and the hooks a sharding
// layer attaches to them. Nothing here knows about ranks or communication.
//
// [Note: units]
// A model is cut into units, the granularity at which a sharding layer gathers parameters before
// they are used and frees them after: unit 0 is the root (embeddings, final norm, lm_head; tied
// weights are one tensor and stay together), unit 1 + l is decoder layer l. A unit lists its
// tensors in a fixed order (the module tree's registration order), split by kind:
//   frozen_bytes   uint8 buffers: the NF4 codes and statistics of a QLoRA base (never trained)
//   frozen         parameters with requires_grad false (a LoRA or QLoRA base, frozen norms)
//   trainable      parameters with requires_grad true (LoRA A/B, modules_to_save, or everything)
// The kind follows from what the tensor is (buffer or parameter, requires_grad), never from its
// name, so list the units once the model is complete (adapters applied, trainability set).
//
// [Note: storage swaps]
// The contract that lets a sharding layer work from outside the model (as FSDP2 does):
// - After construction and adapter application the model never rebinds a registered tensor, and
//   keeps no second handle to one: every forward reads its tensors from the module registry.
//   The at::Tensor handles in ModelUnit share their TensorImpl with the registered tensors, so a
//   sharding layer may swap a tensor's storage in place (`tensor.set_data(view)`, e.g. a view
//   into an all-gathered flat buffer, or a zero-element tensor while the unit is sharded), and the
//   model computes with whatever storage the tensor holds at that moment.
// - While a unit runs (between its pre_* and post_* hooks), its tensors must hold their
//   registered shapes and dtypes.
//
// [Note: hooks]
// With hooks installed (LlamaForCausalLMImpl::set_unit_hooks), every forward and backward calls,
// on the thread that runs it:
//   forward:   pre_forward(0); for each layer u = 1..L: pre_forward(u), the layer,
//              post_forward(u); the head; post_forward(0)
// Every hook runs with the caller's grad mode (enabled exactly when a backward may follow).
//   backward:  pre_backward(0) before any gradient of the head is computed; for each layer, last
//              to first: pre_backward(u), the layer's backward, post_backward(u) once every
//              gradient of unit u has been accumulated into .grad; post_backward(0) at the very
//              end of the backward pass (embedding gradients included)
// Backward hooks are called only for a forward run with gradients enabled whose loss reaches
// backward. A layer's backward runs through a per-unit autograd function (run_unit), whose
// activations policy is the unit's activation checkpointing: kRecompute keeps only the layer's
// input and reruns its forward in backward (after pre_backward, with the model's generator reset to
// its state at the forward, so dropout masks repeat); kKeep keeps the layer's autograd graph.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ptrain {

struct UnitTensor {
  std::string name;   // the Hugging Face / PEFT name, e.g. "model.layers.0.self_attn.q_proj.weight"
  at::Tensor tensor;  // shares its TensorImpl with the registered tensor (see storage swaps)
};

struct ModelUnit {
  std::string name;  // "root", or the layer's module name "model.layers.3"
  std::vector<UnitTensor> frozen_bytes, frozen, trainable;
};

// Units of `layers` (unit 1 + l) and a root unit with every tensor of `model` outside them, each
// tensor listed once (tied weights included). UserError-free: an unsupported tensor kind (a
// non-uint8 buffer) is an internal error.
std::vector<ModelUnit> collect_units(const torch::nn::Module& model,
                                     const std::vector<std::shared_ptr<torch::nn::Module>>& layers);

class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  virtual void pre_forward(int unit) = 0;
  virtual void post_forward(int unit) = 0;
  virtual void pre_backward(int unit) = 0;
  virtual void post_backward(int unit) = 0;
};

enum class UnitActivations { kKeep, kRecompute };

// One run of layer unit `unit`: y = layer(x), with the hooks called in the order of the hooks note.
// With gradients enabled it runs through a per-unit autograd function (see activations); without,
// it calls the layer directly between pre_forward and post_forward. `generator` is the one the
// layer draws from (saved and restored around a recompute); `hooks` may be null.
at::Tensor run_unit(int unit, const std::function<at::Tensor(const at::Tensor&)>& layer,
                    const at::Tensor& x, UnitActivations activations, UnitHooks* hooks,
                    at::Generator generator);

// The end of the root unit's forward: calls post_forward(0) and returns y (the head's output: loss,
// logits or hidden states) marked so that, in backward, pre_backward(0) runs before the head's
// backward and post_backward(0) at the very end of the backward pass. The model calls
// pre_forward(0) itself before reading its embeddings.
at::Tensor leave_root(const at::Tensor& y, UnitHooks& hooks);

// A CPU generator's state as JSON ({"mt19937": hex of its state bytes}) and back. restore:
// UserError naming what is wrong when `state` was not written by generator_state_json.
nlohmann::json generator_state_json(at::Generator generator);
void restore_generator_json(at::Generator& generator, const nlohmann::json& state);

}  // namespace ptrain
