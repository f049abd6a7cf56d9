// Small models shared by the trainer tests.
#pragma once

#include <map>
#include <string>

#include "model/llama.h"
#include "model/llama_config.h"
#include "model/llama_ops.h"

namespace ptrain {

inline LlamaConfig micro_config() {  // small enough for finite differences in fp64
  LlamaConfig c = llama_preset("tiny");
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  return c;
}

inline LlamaForCausalLM make_model(const LlamaConfig& config, at::ScalarType dtype,
                                   uint64_t seed = 7) {
  ModelOptions options;
  options.dtype = dtype;
  options.loss_chunk_tokens = 5;  // several chunks even in small tests
  LlamaForCausalLM model(config, options);
  model->initialize(seed);
  return model;
}

// The tiny preset (2 layers, GQA), dense or with an NF4 base and LoRA adapters (dropout 0.1, B
// drawn non-zero so A gets a gradient) on every projection, the base frozen. The same seeds give
// the same values on every device: initialisation and dropout masks are drawn on the CPU.
inline LlamaForCausalLM tiny_model(at::ScalarType dtype, bool nf4_lora) {
  ModelOptions options;
  options.dtype = dtype;
  options.loss_chunk_tokens = 7;
  options.nf4_base = nf4_lora;
  options.rng_seed = 5;
  LlamaForCausalLM model(llama_preset("tiny"), options);
  model->initialize(3);
  if (nf4_lora) {
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    auto generator = at::make_generator<at::CPUGeneratorImpl>(9);
    LoraOptions lora;
    lora.r = 4;
    lora.alpha = 8;
    lora.dropout = 0.1;
    for (const auto& [name, projection] : model->projections()) {
      projection->add_lora(lora, generator);
      torch::NoGradGuard no_grad;
      projection->lora_b().normal_(0.0, 0.05, generator);
    }
  }
  model->train();
  return model;
}

struct ModelRun {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;  // every parameter that got one, in fp64 on the CPU
};

// One forward and backward of the summed loss (the generic kernels when `portable`); the model's
// generator (LoRA dropout) is put back afterwards, so every run draws the same masks.
inline ModelRun run_model(LlamaForCausalLM& model, const PackedBatch& batch,
                          bool portable = false) {
  const nlohmann::json state = model->state();
  PortableKernelsGuard guard(portable);
  model->zero_grad();
  at::Tensor loss = model->loss_sum(batch);
  loss.backward();
  ModelRun run;
  run.loss = loss.item<double>();
  for (const auto& p : model->named_parameters())
    if (p.value().grad().defined()) run.grads[p.key()] = p.value().grad().cpu().to(at::kDouble);
  model->restore(state);
  return run;
}

}  // namespace ptrain
