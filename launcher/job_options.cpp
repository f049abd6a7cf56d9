#include "launcher/job_options.h"

#include "data/sampler.h"

namespace ptrain {

uint64_t rank_seed(int64_t seed, int rank) {
  return splitmix64_output(static_cast<uint64_t>(seed), static_cast<uint64_t>(rank));
}

ModelOptions model_options_from_config(const JobConfig& config, int rank) {
  ModelOptions options;
  options.rng_seed = rank_seed(config.seed, rank);
  options.dtype = config.bf16 ? at::kBFloat16 : at::kFloat;
  options.nf4_base = config.load_in_4bit;
  options.activation_checkpointing = config.gradient_checkpointing;
  return options;
}

std::optional<AdapterSpec> adapter_spec_from_config(const JobConfig& config) {
  if (config.adapter.empty()) return std::nullopt;
  AdapterSpec spec;
  spec.lora.r = config.lora_r;
  spec.lora.alpha = config.lora_alpha;
  spec.lora.dropout = config.lora_dropout;
  spec.lora.rslora = config.peft_use_rslora;
  spec.target_linear = config.lora_target_linear;
  spec.target_modules = config.lora_target_modules;
  spec.modules_to_save = config.lora_modules_to_save;
  spec.seed = static_cast<uint64_t>(config.seed);
  return spec;
}

DataPrepOptions data_prep_options(const JobConfig& job) {
  DataPrepOptions options;
  for (const DatasetConfig& d : job.datasets) {
    DataSource source;
    source.path = d.path;
    source.type = d.type;
    if (d.type == "chat_template") {
      source.field = d.field_messages;
      source.role_field = d.message_field_role;
      source.content_field = d.message_field_content;
    }
    if (d.type == "completion") source.field = d.field;
    source.weight = d.weight;
    source.dtype = d.dtype;
    options.sources.push_back(source);
  }
  options.render.train_on_inputs = job.train_on_inputs;
  options.render.chat_template = job.chat_template;
  options.sequence_len = job.sequence_len;
  options.sample_packing = job.sample_packing;
  options.packing_group_size = job.sample_packing_group_size;
  options.length_policy = parse_length_policy(job.excess_length_strategy);
  options.skip_invalid_rows = job.skip_invalid_rows;
  options.val_set_size = job.val_set_size;
  options.seed = static_cast<uint64_t>(job.seed);
  return options;
}

}  // namespace ptrain
