#include "launcher/resume_check.h"

#include <algorithm>

#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "data/prepared_data.h"

namespace ptrain {

nlohmann::json checkpoint_identity(const ResolvedConfig& config) {
  const JobConfig& job = config.job;
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [key, value] : config_values(config)) values[key] = value;
  return {{"config_hash", config.hash},
          {"config", values},
          {"model",
           {{"base_model", job.base_model}, {"fingerprint", model_fingerprint(job.base_model)}}},
          {"tokenizer", {{"fingerprint", tokenizer_fingerprint(job.base_model)}}},
          {"mode", job.adapter.empty() ? "full" : job.adapter}};
}

const std::vector<std::string>& resume_binding_keys() {
  static const std::vector<std::string> keys = {
      // what the trained tensors are
      "adapter", "load_in_4bit", "lora_r", "lora_alpha", "lora_target_linear",
      "lora_target_modules", "lora_modules_to_save", "peft_use_rslora", "bf16", "optimizer",
      // what the sampler's position counts in (the datasets themselves by content: the sampler
      // refuses a state saved over other prepared data; a moved file is fine)
      "sequence_len", "sample_packing", "sample_packing_group_size", "train_on_inputs",
      "chat_template", "excess_length_strategy", "skip_invalid_rows", "val_set_size", "seed"};
  return keys;
}

void check_resume(const CheckpointManifest& manifest, const nlohmann::json& identity,
                  spdlog::logger& log) {
  const nlohmann::json& saved = manifest.json;
  const std::string label = fmt::format("resume_from_checkpoint '{}'", manifest.dir);
  std::vector<std::string> problems;
  const nlohmann::json saved_config = saved.value("config", nlohmann::json::object());
  const nlohmann::json& config = identity.at("config");
  const auto& binding = resume_binding_keys();
  std::vector<std::string> keys;
  for (auto it = config.begin(); it != config.end(); ++it) keys.push_back(it.key());
  for (auto it = saved_config.begin(); it != saved_config.end(); ++it)
    if (!config.contains(it.key())) keys.push_back(it.key());
  for (const std::string& key : keys) {
    if (key == "resume_from_checkpoint") continue;  // differs by design
    const std::string before = saved_config.value(key, "(unset)");
    const std::string now = config.contains(key) ? config.at(key).get<std::string>() : "(unset)";
    if (before == now) continue;
    if (std::find(binding.begin(), binding.end(), key) != binding.end())
      problems.push_back(fmt::format("'{}' was {} and is now {}", key, before, now));
    else
      log.info("{}: '{}' changed since the checkpoint: {} -> {}", label, key, before, now);
  }
  const std::string model = saved.value("/model/fingerprint"_json_pointer, "");
  if (model != identity.at("model").at("fingerprint"))
    problems.push_back(fmt::format(
        "'base_model' ({}) is not the model the checkpoint trained ({}, fingerprint {}; now {})",
        identity.at("model").at("base_model").get<std::string>(),
        saved.value("/model/base_model"_json_pointer, "?"), model,
        identity.at("model").at("fingerprint").get<std::string>()));
  const std::string tokenizer = saved.value("/tokenizer/fingerprint"_json_pointer, "");
  if (tokenizer != identity.at("tokenizer").at("fingerprint"))
    problems.push_back("the base model's tokenizer files differ from the checkpoint's");
  if (!problems.empty())
    throw UserError(
        fmt::format("{}: this run cannot continue it: {}", label, fmt::join(problems, "; ")));
}

}  // namespace ptrain
