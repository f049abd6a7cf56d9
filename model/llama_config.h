// The architecture of a Llama-family model, read from a Hugging Face config.json.
//
// Supported: model_type llama (Llama 2/3/3.1, TinyLlama), mistral (with its sliding window), and
// qwen2 (bias on q/k/v). RoPE scaling: none, "linear", and "llama3", from either the legacy
// `rope_scaling` key or the newer `rope_parameters` key. Anything else that changes the
// computation (another architecture, activation, rope type, partial rotary, ...) is a UserError
// naming the file and key rather than a silent guess; keys that do not change the computation
// (transformers_version, use_cache, ...) are ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ptrain {

struct RopeScaling {
  std::string type = "default";  // default | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct LlamaConfig {
  std::string model_type = "llama";
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 128;
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // llama attention_bias, qwen2 always
  bool o_bias = false;    // llama attention_bias only
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // 0: none (mistral sets it)
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype = "bfloat16";
  // Pre-quantized by bitsandbytes (config.json quantization_config, 4-bit NF4): the decoder
  // projections are stored as NF4 tensors with their quant state (quant/bnb_import.h).
  bool bnb_nf4 = false;
  bool bnb_double_quant = false;

  int64_t num_parameters() const;
  // FLOPs of one token's forward pass at context length `seq` (matmuls only, 2 per MAC;
  // attention scores and values at the causal average seq/2).
  double forward_flops_per_token(int64_t seq) const;
};

// The tensors a Hugging Face checkpoint of this architecture holds, by name, with their shapes
// (what LlamaForCausalLM registers), in module order.
std::vector<std::pair<std::string, std::vector<int64_t>>> llama_tensor_shapes(const LlamaConfig& c);

// Tensors a checkpoint may hold beyond llama_tensor_shapes(), ignored by the documented rule:
// "*.rotary_emb.inv_freq" (recomputed from the config) and "lm_head.weight" when embeddings are
// tied.
bool llama_ignored_tensor(const std::string& name, bool tied_embeddings);

// Whether checkpoint tensor `name` is a decoder projection's weight ("...self_attn.q_proj.weight",
// "...mlp.down_proj.weight"): the tensors QLoRA quantizes.
bool llama_projection_weight(const std::string& name);

// Parses config.json text; `source` names the file in errors. Sizes are bounded before anything
// is built from them: each key far beyond any released model's (vocab_size 2^24, hidden_size and
// intermediate_size 2^20, num_hidden_layers, num_attention_heads and head_dim 2^14,
// max_position_embeddings 2^30), and at most 2^40 parameters in all. A model directory's config is
// read with load_llama_config (model/llama_weights.h), which also checks it against the weights.
LlamaConfig parse_llama_config(const std::string& json_text, const std::string& source);

// The config.json text for `config` (HF key names, so HF tools load the directory).
std::string llama_config_json(const LlamaConfig& config);

// Named architectures for `ptrain init-model --preset`: tiny, 160m, 1b (TinyLlama-1.1B shapes).
LlamaConfig llama_preset(const std::string& name);
std::vector<std::string> llama_preset_names();

}  // namespace ptrain
