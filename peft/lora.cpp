#include "peft/lora.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <regex>
#include <set>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_file.h"
#include "model/llama_ops.h"
#include "model/llama_weights.h"

namespace ptrain {
namespace {

const char* kPrefix = "base_model.model.";

// A module name or dotted name suffix ("q_proj", "self_attn.q_proj"): matched as PEFT matches
// list entries (the name itself, or ending with "." + entry). Anything else is a regex.
bool is_plain_name(const std::string& entry) {
  return !entry.empty() &&
         entry.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") ==
             std::string::npos;
}

bool ends_with_component(const std::string& name, const std::string& suffix) {
  return name == suffix || (name.size() > suffix.size() &&
                            name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                            name[name.size() - suffix.size() - 1] == '.');
}

// The module a modules_to_save entry names, and its trainable tensor names.
std::string save_module_name(const std::string& entry) {
  if (entry == "embed_tokens" || entry == "model.embed_tokens") return "model.embed_tokens";
  if (entry == "lm_head") return "lm_head";
  throw UserError(fmt::format(
      "lora_modules_to_save: '{}' is not a module ptrain can train in full (embed_tokens, "
      "lm_head)",
      entry));
}

// The PEFT target_modules value: the plain names as a list, or one regex matching exactly the
// targets when the spec used regexes.
nlohmann::json peft_target_modules(const AdapterSpec& spec,
                                   const std::vector<std::string>& targets) {
  bool plain = !spec.target_linear;
  for (const auto& entry : spec.target_modules) plain = plain && is_plain_name(entry);
  if (plain) return spec.target_modules;
  if (spec.target_linear && spec.target_modules.empty())
    return {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  std::string regex;
  for (const auto& t : targets) {
    std::string escaped;
    for (char c : t) escaped += (c == '.') ? std::string("\\.") : std::string(1, c);
    regex += (regex.empty() ? "" : "|") + escaped;
  }
  return "(?:" + regex + ")";
}

// Where a spec's targets come from, for the messages: a job config's key, or a PEFT adapter's
// adapter_config.json and its key.
struct TargetsKey {
  std::string key;          // "lora_target_modules", or "'DIR/adapter_config.json': target_modules"
  std::string none_chosen;  // what to do when nothing is selected
};

TargetsKey config_targets_key() {
  return {"lora_target_modules", "set lora_target_linear: true or lora_target_modules"};
}

std::vector<std::string> lora_targets_from(const LlamaForCausalLM& model, const AdapterSpec& spec,
                                           const TargetsKey& from) {
  std::vector<std::regex> patterns;
  for (const auto& entry : spec.target_modules) {
    try {
      patterns.emplace_back(is_plain_name(entry) ? std::string() : entry);
    } catch (const std::regex_error& e) {
      throw UserError(fmt::format("{}: '{}' is not a valid regex: {}", from.key, entry, e.what()));
    }
  }
  std::vector<std::string> targets;
  std::vector<bool> entry_used(spec.target_modules.size(), false);
  for (const auto& [name, projection] : model->projections()) {
    bool selected = spec.target_linear;
    for (size_t e = 0; e < spec.target_modules.size(); ++e) {
      const std::string& entry = spec.target_modules[e];
      const bool match = is_plain_name(entry) ? ends_with_component(name, entry)
                                              : std::regex_match(name, patterns[e]);
      if (match) entry_used[e] = true;
      selected = selected || match;
    }
    if (selected) targets.push_back(name);
  }
  for (size_t e = 0; e < spec.target_modules.size(); ++e)
    PTRAIN_CHECK(entry_used[e],
                 "{}: '{}' matches no projection (names: q_proj, k_proj, v_proj, o_proj, "
                 "gate_proj, up_proj, down_proj, or a regex over full module names such as "
                 "'model.layers.0.self_attn.q_proj')",
                 from.key, spec.target_modules[e]);
  PTRAIN_CHECK(!targets.empty(), "LoRA selects no module: {}", from.none_chosen);
  // std::map orders "layers.10" before "layers.2"; keep the model's order instead.
  std::vector<std::string> ordered;
  for (const auto& named : model->named_modules("", false))
    if (std::find(targets.begin(), targets.end(), named.key()) != targets.end())
      ordered.push_back(named.key());
  return ordered;
}

std::vector<std::string> apply_lora_from(LlamaForCausalLM& model, const AdapterSpec& spec,
                                         const TargetsKey& from) {
  std::vector<std::string> targets = lora_targets_from(model, spec, from);
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(spec.seed);
  for (const auto& name : targets) model->projections().at(name)->add_lora(spec.lora, generator);
  std::set<std::string> save_modules;
  for (const auto& entry : spec.modules_to_save) save_modules.insert(save_module_name(entry));
  PTRAIN_CHECK(save_modules.empty() || !model->config().tie_word_embeddings,
               "lora_modules_to_save: this model ties lm_head to embed_tokens; training either in "
               "full would change both, which a PEFT adapter cannot express (PEFT copies the "
               "saved module and leaves the tied one unchanged)");
  // The adapters just added are the only parameters that require gradients; modules_to_save are
  // trained in full.
  for (const auto& named : model->named_modules("", /*include_self=*/false))
    if (save_modules.count(named.key()))
      for (auto& p : named.value()->parameters()) p.set_requires_grad(true);
  return targets;
}

}  // namespace

std::vector<std::string> lora_targets(const LlamaForCausalLM& model, const AdapterSpec& spec) {
  return lora_targets_from(model, spec, config_targets_key());
}

std::vector<std::string> apply_lora(LlamaForCausalLM& model, const AdapterSpec& spec) {
  return apply_lora_from(model, spec, config_targets_key());
}

void save_peft_adapter(LlamaForCausalLM& model, const AdapterSpec& spec,
                       const std::string& base_model, const std::string& dir) {
  std::vector<std::string> targets;
  for (const auto& named : model->named_modules("", false)) {
    auto* projection = named.value()->as<ProjectionImpl>();
    if (projection && projection->has_lora()) targets.push_back(named.key());
  }
  PTRAIN_CHECK(!targets.empty(), "export --format peft: the model has no LoRA adapter");
  std::vector<at::Tensor> keep;
  std::vector<TensorBytes> tensors;
  auto add = [&](const std::string& name, const at::Tensor& value) {
    at::Tensor t = value.detach().to(at::kCPU).contiguous();  // the bytes are read on the host
    keep.push_back(t);
    tensors.push_back({name,
                       safetensors_dtype(t.scalar_type()),
                       t.sizes().vec(),
                       t.data_ptr(),
                       static_cast<uint64_t>(t.nbytes()),
                       {}});
  };
  for (const auto& name : targets) {
    ProjectionImpl* p = model->projections().at(name);
    add(kPrefix + name + ".lora_A.weight", p->lora_a());
    add(kPrefix + name + ".lora_B.weight", p->lora_b());
  }
  nlohmann::json save_list = nullptr;
  for (const auto& entry : spec.modules_to_save) {
    const std::string module = save_module_name(entry);
    const at::Tensor* weight = model->named_parameters().find(module + ".weight");
    PTRAIN_CHECK(weight != nullptr, "modules_to_save: the model has no '{}.weight'", module);
    add(kPrefix + module + ".weight", *weight);
    if (save_list.is_null()) save_list = nlohmann::json::array();
    save_list.push_back(module.substr(module.rfind('.') + 1));
  }
  std::filesystem::create_directories(dir);
  write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::ordered_json config = {{"peft_type", "LORA"},
                                   {"task_type", "CAUSAL_LM"},
                                   {"base_model_name_or_path", base_model},
                                   {"r", spec.lora.r},
                                   {"lora_alpha", spec.lora.alpha},
                                   {"lora_dropout", spec.lora.dropout},
                                   {"target_modules", peft_target_modules(spec, targets)},
                                   {"bias", "none"},
                                   {"fan_in_fan_out", false},
                                   {"use_rslora", spec.lora.rslora},
                                   {"use_dora", false},
                                   {"modules_to_save", save_list},
                                   {"init_lora_weights", true},
                                   {"inference_mode", true},
                                   {"rank_pattern", nlohmann::json::object()},
                                   {"alpha_pattern", nlohmann::json::object()}};
  write_file_atomic(dir + "/adapter_config.json", config.dump(2) + "\n");
}

namespace {

AdapterSpec load_peft_adapter_checked(LlamaForCausalLM& model, const std::string& dir) {
  const std::string config_path = dir + "/adapter_config.json";
  PTRAIN_CHECK(std::filesystem::exists(config_path), "adapter '{}' has no adapter_config.json",
               dir);
  nlohmann::json c = read_json_file(config_path);
  PTRAIN_CHECK(c.is_object(), "'{}': expected a JSON object", config_path);
  auto key_is = [&](const char* key, const nlohmann::json& allowed) {
    return !c.contains(key) || c[key].is_null() || c[key] == allowed;
  };
  PTRAIN_CHECK(c.value("peft_type", "") == "LORA", "'{}': peft_type must be \"LORA\", got {}",
               config_path, c.contains("peft_type") ? c["peft_type"].dump() : "nothing");
  PTRAIN_CHECK(key_is("use_dora", false), "'{}': use_dora (DoRA) is not supported", config_path);
  PTRAIN_CHECK(key_is("fan_in_fan_out", false), "'{}': fan_in_fan_out must be false for Llama",
               config_path);
  PTRAIN_CHECK(key_is("bias", "none"),
               "'{}': bias must be \"none\" (bias training is not supported)", config_path);
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    PTRAIN_CHECK(!c.contains(key) || c[key].is_null() || c[key].empty(),
                 "'{}': {} (per-module ranks or alphas) is not supported", config_path, key);
  // Settings that change which modules get adapters, or the base the adapter belongs to.
  for (const char* key : {"layers_to_transform", "layers_pattern", "exclude_modules"})
    PTRAIN_CHECK(!c.contains(key) || c[key].is_null() || c[key].empty(),
                 "'{}': {} is not supported", config_path, key);
  PTRAIN_CHECK(!c.contains("init_lora_weights") || c["init_lora_weights"].is_boolean(),
               "'{}': init_lora_weights {} modifies the base weights (PiSSA, OLoRA, ...); only "
               "plain LoRA (true/false) is supported",
               config_path, c.contains("init_lora_weights") ? c["init_lora_weights"].dump() : "");
  PTRAIN_CHECK(c.contains("r") && c["r"].is_number_integer() && c["r"].get<int64_t>() > 0,
               "'{}': key 'r' must be a positive integer", config_path);
  PTRAIN_CHECK(c.contains("lora_alpha") && c["lora_alpha"].is_number(),
               "'{}': key 'lora_alpha' must be a number", config_path);
  AdapterSpec spec;
  spec.lora.r = c["r"].get<int64_t>();
  spec.lora.alpha = c["lora_alpha"].get<double>();
  spec.lora.dropout = c.value("lora_dropout", 0.0);
  spec.lora.rslora = c.value("use_rslora", false);
  const nlohmann::json& targets =
      c.contains("target_modules") ? c["target_modules"] : nlohmann::json();
  if (targets.is_string()) {
    // PEFT full-matches a string against module names.
    spec.target_modules = {targets.get<std::string>()};
    if (is_plain_name(spec.target_modules[0]))
      spec.target_modules[0] = "(?:" + spec.target_modules[0] + ")";
  } else if (targets.is_array()) {
    for (const auto& t : targets) {
      // PEFT matches list entries by name suffix, never as a regex.
      PTRAIN_CHECK(t.is_string() && is_plain_name(t.get<std::string>()),
                   "'{}': target_modules entry {} must be a module name", config_path, t.dump());
      spec.target_modules.push_back(t.get<std::string>());
    }
  } else {
    throw UserError(
        fmt::format("'{}': target_modules must be a list of names or a regex string", config_path));
  }
  if (c.contains("modules_to_save") && c["modules_to_save"].is_array())
    for (const auto& m : c["modules_to_save"]) spec.modules_to_save.push_back(m.get<std::string>());

  // A PEFT list entry that names no projection of this model (a list written for another
  // architecture) is an error naming this file's target_modules.
  apply_lora_from(model, spec,
                  {fmt::format("'{}': target_modules", config_path),
                   fmt::format("'{}': target_modules is empty", config_path)});
  SafetensorsFile file(dir + "/adapter_model.safetensors");
  std::set<std::string> expected;
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& key, at::Tensor into) {
    expected.insert(key);
    const TensorInfo* info = file.find(key);
    PTRAIN_CHECK(info != nullptr, "'{}': missing tensor '{}'", file.path(), key);
    at::Tensor value = tensor_from_safetensors(file, *info);
    PTRAIN_CHECK(value.sizes() == into.sizes(), "'{}': tensor '{}' has shape {}, expected {}",
                 file.path(), key, shape_string(value.sizes()), shape_string(into.sizes()));
    PTRAIN_CHECK(at::isFloatingType(value.scalar_type()), "'{}': tensor '{}' is not floating-point",
                 file.path(), key);
    into.copy_(value);
  };
  for (const auto& [name, p] : model->projections()) {
    if (!p->has_lora()) continue;
    load(kPrefix + name + ".lora_A.weight", p->lora_a());
    load(kPrefix + name + ".lora_B.weight", p->lora_b());
  }
  for (const auto& entry : spec.modules_to_save) {
    const std::string module = save_module_name(entry);
    at::Tensor* weight = model->named_parameters().find(module + ".weight");
    PTRAIN_CHECK(weight != nullptr, "modules_to_save: the model has no '{}.weight'", module);
    load(kPrefix + module + ".weight", *weight);
  }
  for (const auto& info : file.tensors())
    PTRAIN_CHECK(expected.count(info.name),
                 "'{}': tensor '{}' is not part of a LoRA adapter for this model and "
                 "adapter_config.json",
                 file.path(), info.name);
  return spec;
}

}  // namespace

AdapterSpec load_peft_adapter(LlamaForCausalLM& model, const std::string& dir) {
  try {
    return load_peft_adapter_checked(model, dir);
  } catch (const nlohmann::json::exception& e) {  // a value of the wrong JSON type
    throw UserError(fmt::format("'{}/adapter_config.json': unexpected value: {}", dir, e.what()));
  }
}

}  // namespace ptrain
