#include "model/llama_weights.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "model/llama_ops.h"
#include "quant/bnb_import.h"

namespace ptrain {
namespace {

// Layer indices are read up to this: far more than any config may count (llama_config.h).
constexpr int64_t kMaxLayer = int64_t{1} << 40;

// safetensors dtypes libtorch can hold, both ways.
constexpr std::pair<StDtype, at::ScalarType> kTorchDtypes[] = {
    {StDtype::kBool, at::kBool}, {StDtype::kU8, at::kByte},   {StDtype::kI8, at::kChar},
    {StDtype::kI16, at::kShort}, {StDtype::kF16, at::kHalf},  {StDtype::kBF16, at::kBFloat16},
    {StDtype::kI32, at::kInt},   {StDtype::kF32, at::kFloat}, {StDtype::kF64, at::kDouble},
    {StDtype::kI64, at::kLong},
};

bool to_scalar_type(StDtype dtype, at::ScalarType* out) {
  for (const auto& [st, torch_type] : kTorchDtypes) {
    if (st == dtype) {
      *out = torch_type;
      return true;
    }
  }
  return false;
}

}  // namespace

StDtype safetensors_dtype(at::ScalarType dtype) {
  for (const auto& [st, torch_type] : kTorchDtypes)
    if (torch_type == dtype) return st;
  throw UserError(fmt::format("dtype {} has no safetensors equivalent", c10::toString(dtype)));
}

at::Tensor tensor_from_safetensors(const SafetensorsFile& file, const TensorInfo& info) {
  at::ScalarType dtype;
  PTRAIN_CHECK(to_scalar_type(info.dtype, &dtype),
               "'{}': tensor '{}' has dtype {}, which libtorch cannot hold", file.path(), info.name,
               dtype_name(info.dtype));
  const uint8_t* bytes = file.bytes(info);
  const auto element = dtype_size(info.dtype);
  if (reinterpret_cast<uintptr_t>(bytes) % element == 0) {
    auto mapping = file.mapping();  // the tensor keeps the file mapped
    return torch::from_blob(
        const_cast<uint8_t*>(bytes), info.shape, [mapping](void*) mutable { mapping.reset(); },
        torch::dtype(dtype));
  }
  at::Tensor copy = torch::empty(info.shape, torch::dtype(dtype));
  std::memcpy(copy.data_ptr(), bytes, info.nbytes());
  return copy;
}

namespace {

// The config.json keys a checkpoint tensor's shape follows from, for messages.
std::string shape_keys(const std::string& name) {
  auto ends = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const bool bias = ends(".bias");
  const std::string q = "num_attention_heads x head_dim", kv = "num_key_value_heads x head_dim";
  auto linear = [&](const std::string& out, const std::string& in) {
    return bias ? "[" + out + "]" : "[" + out + ", " + in + "]";
  };
  if (ends("embed_tokens.weight") || ends("lm_head.weight")) return "[vocab_size, hidden_size]";
  if (name.find(".q_proj.") != std::string::npos) return linear(q, "hidden_size");
  if (name.find(".k_proj.") != std::string::npos || name.find(".v_proj.") != std::string::npos)
    return linear(kv, "hidden_size");
  if (name.find(".o_proj.") != std::string::npos) return linear("hidden_size", q);
  if (name.find(".gate_proj.") != std::string::npos || name.find(".up_proj.") != std::string::npos)
    return linear("intermediate_size", "hidden_size");
  if (name.find(".down_proj.") != std::string::npos)
    return linear("hidden_size", "intermediate_size");
  return "[hidden_size]";  // the norms
}

// 1 + the largest l of the "model.layers.<l>." tensors (0 without any).
int64_t stored_layers(const SafetensorsModel& weights) {
  const std::string prefix = "model.layers.";
  int64_t layers = 0;
  for (const auto& name : weights.names()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    int64_t index = 0;
    size_t i = prefix.size();
    for (;
         i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && index < kMaxLayer;
         ++i)
      index = index * 10 + (name[i] - '0');
    if (i > prefix.size()) layers = std::max(layers, index + 1);
  }
  return layers;
}

}  // namespace

CheckpointSummary check_llama_checkpoint(const LlamaConfig& config, const SafetensorsModel& weights,
                                         const std::string& config_source) {
  // The tensor list below grows with num_hidden_layers: bounded by the checkpoint first.
  const int64_t layers = stored_layers(weights);
  PTRAIN_CHECK(config.num_hidden_layers <= layers,
               "{}: key 'num_hidden_layers' is {}, but model '{}' holds {} layers", config_source,
               config.num_hidden_layers, weights.dir(), layers);
  const auto needed = llama_tensor_shapes(config);
  std::set<std::string> needed_names;
  for (const auto& entry : needed) needed_names.insert(entry.first);
  for (const auto& name : weights.names())
    PTRAIN_CHECK(needed_names.count(name) ||
                     llama_ignored_tensor(name, config.tie_word_embeddings) ||
                     (config.bnb_nf4 && bnb_aux_tensor(name)),
                 "model '{}' has tensor '{}', which a {} with this config.json does not use",
                 weights.dir(), name, config.model_type);
  CheckpointSummary summary;
  for (const auto& [name, shape] : needed) {
    if (config.bnb_nf4 && llama_projection_weight(name)) {
      const Nf4Layout layout = check_bnb_nf4(weights, name, shape, config.bnb_double_quant);
      summary.bytes_by_dtype["NF4 (bitsandbytes)"] += static_cast<uint64_t>(layout.bytes);
      summary.parameters += layout.numel;
      continue;
    }
    const SafetensorsModel::Located* located = weights.find(name);
    PTRAIN_CHECK(located != nullptr, "model '{}' is missing tensor '{}'", weights.dir(), name);
    PTRAIN_CHECK(located->info->shape == shape,
                 "'{}': tensor '{}' has shape {}, the config needs {} ({} in {})",
                 located->file->path(), name, shape_string(located->info->shape),
                 shape_string(shape), shape_keys(name), config_source);
    const StDtype d = located->info->dtype;
    PTRAIN_CHECK(
        d == StDtype::kBF16 || d == StDtype::kF16 || d == StDtype::kF32 || d == StDtype::kF64,
        "'{}': tensor '{}' is {}, expected a floating-point weight (BF16, F16, F32 or "
        "F64)",
        located->file->path(), name, dtype_name(d));
    summary.bytes_by_dtype[dtype_name(d)] += located->info->nbytes();
    summary.parameters += located->info->numel();
  }
  return summary;
}

LlamaConfig load_llama_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  LlamaConfig config = parse_llama_config(read_text_file(path), path);
  check_llama_checkpoint(config, SafetensorsModel(model_dir), path);
  return config;
}

int llama_unit_of(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return 0;
  return 1 + std::stoi(name.substr(prefix.size()));
}

namespace {

// One tensor at a time, straight from the mapped file into the module (quantized on the way
// into NF4 projections), so no second copy of the model ever exists.
void load_tensors(LlamaForCausalLM& model, const SafetensorsModel& weights, int unit) {
  torch::NoGradGuard no_grad;
  const LlamaConfig& config = model->config();
  for (const auto& [name, shape] : llama_tensor_shapes(config)) {
    if (unit >= 0 && llama_unit_of(name) != unit) continue;
    if (config.bnb_nf4 && llama_projection_weight(name)) {
      model->set_nf4_tensor(name, read_bnb_nf4(weights, name, shape, config.bnb_double_quant));
      continue;
    }
    const SafetensorsModel::Located* located = weights.find(name);
    model->set_tensor(name, tensor_from_safetensors(*located->file, *located->info));
  }
}

}  // namespace

void load_llama_weights(LlamaForCausalLM& model, const SafetensorsModel& weights) {
  check_llama_checkpoint(model->config(), weights, weights.dir() + "/config.json");
  load_tensors(model, weights, -1);
}

void load_llama_unit_weights(LlamaForCausalLM& model, const SafetensorsModel& weights, int unit) {
  load_tensors(model, weights, unit);
}

void save_llama_model(LlamaForCausalLM& model, const std::string& dir, at::ScalarType dtype,
                      uint64_t max_shard_bytes, bool merge_lora) {
  // Each tensor is produced (converted, dequantized, merged) when the writer reaches it, so at
  // most one dense tensor exists at a time beyond the model itself.
  std::vector<TensorBytes> tensors;
  const uint64_t element = c10::elementSize(dtype);
  for (const auto& [name, shape] : llama_tensor_shapes(model->config())) {
    TensorBytes bytes;
    bytes.name = name;
    bytes.dtype = safetensors_dtype(dtype);
    bytes.shape = shape;
    bytes.nbytes = element * static_cast<uint64_t>(c10::multiply_integers(shape));
    bytes.produce = [&model, name = name, dtype, merge_lora, n = bytes.nbytes](void* out) {
      at::Tensor t = model->tensor_value(name, dtype, merge_lora).to(at::kCPU).contiguous();
      PTRAIN_ASSERT(t.nbytes() == n, "tensor '{}': {} bytes, expected {}", name, t.nbytes(), n);
      std::memcpy(out, t.data_ptr(), n);
    };
    tensors.push_back(std::move(bytes));
  }
  LlamaConfig config = model->config();
  config.torch_dtype = dtype == at::kBFloat16 ? "bfloat16"
                       : dtype == at::kHalf   ? "float16"
                                              : "float32";
  write_safetensors_model(dir, tensors, max_shard_bytes, {{"format", "pt"}});
  write_file_atomic(dir + "/config.json", llama_config_json(config));
  nlohmann::ordered_json generation = {{"_from_model_config", true}};
  if (config.bos_token_id) generation["bos_token_id"] = *config.bos_token_id;
  if (config.eos_token_ids.size() == 1) generation["eos_token_id"] = config.eos_token_ids[0];
  if (config.eos_token_ids.size() > 1) generation["eos_token_id"] = config.eos_token_ids;
  generation["transformers_version"] = "4.44.0";
  write_file_atomic(dir + "/generation_config.json", generation.dump(2) + "\n");
}

}  // namespace ptrain
