#include "launcher/model_loader.h"

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "model/llama_weights.h"

namespace ptrain {

LoadedModel load_model(const ModelLoadOptions& options) {
  PTRAIN_CHECK(options.dtype == "bf16" || options.dtype == "fp32",
               "--dtype: expected bf16 or fp32, got '{}'", options.dtype);
  ModelOptions model_options;
  model_options.dtype = options.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  LlamaConfig config = load_llama_config(options.dir);
  // A model bitsandbytes saved in 4 bits loads as it is stored, with or without --load-in-4bit.
  model_options.nf4_base = options.load_in_4bit || config.bnb_nf4;
  if (config.bnb_nf4) model_options.nf4_double_quant = config.bnb_double_quant;
  LoadedModel loaded;
  loaded.model = LlamaForCausalLM(config, model_options);
  load_llama_weights(loaded.model, SafetensorsModel(options.dir));
  if (!options.adapter.empty()) loaded.adapter = load_peft_adapter(loaded.model, options.adapter);
  return loaded;
}

}  // namespace ptrain
