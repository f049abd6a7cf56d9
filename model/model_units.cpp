#include "model/model_units.h"

#include <torch/csrc/autograd/engine.h>

#include <set>

#include "core/error.h"

namespace ptrain {

// ---------------------------------------------------------------- units

namespace {

// Adds `module`'s parameters and buffers to `unit`, skipping tensors already listed (tied
// weights) by TensorImpl identity.
void add_tensors(const torch::nn::Module& module, const std::string& prefix, ModelUnit& unit,
                 std::set<const c10::TensorImpl*>& seen) {
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    if (!seen.insert(p.value().unsafeGetTensorImpl()).second) continue;
    UnitTensor t{prefix + p.key(), p.value()};
    (p.value().requires_grad() ? unit.trainable : unit.frozen).push_back(std::move(t));
  }
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    if (!seen.insert(b.value().unsafeGetTensorImpl()).second) continue;
    PTRAIN_ASSERT(b.value().scalar_type() == at::kByte,
                  "buffer '{}{}' is {}: a unit's buffers are NF4 bytes (uint8)", prefix, b.key(),
                  c10::toString(b.value().scalar_type()));
    unit.frozen_bytes.push_back({prefix + b.key(), b.value()});
  }
}

}  // namespace

std::vector<ModelUnit> collect_units(
    const torch::nn::Module& model, const std::vector<std::shared_ptr<torch::nn::Module>>& layers) {
  std::set<const c10::TensorImpl*> in_layers;
  std::map<const torch::nn::Module*, std::string> layer_names;
  for (const auto& named : model.named_modules("", /*include_self=*/false))
    layer_names[named.value().get()] = named.key();
  std::vector<ModelUnit> units(1 + layers.size());
  units[0].name = "root";
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto it = layer_names.find(layers[l].get());
    PTRAIN_ASSERT(it != layer_names.end(), "layer {} is not a submodule of the model", l);
    units[l + 1].name = it->second;
    add_tensors(*layers[l], it->second + ".", units[l + 1], in_layers);
  }
  // The root: everything outside the layers, in registration order.
  std::set<const c10::TensorImpl*> seen = in_layers;
  add_tensors(model, "", units[0], seen);
  return units;
}

// ---------------------------------------------------------------- generator state

nlohmann::json generator_state_json(at::Generator generator) {
  at::Tensor state;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    state = generator.get_state();
  }
  static const char* kHex = "0123456789abcdef";
  const uint8_t* bytes = state.data_ptr<uint8_t>();
  std::string hex;
  hex.reserve(2 * static_cast<size_t>(state.numel()));
  for (int64_t i = 0; i < state.numel(); ++i) {
    hex.push_back(kHex[bytes[i] >> 4]);
    hex.push_back(kHex[bytes[i] & 15]);
  }
  return {{"mt19937", hex}};
}

void restore_generator_json(at::Generator& generator, const nlohmann::json& state) {
  PTRAIN_CHECK(state.is_object() && state.contains("mt19937") && state["mt19937"].is_string(),
               "generator state: expected {{\"mt19937\": hex}}, got {}",
               state.dump().substr(0, 80));
  const std::string& hex = state["mt19937"].get_ref<const std::string&>();
  at::Tensor current;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    current = generator.get_state();
  }
  PTRAIN_CHECK(hex.size() == 2 * static_cast<size_t>(current.numel()),
               "generator state: {} hex digits, expected {}", hex.size(), 2 * current.numel());
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  at::Tensor bytes = torch::empty({current.numel()}, torch::kUInt8);
  uint8_t* out = bytes.data_ptr<uint8_t>();
  for (int64_t i = 0; i < current.numel(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    PTRAIN_CHECK(hi >= 0 && lo >= 0, "generator state: '{}' at {} is not a lowercase hex digit",
                 hi < 0 ? hex[2 * i] : hex[2 * i + 1], hi < 0 ? 2 * i : 2 * i + 1);
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(bytes);
}

// ---------------------------------------------------------------- the per-unit function

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// What one run of a unit needs again in backward, held by the autograd context.
struct UnitCall : torch::CustomClassHolder {
  int unit = 0;
  std::function<at::Tensor(const at::Tensor&)> layer;
  UnitActivations activations = UnitActivations::kRecompute;
  UnitHooks* hooks = nullptr;
  at::Generator generator;
  at::Tensor rng_state;      // kRecompute: the generator's state when the forward started
  at::Tensor input, output;  // kKeep: the ends of the layer's own autograd graph
};

at::Tensor get_state(at::Generator& generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_state(at::Generator& generator, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// Sets the generator to `state` for its lifetime, then back to where it was.
class GeneratorRewind {
 public:
  GeneratorRewind(at::Generator& generator, const at::Tensor& state)
      : generator_(generator), saved_(get_state(generator)) {
    set_state(generator_, state);
  }
  ~GeneratorRewind() { set_state(generator_, saved_); }
  GeneratorRewind(const GeneratorRewind&) = delete;
  GeneratorRewind& operator=(const GeneratorRewind&) = delete;

 private:
  at::Generator& generator_;
  at::Tensor saved_;
};

// [Note: unit function] The unit's forward runs inside this function, so its backward is one
// node of the outer graph: libtorch's autograd reaches it after the units above it and before the
// units below, which gives the hooks their order. kRecompute saves only the input and reruns the
// layer in backward (PyTorch's reentrant checkpoint: the recompute's backward accumulates the
// parameter gradients directly into .grad, so use loss.backward(), not autograd::grad()).
// kKeep runs the layer with gradients on inside forward and keeps that inner graph; backward
// runs it. Either way every gradient of the unit is accumulated when post_backward is called.
class UnitFunction : public torch::autograd::Function<UnitFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<UnitCall> call) {
    UnitCall& c = *call;
    // Hooks see the caller's grad mode (on: this function is applied only then), not the one
    // libtorch sets inside a Function's forward: a sharding layer decides by it whether a backward
    // will follow.
    if (c.hooks) {
      torch::AutoGradMode caller(true);
      c.hooks->pre_forward(c.unit);
    }
    at::Tensor y;
    if (c.activations == UnitActivations::kRecompute) {
      c.rng_state = get_state(c.generator);
      ctx->save_for_backward({x});
      y = c.layer(x);  // gradients are off inside a Function's forward
    } else {
      torch::AutoGradMode grad_on(true);
      c.input = x.detach().requires_grad_(true);
      c.output = c.layer(c.input);
      y = c.output.detach();
    }
    if (c.hooks) {
      torch::AutoGradMode caller(true);
      c.hooks->post_forward(c.unit);
    }
    ctx->saved_data["call"] = c10::IValue::make_capsule(std::move(call));
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto call = c10::static_intrusive_pointer_cast<UnitCall>(ctx->saved_data["call"].toCapsule());
    UnitCall& c = *call;
    if (c.hooks) c.hooks->pre_backward(c.unit);
    at::Tensor input = c.input, output = c.output;
    if (c.activations == UnitActivations::kRecompute) {
      input = ctx->get_saved_variables()[0].detach().requires_grad_(true);
      GeneratorRewind rewind(c.generator, c.rng_state);  // the forward's dropout masks again
      torch::AutoGradMode grad_on(true);
      output = c.layer(input);
    }
    torch::autograd::backward({output}, {grad_outputs[0]});
    at::Tensor grad_input = input.grad();
    c.input = c.output = at::Tensor();
    if (c.hooks) c.hooks->post_backward(c.unit);
    return {grad_input, at::Tensor()};
  }
};

// Identity on the head's output: its backward is the first of the model's, so the root's
// pre_backward runs before any head gradient, and it queues the root's post_backward for the end
// of the whole backward pass (after the embedding's gradient), as FSDP2's root post-backward
// callback does.
struct RootCall : torch::CustomClassHolder {
  UnitHooks* hooks = nullptr;
};

class RootExit : public torch::autograd::Function<RootExit> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y,
                            c10::intrusive_ptr<RootCall> call) {
    ctx->saved_data["call"] = c10::IValue::make_capsule(std::move(call));
    return y.view_as(y);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    UnitHooks* hooks =
        c10::static_intrusive_pointer_cast<RootCall>(ctx->saved_data["call"].toCapsule())->hooks;
    hooks->pre_backward(0);
    torch::autograd::Engine::get_default_engine().queue_callback(
        [hooks] { hooks->post_backward(0); });
    return {grad_outputs[0], at::Tensor()};
  }
};

}  // namespace

at::Tensor run_unit(int unit, const std::function<at::Tensor(const at::Tensor&)>& layer,
                    const at::Tensor& x, UnitActivations activations, UnitHooks* hooks,
                    at::Generator generator) {
  if (!torch::GradMode::is_enabled()) {
    if (hooks) hooks->pre_forward(unit);
    at::Tensor y = layer(x);
    if (hooks) hooks->post_forward(unit);
    return y;
  }
  auto call = c10::make_intrusive<UnitCall>();
  call->unit = unit;
  call->layer = layer;
  call->activations = activations;
  call->hooks = hooks;
  call->generator = std::move(generator);
  return UnitFunction::apply(x, std::move(call));
}

at::Tensor leave_root(const at::Tensor& y, UnitHooks& hooks) {
  hooks.post_forward(0);
  if (!torch::GradMode::is_enabled() || !y.requires_grad()) return y;
  auto call = c10::make_intrusive<RootCall>();
  call->hooks = &hooks;
  return RootExit::apply(y, std::move(call));
}

}  // namespace ptrain
