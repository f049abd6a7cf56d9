// Loading a model directory for the one-shot commands (eval, generate, export): dtype, NF4 base
// (load_in_4bit: quantized tensor by tensor as it loads) and an optional PEFT adapter. A weight
// that holds NaN or inf (of the model's dense tensors, or of the adapter) is a UserError naming
// the directory and the tensor: such a model would give a NaN loss or garbage text silently.
#pragma once

#include <string>

#include "model/llama.h"
#include "peft/lora.h"

namespace ptrain {

struct ModelLoadOptions {
  std::string dir;
  std::string dtype = "bf16";  // bf16 | fp32
  bool load_in_4bit = false;
  std::string adapter;  // PEFT adapter directory, or empty
};

struct LoadedModel {
  LlamaForCausalLM model{nullptr};
  AdapterSpec adapter;  // what the adapter directory held (empty targets: none)
};

LoadedModel load_model(const ModelLoadOptions& options);

// The training load (options.adapter must be empty): the model's structure from the directory's
// config.json, checked against its weights' headers, with deferred weights
// (model/deferred_weights.h): nothing of the model's size is allocated. load_model_unit() fills
// one unit at a time, as ShardedModel shards it.
LlamaForCausalLM deferred_model(const ModelLoadOptions& options);

// Loads unit `unit`'s checkpoint tensors of options.dir into a deferred_model(), refusing NaN/inf
// as load_model does. The directory is mapped for this unit only, so its pages do not stay
// resident after it.
void load_model_unit(LlamaForCausalLM& model, const ModelLoadOptions& options, int unit);

}  // namespace ptrain
