// Small models shared by the trainer tests.
#pragma once

#include "model/llama.h"
#include "model/llama_config.h"

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

}  // namespace ptrain
