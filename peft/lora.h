// LoRA adapters on a LlamaForCausalLM, and their exchange with Hugging Face PEFT.
//
// Targets: every entry of `target_modules` that is a plain name ("q_proj") selects the
// projections whose module name ends with it (PEFT's list rule); an entry with regex characters
// must match a whole module name ("model\.layers\.[0-3]\.self_attn\.q_proj"). `target_linear`
// selects every decoder projection (q/k/v/o, gate/up/down; never lm_head). `modules_to_save`
// ("embed_tokens", "lm_head") are trained in full. Everything else is frozen.
//
// PEFT directory: adapter_config.json and adapter_model.safetensors with keys
// "base_model.model.<module>.lora_A.weight" [r, in] and "...lora_B.weight" [out, r], and
// "base_model.model.<module>.weight" for modules_to_save, as PeftModel.save_pretrained writes
// them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/llama.h"

namespace ptrain {

struct AdapterSpec {
  LoraOptions lora;
  bool target_linear = false;
  std::vector<std::string> target_modules;
  std::vector<std::string> modules_to_save;
  uint64_t seed = 0;  // adapter initialisation
};

// The projection module names `spec` selects, in model order. UserError when nothing is
// selected, or when an entry selects nothing (naming it).
std::vector<std::string> lora_targets(const LlamaForCausalLM& model, const AdapterSpec& spec);

// Adds LoRA adapters to the targets (fp32 masters; PEFT's initialisation), makes the adapters and
// modules_to_save the only parameters that require gradients. Returns the targets.
std::vector<std::string> apply_lora(LlamaForCausalLM& model, const AdapterSpec& spec);

// Writes a PEFT adapter directory (adapter_config.json, adapter_model.safetensors) for the
// adapters on `model`; tensors in their master dtype (fp32). Files are written atomically.
void save_peft_adapter(LlamaForCausalLM& model, const AdapterSpec& spec,
                       const std::string& base_model, const std::string& dir);

// Reads a PEFT LoRA adapter directory and applies it to `model` (which must not have adapters
// yet): the spec from adapter_config.json, then every tensor, checked by name and shape.
// Unsupported settings (DoRA, fan_in_fan_out, bias training, rank or alpha patterns, another
// peft_type) are UserErrors naming the file and key. Returns the spec read.
AdapterSpec load_peft_adapter(LlamaForCausalLM& model, const std::string& dir);

}  // namespace ptrain
