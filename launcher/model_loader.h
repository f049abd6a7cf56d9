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

}  // namespace ptrain
