// The model's sharding seam (model/model_units.h): units and tensor kinds, the hook order, a
// sharding layer's storage swaps, and the model's own generator.
#include "model/model_units.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>

#include "core/error.h"
#include "model/llama.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;

std::set<std::string> names(const std::vector<UnitTensor>& tensors) {
  std::set<std::string> out;
  for (const auto& t : tensors) out.insert(t.name);
  return out;
}

PackedBatch micro_batch() {
  return make_packed_batch({{{1, 5, 6, 7, 8, 9}, {2, 3, 4}}, {{10, 1, 2, 3, 4, 5, 6, 7}}}, 10);
}

// LoRA on every projection with dropout (so the generator matters) and a non-zero B; everything
// else frozen, as peft/apply_lora leaves a model.
void add_adapters(LlamaForCausalLM& model, double dropout) {
  LoraOptions lora;
  lora.r = 2;
  lora.dropout = dropout;
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(4);
  for (auto& [name, p] : model->projections()) {
    p->add_lora(lora, generator);
    p->lora_b().normal_(0, 0.3, generator);
  }
}

// ---------------------------------------------------------------- units and kinds

TEST(ModelUnits, ARootUnitAndOneUnitPerLayerListEveryTensorOnce) {
  for (bool tied : {false, true}) {
    LlamaConfig c = micro_config();
    c.tie_word_embeddings = tied;
    auto model = make_model(c, at::kFloat);
    const std::vector<ModelUnit> units = model->units();
    ASSERT_EQ(units.size(), 3u);
    EXPECT_EQ(units[0].name, "root");
    EXPECT_EQ(units[2].name, "model.layers.1");
    std::set<std::string> root = {"model.embed_tokens.weight", "model.norm.weight"};
    if (!tied) root.insert("lm_head.weight");
    EXPECT_EQ(names(units[0].trainable), root) << "tied " << tied;
    const std::string l = "model.layers.1.";
    EXPECT_EQ(names(units[2].trainable),
              (std::set<std::string>{l + "self_attn.q_proj.weight", l + "self_attn.k_proj.weight",
                                     l + "self_attn.v_proj.weight", l + "self_attn.o_proj.weight",
                                     l + "mlp.gate_proj.weight", l + "mlp.up_proj.weight",
                                     l + "mlp.down_proj.weight", l + "input_layernorm.weight",
                                     l + "post_attention_layernorm.weight"}));
    // Every registered tensor exactly once, as the registered tensor itself.
    std::map<std::string, at::Tensor> listed;
    for (const auto& unit : units)
      for (const auto* kind : {&unit.frozen_bytes, &unit.frozen, &unit.trainable})
        for (const auto& t : *kind) EXPECT_TRUE(listed.emplace(t.name, t.tensor).second) << t.name;
    const auto params = model->named_parameters();
    EXPECT_EQ(listed.size(), params.size());
    for (const auto& p : params) {
      ASSERT_TRUE(listed.count(p.key())) << p.key();
      EXPECT_TRUE(listed[p.key()].is_same(p.value())) << p.key();
    }
  }
}

TEST(ModelUnits, KindsFollowBufferKindAndRequiresGradNotNames) {
  ModelOptions options;
  options.dtype = at::kFloat;
  options.nf4_base = true;
  LlamaForCausalLM model(micro_config(), options);
  model->initialize(3);
  add_adapters(model, 0.0);
  std::vector<ModelUnit> units = model->units();
  const std::string q = "model.layers.0.self_attn.q_proj.";
  EXPECT_EQ(units[1].frozen_bytes.size(), 7u);
  EXPECT_TRUE(names(units[1].frozen_bytes).count(q + "weight_nf4"));
  EXPECT_EQ(names(units[1].frozen),
            (std::set<std::string>{"model.layers.0.input_layernorm.weight",
                                   "model.layers.0.post_attention_layernorm.weight"}));
  EXPECT_EQ(units[1].trainable.size(), 14u);
  EXPECT_TRUE(names(units[1].trainable).count(q + "lora_A.weight"));
  EXPECT_TRUE(units[0].trainable.empty());
  // Flip two tensors' requires_grad: they change lists, whatever their names say.
  model->named_parameters()[q + "lora_B.weight"].set_requires_grad(false);
  model->named_parameters()["model.layers.0.input_layernorm.weight"].set_requires_grad(true);
  units = model->units();
  EXPECT_TRUE(names(units[1].frozen).count(q + "lora_B.weight"));
  EXPECT_TRUE(names(units[1].trainable).count("model.layers.0.input_layernorm.weight"));
}

// ---------------------------------------------------------------- hook order

// Records every call, and at each post_backward the unit's gradients as they are then.
class RecordingHooks : public UnitHooks {
 public:
  explicit RecordingHooks(std::vector<ModelUnit> units) : units_(std::move(units)) {}
  void pre_forward(int u) override { events.push_back("pre_forward " + std::to_string(u)); }
  void post_forward(int u) override { events.push_back("post_forward " + std::to_string(u)); }
  void pre_backward(int u) override { events.push_back("pre_backward " + std::to_string(u)); }
  void post_backward(int u) override {
    events.push_back("post_backward " + std::to_string(u));
    for (const auto& t : units_[u].trainable)
      grads[t.name] = t.tensor.grad().defined() ? t.tensor.grad().clone() : at::Tensor();
  }
  std::vector<std::string> events;
  std::map<std::string, at::Tensor> grads;

 private:
  std::vector<ModelUnit> units_;
};

TEST(ModelUnits, HooksRunInUnitOrderAndPostBackwardSeesTheUnitsFinishedGradients) {
  const std::vector<std::string> forward = {"pre_forward 0", "pre_forward 1",  "post_forward 1",
                                            "pre_forward 2", "post_forward 2", "post_forward 0"};
  const std::vector<std::string> backward = {"pre_backward 0",  "pre_backward 2",
                                             "post_backward 2", "pre_backward 1",
                                             "post_backward 1", "post_backward 0"};
  for (bool checkpointing : {false, true}) {
    auto model = make_model(micro_config(), at::kFloat);
    model->set_activation_checkpointing(checkpointing);
    RecordingHooks hooks(model->units());
    model->set_unit_hooks(&hooks);
    at::Tensor loss = model->loss_sum(micro_batch());
    EXPECT_EQ(hooks.events, forward) << "checkpointing " << checkpointing;
    hooks.events.clear();
    loss.backward();
    EXPECT_EQ(hooks.events, backward) << "checkpointing " << checkpointing;
    ASSERT_EQ(hooks.grads.size(), model->parameters().size());
    for (const auto& p : model->named_parameters()) {
      ASSERT_TRUE(hooks.grads[p.key()].defined()) << p.key() << " had no gradient yet";
      EXPECT_TRUE(torch::equal(hooks.grads[p.key()], p.value().grad())) << p.key();
    }
    hooks.events.clear();
    {
      torch::NoGradGuard no_grad;
      model->logits(micro_batch());
    }
    EXPECT_EQ(hooks.events, forward) << "no-grad forward";
  }
}

// ---------------------------------------------------------------- storage swaps

// What a sharding layer does, on one rank: every tensor of a unit holds no storage while the unit
// is not running; before it runs (forward or backward) the tensor gets a fresh copy of its value
// through set_data; after backward the unit's gradients are taken and freed with the storage.
class SwapStorage : public UnitHooks {
 public:
  explicit SwapStorage(std::vector<ModelUnit> units) : units_(std::move(units)) {
    for (size_t u = 0; u < units_.size(); ++u)
      for_each(static_cast<int>(u),
               [&](const UnitTensor& t) { values_[t.name] = t.tensor.detach().clone(); });
    for (size_t u = 0; u < units_.size(); ++u) release(static_cast<int>(u));
  }
  void pre_forward(int u) override { gather(u); }
  void post_forward(int u) override { release(u); }
  void pre_backward(int u) override { gather(u); }
  void post_backward(int u) override {
    for (const auto& t : units_[u].trainable) {
      grads[t.name] = t.tensor.grad().clone();
      t.tensor.mutable_grad().reset();
    }
    release(u);
  }
  // Every tensor back to its value (to compare with a model never swapped).
  void gather_all() {
    for (size_t u = 0; u < units_.size(); ++u) gather(static_cast<int>(u));
  }
  bool all_released() const {
    bool released = true;
    for (size_t u = 0; u < units_.size(); ++u)
      for_each(static_cast<int>(u),
               [&](const UnitTensor& t) { released = released && t.tensor.numel() == 0; });
    return released;
  }
  std::map<std::string, at::Tensor> grads;

 private:
  template <class F>
  void for_each(int u, F&& f) const {
    for (const auto* kind : {&units_[u].frozen_bytes, &units_[u].frozen, &units_[u].trainable})
      for (const auto& t : *kind) f(t);
  }
  void gather(int u) {
    for_each(u, [&](const UnitTensor& t) { t.tensor.set_data(values_.at(t.name).clone()); });
  }
  void release(int u) {
    for_each(
        u, [&](const UnitTensor& t) { t.tensor.set_data(torch::empty({0}, t.tensor.options())); });
  }
  std::vector<ModelUnit> units_;
  std::map<std::string, at::Tensor> values_;
};

struct SwapCase {
  bool checkpointing, qlora, tied;
};

TEST(ModelUnits, SwappingEveryTensorsStorageThroughTheHooksChangesNothing) {
  for (SwapCase s : {SwapCase{false, false, false}, SwapCase{true, false, true},
                     SwapCase{false, true, false}, SwapCase{true, true, true}}) {
    SCOPED_TRACE(::testing::Message() << "checkpointing " << s.checkpointing << ", qlora "
                                      << s.qlora << ", tied " << s.tied);
    LlamaConfig c = micro_config();
    c.tie_word_embeddings = s.tied;
    ModelOptions options;
    options.dtype = at::kFloat;
    options.nf4_base = s.qlora;
    options.loss_chunk_tokens = 5;
    options.activation_checkpointing = s.checkpointing;
    options.rng_seed = 9;
    LlamaForCausalLM swapped(c, options);
    options.activation_checkpointing = false;  // the reference: no hooks, no recompute
    LlamaForCausalLM plain(c, options);
    for (auto* model : {&plain, &swapped}) {
      (*model)->initialize(3);
      if (s.qlora) add_adapters(*model, 0.25);
      (*model)->train();
    }
    SwapStorage hooks(swapped->units());
    swapped->set_unit_hooks(&hooks);
    ASSERT_TRUE(hooks.all_released());
    const at::Tensor expected = plain->loss_sum(micro_batch());
    const at::Tensor loss = swapped->loss_sum(micro_batch());
    EXPECT_TRUE(hooks.all_released()) << "a unit kept its storage after forward";
    EXPECT_TRUE(torch::equal(loss, expected))
        << loss.item<double>() << " vs " << expected.item<double>();
    expected.backward();
    loss.backward();
    EXPECT_TRUE(hooks.all_released()) << "a unit kept its storage after backward";
    size_t trainable = 0;
    for (const auto& p : plain->named_parameters()) {
      if (!p.value().requires_grad()) continue;
      ++trainable;
      ASSERT_TRUE(hooks.grads.count(p.key())) << p.key();
      EXPECT_TRUE(torch::equal(hooks.grads[p.key()], p.value().grad())) << p.key();
    }
    EXPECT_EQ(hooks.grads.size(), trainable);
    swapped->set_unit_hooks(nullptr);
    hooks.gather_all();
    const at::Tensor again = swapped->loss_sum(micro_batch());
    EXPECT_TRUE(torch::equal(again, plain->loss_sum(micro_batch())));
  }
}

// ---------------------------------------------------------------- the model's generator

TEST(ModelRng, DropoutDrawsFromTheModelsGeneratorWhoseStateRestoresExactly) {
  ModelOptions options;
  options.dtype = at::kFloat;
  options.rng_seed = 21;
  LlamaForCausalLM model(micro_config(), options);
  model->initialize(3);
  add_adapters(model, 0.5);
  model->train();
  const nlohmann::json saved = model->state();
  torch::manual_seed(1);  // libtorch's global generator plays no part
  const double first = model->loss_sum(micro_batch()).item<double>();
  const double next = model->loss_sum(micro_batch()).item<double>();
  EXPECT_NE(first, next) << "the second forward drew the same dropout masks";
  model->restore(saved);
  torch::manual_seed(2);
  EXPECT_EQ(model->loss_sum(micro_batch()).item<double>(), first);
  EXPECT_EQ(model->loss_sum(micro_batch()).item<double>(), next);

  options.rng_seed = 22;
  LlamaForCausalLM other(micro_config(), options);
  other->initialize(3);
  add_adapters(other, 0.5);
  other->train();
  EXPECT_NE(other->loss_sum(micro_batch()).item<double>(), first);

  nlohmann::json bad = saved;
  bad["generator"]["mt19937"] = "00";
  EXPECT_THAT([&] { model->restore(bad); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("generator state: 2 hex digits")));
  EXPECT_THAT([&] { model->restore(nlohmann::json::object()); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("model state")));
}

}  // namespace
}  // namespace ptrain
