// LoRA and QLoRA against independent references: an fp64 computation of
// W x + B A x * scaling with W the NF4-dequantized weight, merged weights against the adapter
// path, PEFT files against their documented names, and training that moves only adapters.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "model/llama_weights.h"
#include "peft/lora.h"
#include "test_support.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;

using ::ptrain::testing::temp_dir;

LlamaForCausalLM make_quantized(const LlamaConfig& c, at::ScalarType dtype, uint64_t seed) {
  ModelOptions options;
  options.dtype = dtype;
  options.nf4_base = true;
  options.loss_chunk_tokens = 5;
  LlamaForCausalLM model(c, options);
  model->initialize(seed);
  return model;
}

TEST(LoraLayer, NfFourForwardAndGradientsMatchAnFp64Reference) {
  torch::manual_seed(1);
  const int64_t in = 96, out = 40;  // 3840 weights: 60 blocks
  Projection p(in, out, /*bias=*/true, at::kFloat, /*nf4=*/true);
  at::Tensor dense = torch::randn({out, in}) * 0.05;
  p->set_weight(dense);
  {
    torch::NoGradGuard no_grad;
    p->bias().copy_(torch::randn({out}) * 0.1);
  }
  LoraOptions lora;
  lora.r = 4;
  lora.alpha = 8;
  p->add_lora(lora, at::make_generator<at::CPUGeneratorImpl>(3));
  {
    torch::NoGradGuard no_grad;
    p->lora_b().copy_(torch::randn({out, 4}) * 0.1);  // B = 0 at init would hide the product
  }
  p->bias().set_requires_grad(false);
  at::Tensor x = torch::randn({2, 5, in}, torch::requires_grad());
  at::Tensor y = p->forward(x);
  at::Tensor upstream = torch::randn_like(y);
  (y * upstream).sum().backward();

  // The reference: the weight dequantized by hand from the buffer, fp64 throughout.
  std::vector<float> absmax(p->nf4()->layout.blocks);
  nf4_block_absmax(p->nf4()->storage.data_ptr<uint8_t>(), p->nf4()->layout, absmax.data());
  at::Tensor w = torch::empty({out * in}, torch::kDouble);
  const uint8_t* codes = p->nf4()->storage.data_ptr<uint8_t>();
  for (int64_t i = 0; i < out * in; ++i) {
    const int code = i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 15;
    w[i] = static_cast<double>(kNf4Levels[code]) * absmax[i / 64];
  }
  w = w.view({out, in});
  at::Tensor xd = x.detach().to(at::kDouble).requires_grad_(true);
  at::Tensor a = p->lora_a().detach().to(at::kDouble).requires_grad_(true);
  at::Tensor b = p->lora_b().detach().to(at::kDouble).requires_grad_(true);
  at::Tensor ref = at::matmul(xd, w.t()) + p->bias().detach().to(at::kDouble) +
                   at::matmul(at::matmul(xd, a.t()), b.t()) * (8.0 / 4.0);
  (ref * upstream.to(at::kDouble)).sum().backward();
  EXPECT_TRUE(torch::allclose(y.to(at::kDouble), ref, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(x.grad().to(at::kDouble), xd.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(p->lora_a().grad().to(at::kDouble), a.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(p->lora_b().grad().to(at::kDouble), b.grad(), 1e-5, 1e-5));
  // The NF4 buffer is not a parameter and gets no gradient.
  EXPECT_EQ(p->named_parameters().find("weight"), nullptr);
  EXPECT_FALSE(p->nf4()->storage.requires_grad());
}

TEST(LoraLayer, ScalingInitialisationAndDropoutFollowPeft) {
  LoraOptions o;
  o.r = 16;
  o.alpha = 32;
  EXPECT_DOUBLE_EQ(o.scaling(), 2.0);
  o.rslora = true;
  EXPECT_DOUBLE_EQ(o.scaling(), 8.0);  // alpha / sqrt(r)
  Projection p(256, 64, false, at::kFloat, false);
  p->add_lora(o, at::make_generator<at::CPUGeneratorImpl>(1));
  EXPECT_EQ(p->lora_a().sizes(), (std::vector<int64_t>{16, 256}));
  EXPECT_EQ(p->lora_b().sizes(), (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(p->lora_a().scalar_type(), at::kFloat);  // fp32 master even for a bf16 base
  EXPECT_EQ(p->lora_b().abs().max().item<float>(), 0.0f);
  // kaiming_uniform(a=sqrt(5)) on [r, in]: U(-1/sqrt(in), 1/sqrt(in)).
  EXPECT_LE(p->lora_a().abs().max().item<double>(), 1.0 / 16.0);
  EXPECT_GT(p->lora_a().abs().max().item<double>(), 0.9 / 16.0);
  EXPECT_NEAR(p->lora_a().var().item<double>(), (1.0 / 256) / 3.0, 0.1 / 256 / 3.0);
}

TEST(Qlora, MergedModelLogitsEqualBasePlusAdapter) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_quantized(c, at::kFloat, 4);
  AdapterSpec spec;
  spec.target_linear = true;
  spec.lora.r = 4;
  spec.lora.alpha = 8;
  apply_lora(model, spec);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : model->projections()) p->lora_b().normal_(0, 0.05);
  }
  PackedBatch batch = make_packed_batch({{{1, 50, 60, 70, 80}, {1, 9, 8}}}, 10);
  at::Tensor adapter_logits;
  {
    torch::NoGradGuard no_grad;
    adapter_logits = model->logits(batch);
  }
  const std::string dir = temp_dir("merged");
  save_llama_model(model, dir, at::kFloat, uint64_t{5} << 30, /*merge_lora=*/true);
  ModelOptions dense_options;
  dense_options.dtype = at::kFloat;
  LlamaForCausalLM merged(load_llama_config(dir), dense_options);
  load_llama_weights(merged, SafetensorsModel(dir));
  torch::NoGradGuard no_grad;
  at::Tensor merged_logits = merged->logits(batch);
  EXPECT_TRUE(torch::allclose(merged_logits, adapter_logits, 1e-4, 1e-4))
      << (merged_logits - adapter_logits).abs().max().item<double>();
  // And the merge is not a no-op.
  at::Tensor base_only = make_quantized(c, at::kFloat, 4)->logits(batch);
  EXPECT_GT((base_only - adapter_logits).abs().max().item<double>(), 1e-3);
}

TEST(Peft, ExportImportIsBitIdenticalWithPeftNamesAndConfig) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kBFloat16, 5);
  AdapterSpec spec;
  spec.target_modules = {"q_proj", "v_proj"};
  spec.modules_to_save = {"lm_head"};
  spec.lora.r = 8;
  spec.lora.alpha = 16;
  spec.lora.dropout = 0.05;
  std::vector<std::string> targets = apply_lora(model, spec);
  EXPECT_EQ(targets.size(), 4u);  // 2 layers x (q, v)
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : model->projections())
      if (p->has_lora()) p->lora_b().normal_(0, 0.1);
  }
  const std::string dir = temp_dir("peft");
  save_peft_adapter(model, spec, "/models/tiny", dir);

  SafetensorsFile file(dir + "/adapter_model.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  const TensorInfo& a = file.at("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(a.dtype, StDtype::kF32);
  const TensorInfo& b = file.at("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(b.shape, (std::vector<int64_t>{64, 8}));
  EXPECT_NE(file.find("base_model.model.lm_head.weight"), nullptr);
  EXPECT_EQ(file.tensors().size(), 4u * 2 + 1);
  std::ifstream config_file(dir + "/adapter_config.json");
  std::string config((std::istreambuf_iterator<char>(config_file)), {});
  EXPECT_THAT(config, HasSubstr("\"peft_type\": \"LORA\""));
  EXPECT_THAT(config, HasSubstr("\"task_type\": \"CAUSAL_LM\""));
  EXPECT_THAT(config, HasSubstr("\"target_modules\": [\n    \"q_proj\",\n    \"v_proj\"\n  ]"));
  EXPECT_THAT(config, HasSubstr("\"modules_to_save\": [\n    \"lm_head\"\n  ]"));

  auto fresh = make_model(c, at::kBFloat16, 5);
  AdapterSpec read = load_peft_adapter(fresh, dir);
  EXPECT_EQ(read.lora.r, 8);
  EXPECT_EQ(read.target_modules, spec.target_modules);
  for (auto& [name, p] : model->projections()) {
    ProjectionImpl* q = fresh->projections().at(name);
    ASSERT_EQ(p->has_lora(), q->has_lora()) << name;
    if (!p->has_lora()) continue;
    EXPECT_TRUE(torch::equal(p->lora_a(), q->lora_a())) << name;
    EXPECT_TRUE(torch::equal(p->lora_b(), q->lora_b())) << name;
  }
  EXPECT_TRUE(torch::equal(*model->named_parameters().find("lm_head.weight"),
                           *fresh->named_parameters().find("lm_head.weight")));
  EXPECT_TRUE(fresh->named_parameters().find("lm_head.weight")->requires_grad());
}

TEST(Peft, UnsupportedAdaptersAndBadTargetsAreNamedErrors) {
  LlamaConfig c = llama_preset("tiny");
  const std::string dir = temp_dir("bad");
  std::filesystem::create_directories(dir);
  auto write_config = [&](const std::string& text) {
    std::ofstream(dir + "/adapter_config.json") << text;
  };
  write_config(R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_dora": true,
                   "target_modules": ["q_proj"]})");
  auto model = make_model(c, at::kFloat);
  EXPECT_THAT([&] { load_peft_adapter(model, dir); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("use_dora (DoRA) is not supported")));
  write_config(R"({"peft_type": "IA3", "target_modules": ["q_proj"]})");
  EXPECT_THAT([&] { load_peft_adapter(model, dir); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("peft_type must be \"LORA\"")));
  AdapterSpec spec;
  spec.target_modules = {"qproj"};
  EXPECT_THAT([&] { apply_lora(model, spec); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("'qproj' matches no projection")));
  spec.target_modules = {"model\\.layers\\.1\\.mlp\\.(gate|up)_proj"};
  EXPECT_EQ(lora_targets(model, spec), (std::vector<std::string>{"model.layers.1.mlp.gate_proj",
                                                                 "model.layers.1.mlp.up_proj"}));
  spec.target_modules = {"model.layers.(1"};
  EXPECT_THAT([&] { lora_targets(model, spec); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("is not a valid regex")));
}

TEST(Qlora, TrainingLowersTheLossAndChangesOnlyAdapters) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_quantized(c, at::kBFloat16, 6);
  AdapterSpec spec;
  spec.target_linear = true;
  spec.lora.r = 8;
  spec.lora.alpha = 16;
  apply_lora(model, spec);
  model->set_activation_checkpointing(true);
  std::map<std::string, at::Tensor> frozen;  // every non-adapter tensor, parameters and buffers
  for (const auto& p : model->named_parameters())
    if (!p.value().requires_grad()) frozen[p.key()] = p.value().clone();
  for (const auto& b : model->named_buffers()) frozen[b.key()] = b.value().clone();
  std::vector<at::Tensor> trainable;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  ASSERT_EQ(trainable.size(), 2u * 7 * 2);  // A and B on 7 projections in 2 layers
  torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(1e-2).weight_decay(0));
  PackedBatch batch = make_packed_batch({{{1, 72, 101, 108, 108, 111, 2}, {1, 119, 111, 114}}}, 12);
  auto loss = [&] { return model->loss_sum(batch) / 9.0; };
  double first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    optimizer.zero_grad();
    at::Tensor l = loss();
    l.backward();
    if (step == 0) first = l.item<double>();
    optimizer.step();
  }
  {
    torch::NoGradGuard no_grad;
    last = loss().item<double>();
  }
  EXPECT_LT(last, first - 0.5) << first << " -> " << last;
  for (const auto& [name, before] : frozen) {
    const at::Tensor* now = model->named_parameters().find(name);
    if (!now) now = model->named_buffers().find(name);
    ASSERT_NE(now, nullptr) << name;
    EXPECT_TRUE(torch::equal(*now, before)) << name << " changed";
  }
  EXPECT_GT(frozen.size(), 20u);  // the NF4 buffers, embeddings, norms, lm_head
}

TEST(Lora, CheckpointedRecomputeDrawsTheSameDropoutMasks) {
  // With LoRA dropout, the recompute in backward must see the forward's masks: gradients with
  // checkpointing equal those without (same seed), as torch.utils.checkpoint preserves RNG state.
  LlamaConfig c = llama_preset("tiny");
  PackedBatch batch = make_packed_batch({{{1, 50, 60, 70, 80, 90}, {1, 9, 8, 7}}}, 12);
  std::map<std::string, at::Tensor> grads[2];
  for (int checkpointing = 0; checkpointing < 2; ++checkpointing) {
    auto model = make_model(c, at::kFloat, 3);
    AdapterSpec spec;
    spec.target_linear = true;
    spec.lora.dropout = 0.5;
    apply_lora(model, spec);
    {
      torch::NoGradGuard no_grad;
      torch::manual_seed(5);  // the same B in both models
      for (auto& [name, p] : model->projections()) p->lora_b().normal_(0, 0.1);
    }
    model->train();
    model->set_activation_checkpointing(checkpointing == 1);
    torch::manual_seed(11);
    model->loss_sum(batch).backward();
    for (const auto& p : model->named_parameters())
      if (p.value().grad().defined()) grads[checkpointing][p.key()] = p.value().grad().clone();
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  ASSERT_EQ(grads[0].size(), 2u * 7 * 2);
  for (const auto& [name, g] : grads[0])
    EXPECT_TRUE(torch::allclose(g, grads[1][name], 1e-5, 1e-6))
        << name << ": max difference " << (g - grads[1][name]).abs().max().item<double>() << " of "
        << g.abs().max().item<double>();
}

TEST(Peft, DottedListEntriesMatchBySuffixAndUnsupportedSettingsAreRefused) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kFloat);
  AdapterSpec spec;
  spec.target_modules = {"self_attn.q_proj", "model.layers.1.mlp.up_proj"};
  EXPECT_EQ(lora_targets(model, spec), (std::vector<std::string>{"model.layers.0.self_attn.q_proj",
                                                                 "model.layers.1.self_attn.q_proj",
                                                                 "model.layers.1.mlp.up_proj"}));
  const std::string dir = temp_dir("unsupported");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/adapter_config.json")
      << R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
            "init_lora_weights": "pissa"})";
  EXPECT_THAT([&] { load_peft_adapter(model, dir); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("modifies the base weights")));
  std::ofstream(dir + "/adapter_config.json")
      << R"({"peft_type": "LORA", "r": "8", "lora_alpha": 16, "target_modules": ["q_proj"]})";
  EXPECT_THAT([&] { load_peft_adapter(model, dir); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("key 'r' must be a positive integer")));
  std::ofstream(dir + "/adapter_config.json")
      << R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
            "layers_to_transform": [0]})";
  EXPECT_THAT(
      [&] { load_peft_adapter(model, dir); },
      ::testing::ThrowsMessage<UserError>(HasSubstr("layers_to_transform is not supported")));
  LlamaConfig tied = c;
  tied.tie_word_embeddings = true;
  auto tied_model = make_model(tied, at::kFloat);
  AdapterSpec save_embeddings;
  save_embeddings.target_linear = true;
  save_embeddings.modules_to_save = {"embed_tokens"};
  EXPECT_THAT([&] { apply_lora(tied_model, save_embeddings); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("ties lm_head to embed_tokens")));
}

TEST(Qlora, NonFiniteWeightsAreNotQuantized) {
  LlamaConfig c = llama_preset("tiny");
  ModelOptions options;
  options.dtype = at::kFloat;
  options.nf4_base = true;
  LlamaForCausalLM model(c, options);
  at::Tensor w = torch::zeros({64, 64});
  w[3][5] = NAN;
  EXPECT_THAT([&] { model->set_tensor("model.layers.0.self_attn.q_proj.weight", w); },
              ::testing::ThrowsMessage<UserError>(
                  HasSubstr("'model.layers.0.self_attn.q_proj.weight' holds NaN or infinite")));
}

}  // namespace
}  // namespace ptrain
