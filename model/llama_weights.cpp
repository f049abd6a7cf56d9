#include "model/llama_weights.h"

#include <nlohmann/json.hpp>

#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "model/llama_ops.h"
#include "quant/bnb_import.h"

namespace ptrain {
namespace {

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

void load_llama_weights(LlamaForCausalLM& model, const SafetensorsModel& weights) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  // One tensor at a time, straight from the mapped file into the module (quantized on the way
  // into NF4 projections), so no second copy of the model ever exists.
  const LlamaConfig& config = model->config();
  for (const auto& [name, shape] : llama_tensor_shapes(config)) {
    if (config.bnb_nf4 && llama_projection_weight(name)) {
      model->set_nf4_tensor(name, read_bnb_nf4(weights, name, shape, config.bnb_double_quant));
      used.insert(name);
      continue;
    }
    const SafetensorsModel::Located* located = weights.find(name);
    PTRAIN_CHECK(located != nullptr, "model '{}' is missing tensor '{}'", weights.dir(), name);
    at::Tensor source = tensor_from_safetensors(*located->file, *located->info);
    PTRAIN_CHECK(source.sizes() == at::IntArrayRef(shape),
                 "'{}': tensor '{}' has shape {}, the config needs {}", located->file->path(), name,
                 shape_string(source.sizes()), shape_string(shape));
    PTRAIN_CHECK(at::isFloatingType(source.scalar_type()),
                 "'{}': tensor '{}' is {}, expected a floating-point weight", located->file->path(),
                 name, c10::toString(source.scalar_type()));
    model->set_tensor(name, source);
    used.insert(name);
  }
  for (const auto& name : weights.names()) {
    if (used.count(name) || llama_ignored_tensor(name, config.tie_word_embeddings)) continue;
    if (config.bnb_nf4 && bnb_aux_tensor(name)) continue;  // read with its weight
    throw UserError(
        fmt::format("model '{}' has tensor '{}', which a {} with this config.json does "
                    "not use",
                    weights.dir(), name, model->config().model_type));
  }
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
      at::Tensor t = model->tensor_value(name, dtype, merge_lora).contiguous();
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
