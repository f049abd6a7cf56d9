// Moving Llama weights between safetensors files and a LlamaForCausalLM, by Hugging Face name.
#pragma once

#include <string>

#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_model.h"
#include "model/llama.h"

namespace ptrain {

// A tensor over a file's bytes: zero-copy (sharing the mapping's lifetime) when the bytes are
// suitably aligned, else a copy. UserError for dtypes libtorch cannot represent (U16, U32, U64,
// F8_*), naming the file and tensor.
at::Tensor tensor_from_safetensors(const SafetensorsFile& file, const TensorInfo& info);

StDtype safetensors_dtype(at::ScalarType dtype);

// Sets every checkpoint tensor from `weights` (converting the dtype; quantizing into NF4
// projections, one tensor at a time), checking names and shapes. A
// missing or mis-shaped tensor is a UserError naming it; so is an extra tensor, except those the
// documented rule ignores: "*.rotary_emb.inv_freq" (recomputed from config) and "lm_head.weight"
// in a model with tied embeddings.
void load_llama_weights(LlamaForCausalLM& model, const SafetensorsModel& weights);

// Writes `model`'s checkpoint tensors (as `dtype`, e.g. bf16; NF4 projections dequantized; LoRA
// adapters merged when `merge_lora`) plus config.json and generation_config.json to `dir` in
// Hugging Face layout, sharding past `max_shard_bytes`.
void save_llama_model(LlamaForCausalLM& model, const std::string& dir, at::ScalarType dtype,
                      uint64_t max_shard_bytes = uint64_t{5} << 30, bool merge_lora = false);

}  // namespace ptrain
