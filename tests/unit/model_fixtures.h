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

}  // namespace ptrain
