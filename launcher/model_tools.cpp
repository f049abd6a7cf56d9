#include "launcher/model_tools.h"

#include <map>
#include <set>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "core/file_util.h"
#include "model/llama.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"
#include "quant/bnb_import.h"
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
  LlamaConfig config = load_llama_config(dir);
  SafetensorsModel weights(dir);
  std::map<std::string, uint64_t> bytes_by_dtype;
  int64_t params = 0;
  const auto needed = llama_tensor_shapes(config);
  std::set<std::string> needed_names;
  for (const auto& entry : needed) needed_names.insert(entry.first);
  for (const auto& name : weights.names())
    PTRAIN_CHECK(needed_names.count(name) ||
                     llama_ignored_tensor(name, config.tie_word_embeddings) ||
                     (config.bnb_nf4 && bnb_aux_tensor(name)),
                 "model '{}' has tensor '{}', which a {} with this config.json does not use", dir,
                 name, config.model_type);
  for (const auto& [name, shape] : needed) {
    if (config.bnb_nf4 && llama_projection_weight(name)) {
      Nf4Weight w = read_bnb_nf4(weights, name, shape, config.bnb_double_quant);
      bytes_by_dtype["NF4 (bitsandbytes)"] += static_cast<uint64_t>(w.layout.bytes);
      params += w.numel();
      continue;
    }
    const SafetensorsModel::Located* located = weights.find(name);
    PTRAIN_CHECK(located != nullptr, "model '{}' is missing tensor '{}'", dir, name);
    PTRAIN_CHECK(located->info->shape == shape,
                 "'{}': tensor '{}' has the wrong shape for config.json", located->file->path(),
                 name);
    const StDtype d = located->info->dtype;
    PTRAIN_CHECK(d == StDtype::kBF16 || d == StDtype::kF16 || d == StDtype::kF32,
                 "'{}': tensor '{}' is {}, expected BF16, F16 or F32", located->file->path(), name,
                 dtype_name(d));
    bytes_by_dtype[dtype_name(d)] += located->info->nbytes();
    params += located->info->numel();
  }
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

}  // namespace ptrain
