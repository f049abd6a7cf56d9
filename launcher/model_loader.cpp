#include "launcher/model_loader.h"

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "model/llama_weights.h"

namespace ptrain {
namespace {

// UserError naming `what` and the tensor when `tensor` holds a NaN or an infinity: a model with
// them gives no meaningful loss, sample or merge, so it is refused where it is read.
void check_finite(const at::Tensor& tensor, const std::string& name, const std::string& what) {
  if (!tensor.defined() || !at::isFloatingType(tensor.scalar_type())) return;
  PTRAIN_CHECK(at::isfinite(tensor).all().item<bool>(),
               "{} holds NaN/inf values (tensor '{}'); it cannot be evaluated, sampled or merged",
               what, name);
}

void check_adapter_finite(const LlamaForCausalLM& model, const AdapterSpec& adapter,
                          const std::string& dir) {
  const std::string what = fmt::format("adapter '{}'", dir);
  for (const auto& [name, projection] : model->projections()) {
    if (!projection->has_lora()) continue;
    check_finite(projection->lora_a(), name + ".lora_A.weight", what);
    check_finite(projection->lora_b(), name + ".lora_B.weight", what);
  }
  // modules_to_save ("lm_head", "embed_tokens"): the adapter replaced these weights in full.
  for (const auto& entry : adapter.modules_to_save)
    for (const auto& named : model->named_parameters())
      if (named.key().find(entry) != std::string::npos)
        check_finite(named.value(), named.key(), what);
}

LlamaForCausalLM build_model(const ModelLoadOptions& options, bool defer_weights) {
  PTRAIN_CHECK(options.dtype == "bf16" || options.dtype == "fp32",
               "--dtype: expected bf16 or fp32, got '{}'", options.dtype);
  ModelOptions model_options;
  model_options.dtype = options.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  model_options.defer_weights = defer_weights;
  LlamaConfig config = load_llama_config(options.dir);
  // A model bitsandbytes saved in 4 bits loads as it is stored, with or without --load-in-4bit.
  model_options.nf4_base = options.load_in_4bit || config.bnb_nf4;
  if (config.bnb_nf4) model_options.nf4_double_quant = config.bnb_double_quant;
  return LlamaForCausalLM(config, model_options);
}

}  // namespace

LlamaForCausalLM deferred_model(const ModelLoadOptions& options) {
  PTRAIN_ASSERT(options.adapter.empty(), "deferred_model loads no adapter");
  return build_model(options, /*defer_weights=*/true);
}

void load_model_unit(LlamaForCausalLM& model, const ModelLoadOptions& options, int unit) {
  load_llama_unit_weights(model, SafetensorsModel(options.dir), unit);
  torch::NoGradGuard no_grad;
  for (const auto& named : model->named_parameters())
    if (llama_unit_of(named.key()) == unit)
      check_finite(named.value(), named.key(), fmt::format("model '{}'", options.dir));
}

LoadedModel load_model(const ModelLoadOptions& options) {
  LoadedModel loaded;
  loaded.model = build_model(options, /*defer_weights=*/false);
  load_llama_weights(loaded.model, SafetensorsModel(options.dir));
  {
    torch::NoGradGuard no_grad;
    for (const auto& named : loaded.model->named_parameters())
      check_finite(named.value(), named.key(), fmt::format("model '{}'", options.dir));
  }
  if (!options.adapter.empty()) {
    loaded.adapter = load_peft_adapter(loaded.model, options.adapter);
    torch::NoGradGuard no_grad;
    check_adapter_finite(loaded.model, loaded.adapter, options.adapter);
  }
  return loaded;
}

}  // namespace ptrain
