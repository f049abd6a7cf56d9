#include "launcher/model_tools.h"

#include <filesystem>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "core/file_util.h"
#include "model/llama.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"
#include "tokenizer/tokenizer.h"

namespace ptrain {

int64_t write_random_llama_model(const InitModelOptions& options) {
  PTRAIN_CHECK(options.dtype == "bf16" || options.dtype == "fp32",
               "--dtype: expected bf16 or fp32, got '{}'", options.dtype);
  const at::ScalarType dtype = options.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  LlamaConfig config = llama_preset(options.preset);
  ModelOptions model_options;
  model_options.dtype = dtype;
  LlamaForCausalLM model(config, model_options);
  model->initialize(options.seed);
  save_llama_model(model, options.out_dir, dtype, options.max_shard_bytes);
  // The tiny preset's vocabulary is the byte tokenizer's, so generate and tokenize work on it.
  if (options.preset == "tiny")
    write_file_atomic(options.out_dir + "/tokenizer_config.json", byte_tokenizer_config_json());
  return config.num_parameters();
}

std::string inspect_llama_model(const std::string& dir) {
  // Parsed, bounded and checked against the weights' headers; nothing is sized by the config.
  const std::string config_path = dir + "/config.json";
  const LlamaConfig config = parse_llama_config(read_text_file(config_path), config_path);
  SafetensorsModel weights(dir);
  const CheckpointSummary summary = check_llama_checkpoint(config, weights, config_path);
  const int64_t params = summary.parameters;
  const auto& bytes_by_dtype = summary.bytes_by_dtype;
  std::string dtypes;
  for (const auto& [name, bytes] : bytes_by_dtype)
    dtypes += fmt::format("{}{} {:.1f} MiB", dtypes.empty() ? "" : ", ", name, bytes / 1048576.0);
  return fmt::format(
      "model {}\n  architecture: {} ({} layers, hidden {}, heads {}/{} kv, head_dim {}, "
      "intermediate {}, vocab {})\n  rope: theta {}, scaling {}\n  parameters: {} ({})\n"
      "  weights: {} file(s), {} tensors, {}\n  tied embeddings: {}\n  status: OK (every tensor "
      "present with the shape config.json needs)\n",
      dir, config.model_type, config.num_hidden_layers, config.hidden_size,
      config.num_attention_heads, config.num_key_value_heads, config.head_dim,
      config.intermediate_size, config.vocab_size, config.rope_theta, config.rope_scaling.type,
      params,
      params >= 1e9 ? fmt::format("{:.2f} B", params / 1e9) : fmt::format("{:.2f} M", params / 1e6),
      weights.file_count(), weights.names().size(), dtypes,
      config.tie_word_embeddings ? "yes" : "no");
}

void copy_model_companions(const std::string& model_dir, const std::string& out_dir) {
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "tokenizer.model", "special_tokens_map.json"}) {
    const std::filesystem::path source = std::filesystem::path(model_dir) / name;
    if (std::filesystem::exists(source))
      write_file_atomic((std::filesystem::path(out_dir) / name).string(),
                        read_text_file(source.string()));
  }
}

}  // namespace ptrain
