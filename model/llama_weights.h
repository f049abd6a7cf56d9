// Moving Llama weights between safetensors files and a LlamaForCausalLM, by Hugging Face name.
#pragma once

#include <cstdint>
#include <map>
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

// What a model directory's weights hold, by their headers.
struct CheckpointSummary {
  int64_t parameters = 0;
  std::map<std::string, uint64_t> bytes_by_dtype;  // "BF16", "F32", "NF4 (bitsandbytes)", ...
};

// Checks `weights` against `config` from the headers alone (plus the small bitsandbytes quant
// states), allocating nothing sized by the config: first that the checkpoint holds the decoder
// layers the config counts (before the config's tensor list is built), then that it holds no
// tensor the config does not use (except those the documented rule ignores:
// "*.rotary_emb.inv_freq", recomputed from the config, and "lm_head.weight" with tied embeddings),
// then every tensor of llama_tensor_shapes() with its shape and a floating-point dtype (BF16, F16,
// F32, F64), or stored 4-bit (quant/bnb_import.h) when config.bnb_nf4. UserError naming the file
// and tensor, and for a shape the config.json keys it follows from (`config_source` names the
// config in messages).
CheckpointSummary check_llama_checkpoint(const LlamaConfig& config, const SafetensorsModel& weights,
                                         const std::string& config_source);

// The config.json of model directory `model_dir` (parse_llama_config), checked against the
// directory's weights (check_llama_checkpoint): a config whose sizes disagree with its checkpoint
// is refused here, before a model of the config's size is built.
LlamaConfig load_llama_config(const std::string& model_dir);

// Sets every checkpoint tensor from `weights` (converting the dtype; quantizing into NF4
// projections, one tensor at a time), after check_llama_checkpoint has passed for the model's
// config, so a bad checkpoint changes nothing.
void load_llama_weights(LlamaForCausalLM& model, const SafetensorsModel& weights);

// The unit of model->units() a checkpoint tensor belongs to: decoder layer l's tensors
// ("model.layers.<l>.*") to unit l + 1, the rest (embeddings, final norm, lm_head) to the root, 0.
int llama_unit_of(const std::string& name);

// load_llama_weights for the tensors of one unit only (llama_unit_of), for a model built with
// deferred weights that is loaded, sharded and released unit by unit. The checkpoint must have
// passed check_llama_checkpoint for the model's config (load_llama_config does it).
void load_llama_unit_weights(LlamaForCausalLM& model, const SafetensorsModel& weights, int unit);

// Writes `model`'s checkpoint tensors (as `dtype`, e.g. bf16; NF4 projections dequantized; LoRA
// adapters merged when `merge_lora`) plus config.json and generation_config.json to `dir` in
// Hugging Face layout, sharding past `max_shard_bytes`.
void save_llama_model(LlamaForCausalLM& model, const std::string& dir, at::ScalarType dtype,
                      uint64_t max_shard_bytes = uint64_t{5} << 30, bool merge_lora = false);

}  // namespace ptrain
