// Deferred weights (model/deferred_weights.h): a model's structure without its memory, loaded
// unit by unit from a checkpoint into exactly what a whole load gives.
#include "model/deferred_weights.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <string>

#include "checkpoint/safetensors_model.h"
#include "model/llama.h"
#include "model/llama_weights.h"
#include "test_support.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

int64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return -1;
}

TEST(DeferredWeights, AGigabyteTensorTakesNoMemoryUntilAllocated) {
  const int64_t before = resident_bytes();
  at::Tensor t = deferred_tensor({int64_t{1} << 29}, at::kBFloat16);  // 1 GiB
  EXPECT_TRUE(is_deferred(t));
  EXPECT_EQ(t.nbytes(), int64_t{1} << 30);
  EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  EXPECT_LT(resident_bytes() - before, int64_t{16} << 20);
  // Allocation keeps the tensor's identity (what the module registry and autograd hold).
  at::Tensor small = deferred_tensor({3, 4}, at::kFloat).set_requires_grad(true);
  const auto* impl = small.unsafeGetTensorImpl();
  at::Tensor handle = small;
  allocate_if_deferred(handle);
  EXPECT_FALSE(is_deferred(small));
  EXPECT_EQ(small.unsafeGetTensorImpl(), impl);
  EXPECT_EQ(small.sizes(), (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(small.requires_grad());
  small.detach().fill_(2.0f);  // writable now
  EXPECT_EQ(small.sum().item<float>(), 24.0f);
  EXPECT_FALSE(is_deferred(torch::zeros({2})));
}

void expect_unit_by_unit_load_equals_whole_load(bool nf4) {
  LlamaConfig config = micro_config();
  config.hidden_size = 64;  // NF4 blocks of 64
  config.intermediate_size = 128;
  config.head_dim = 32;
  config.vocab_size = 64;
  config.tie_word_embeddings = false;
  LlamaForCausalLM source = make_model(config, at::kBFloat16);
  const std::string dir = testing::temp_dir(nf4 ? "deferred-nf4" : "deferred-bf16");
  save_llama_model(source, dir, at::kBFloat16);

  ModelOptions options;
  options.dtype = at::kBFloat16;
  options.nf4_base = nf4;
  LlamaForCausalLM whole(config, options);
  load_llama_weights(whole, SafetensorsModel(dir));
  options.defer_weights = true;
  LlamaForCausalLM deferred(config, options);
  int checkpoint_tensors = 0;
  for (const auto& t : deferred->named_parameters()) checkpoint_tensors += is_deferred(t.value());
  for (const auto& t : deferred->named_buffers()) checkpoint_tensors += is_deferred(t.value());
  // Per layer 7 projection weights (dense or NF4 bytes) and 2 norms; embeddings, norm, lm_head.
  EXPECT_EQ(checkpoint_tensors, 2 * (7 + 2) + 3);

  const std::vector<ModelUnit> units = deferred->units();
  for (int u = 0; u < static_cast<int>(units.size()); ++u) {
    load_llama_unit_weights(deferred, SafetensorsModel(dir), u);
    // This unit is loaded, the later ones not yet.
    for (const auto* kind : {&units[u].frozen_bytes, &units[u].frozen, &units[u].trainable})
      for (const UnitTensor& t : *kind) EXPECT_FALSE(is_deferred(t.tensor)) << t.name;
    if (u + 1 < static_cast<int>(units.size()))
      for (const UnitTensor& t : units[u + 1].trainable) EXPECT_TRUE(is_deferred(t.tensor));
  }
  auto whole_buffers = whole->named_buffers();
  for (const auto& b : deferred->named_buffers())
    EXPECT_TRUE(torch::equal(b.value(), *whole_buffers.find(b.key()))) << b.key();
  auto whole_parameters = whole->named_parameters();
  for (const auto& p : deferred->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), *whole_parameters.find(p.key()))) << p.key();
  const PackedBatch batch = make_packed_batch({{{1, 5, 6, 7, 8, 9}, {2, 3, 4}}}, 9);
  EXPECT_EQ(deferred->loss_sum(batch).item<float>(), whole->loss_sum(batch).item<float>());
}

TEST(DeferredWeights, UnitByUnitLoadEqualsTheWholeLoadBf16) {
  expect_unit_by_unit_load_equals_whole_load(false);
}

TEST(DeferredWeights, UnitByUnitLoadEqualsTheWholeLoadNf4) {
  expect_unit_by_unit_load_equals_whole_load(true);
}

TEST(DeferredWeights, UnitOfACheckpointTensor) {
  EXPECT_EQ(llama_unit_of("model.embed_tokens.weight"), 0);
  EXPECT_EQ(llama_unit_of("lm_head.weight"), 0);
  EXPECT_EQ(llama_unit_of("model.norm.weight"), 0);
  EXPECT_EQ(llama_unit_of("model.layers.0.self_attn.q_proj.weight"), 1);
  EXPECT_EQ(llama_unit_of("model.layers.12.mlp.down_proj.weight"), 13);
}

}  // namespace
}  // namespace ptrain
