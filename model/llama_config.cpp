#include "model/llama_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

#include "core/error.h"

namespace ptrain {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& source, const std::string& key, const std::string& what) {
  throw UserError(fmt::format("{}: key '{}': {}", source, key, what));
}

// A value for an error message: scalars as written, containers by type only (serialising an
// attacker-sized nested value is both unbounded and recursive).
std::string shown(const json& value) {
  return value.is_primitive() ? value.dump() : std::string("a JSON ") + value.type_name();
}

// Bounds on the sizes, far beyond any released model's (vocabularies reach ~256k tokens, layers
// ~53k features and ~126 deep, contexts ~10M positions), so that a value past one (a typo, or a
// hostile file) is refused before anything is sized by it.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxWidth = int64_t{1} << 20;  // hidden_size, intermediate_size
constexpr int64_t kMaxCount = int64_t{1} << 14;  // num_hidden_layers, heads, head_dim
constexpr int64_t kMaxPositions = int64_t{1} << 30;
// 2 TiB in bf16; Llama 3.1 405B has 0.37 x 2^40 parameters.
constexpr double kMaxParameters = 1099511627776.0;  // 2^40

int64_t get_int(const json& j, const std::string& source, const char* key, int64_t fallback,
                int64_t min = 1, int64_t max = std::numeric_limits<int64_t>::max()) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& v = j[key];
  if (!v.is_number_integer())
    bad(source, key, fmt::format("expected an integer, got {}", shown(v)));
  // An unsigned value past int64 would wrap when read as one.
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(max))
    bad(source, key, fmt::format("expected <= {}, got {}", max, v.dump()));
  int64_t value = v.get<int64_t>();
  if (value < min) bad(source, key, fmt::format("expected >= {}, got {}", min, value));
  if (value > max) bad(source, key, fmt::format("expected <= {}, got {}", max, value));
  return value;
}

int64_t require_int(const json& j, const std::string& source, const char* key, int64_t max) {
  if (!j.contains(key) || j[key].is_null()) bad(source, key, "is required");
  return get_int(j, source, key, 0, 1, max);
}

// num_parameters() with every bias counted, in floating point: a bound that cannot overflow.
double parameter_bound(const LlamaConfig& c) {
  const double h = static_cast<double>(c.hidden_size), i = static_cast<double>(c.intermediate_size);
  const double q = static_cast<double>(c.num_attention_heads) * static_cast<double>(c.head_dim);
  const double kv = static_cast<double>(c.num_key_value_heads) * static_cast<double>(c.head_dim);
  const double layer = 2 * h * q + 2 * h * kv + 3 * h * i + 2 * h + q + 2 * kv + 2 * i + 2 * h;
  return static_cast<double>(c.num_hidden_layers) * layer +
         2 * static_cast<double>(c.vocab_size) * h + h;
}

double get_number(const json& j, const std::string& source, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number())
    bad(source, key, fmt::format("expected a number, got {}", shown(j[key])));
  double value = j[key].get<double>();
  if (!std::isfinite(value) || value <= 0)
    bad(source, key, fmt::format("expected > 0, got {}", value));
  return value;
}

bool get_bool(const json& j, const std::string& source, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean())
    bad(source, key, fmt::format("expected true or false, got {}", shown(j[key])));
  return j[key].get<bool>();
}

RopeScaling parse_rope_scaling(const json& r, const std::string& source, const std::string& key) {
  RopeScaling scaling;
  if (!r.is_object()) bad(source, key, "expected an object");
  const char* type_key = r.contains("rope_type") ? "rope_type"
                         : r.contains("type")    ? "type"
                                                 : nullptr;
  if (type_key && !r[type_key].is_string())
    bad(source, key + "." + type_key, fmt::format("expected a string, got {}", shown(r[type_key])));
  std::string type = type_key ? r[type_key].get<std::string>() : "default";
  scaling.type = type;
  if (type == "default") return scaling;
  const std::string factor_key = key + ".factor";
  scaling.factor = get_number(r, source, "factor", 0);
  if (scaling.factor <= 0) bad(source, factor_key, "is required for rope type " + type);
  if (type == "linear") return scaling;
  if (type == "llama3") {
    // Required, as Hugging Face requires them: a guessed value would change every rotation.
    for (const char* needed :
         {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!r.contains(needed) || r[needed].is_null())
        bad(source, key + "." + needed, "is required for rope type llama3");
    scaling.low_freq_factor = get_number(r, source, "low_freq_factor", 1.0);
    scaling.high_freq_factor = get_number(r, source, "high_freq_factor", 4.0);
    scaling.original_max_position_embeddings =
        get_int(r, source, "original_max_position_embeddings", 8192, 1, kMaxPositions);
    if (scaling.high_freq_factor <= scaling.low_freq_factor)
      bad(source, key, "high_freq_factor must exceed low_freq_factor");
    return scaling;
  }
  bad(source, key + ".rope_type",
      fmt::format("rope type '{}' is not supported (supported: default, linear, llama3)", type));
}

}  // namespace

LlamaConfig parse_llama_config_json(const json& j, const std::string& source);

LlamaConfig parse_llama_config(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw UserError(fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
  PTRAIN_CHECK(j.is_object(), "{}: expected a JSON object", source);
  try {
    return parse_llama_config_json(j, source);
  } catch (const json::exception& e) {  // a value of the wrong JSON type somewhere
    throw UserError(fmt::format("{}: unexpected value: {}", source, e.what()));
  }
}

LlamaConfig parse_llama_config_json(const json& j, const std::string& source) {
  LlamaConfig c;
  c.model_type = j.value("model_type", std::string(""));
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2")
    bad(source, "model_type",
        fmt::format("'{}' is not a supported architecture (supported: llama, mistral, qwen2)",
                    c.model_type));
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu")
    bad(source, "hidden_act", fmt::format("'{}' is not supported (only silu)", act));
  if (j.contains("partial_rotary_factor") && j["partial_rotary_factor"] != 1.0)
    bad(source, "partial_rotary_factor", "partial rotary embeddings are not supported");
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    // bitsandbytes 4-bit NF4 (what BitsAndBytesConfig(load_in_4bit=True) saves) is read as is;
    // any other pre-quantization would be misread, so it is an error.
    const json& q = j["quantization_config"];
    const std::string method = q.value("quant_method", std::string(""));
    if (method != "bitsandbytes")
      bad(source, "quantization_config.quant_method",
          fmt::format("'{}' is not supported (only bitsandbytes 4-bit NF4)", method));
    if (q.value("load_in_8bit", false) || !q.value("load_in_4bit", false))
      bad(source, "quantization_config.load_in_4bit",
          "only 4-bit bitsandbytes models are supported (not 8-bit)");
    const std::string type = q.value("bnb_4bit_quant_type", std::string("fp4"));
    if (type != "nf4")
      bad(source, "quantization_config.bnb_4bit_quant_type",
          fmt::format("'{}' is not supported (only nf4)", type));
    c.bnb_nf4 = true;
    c.bnb_double_quant = q.value("bnb_4bit_use_double_quant", false);
  }

  c.vocab_size = require_int(j, source, "vocab_size", kMaxVocab);
  c.hidden_size = require_int(j, source, "hidden_size", kMaxWidth);
  c.intermediate_size = require_int(j, source, "intermediate_size", kMaxWidth);
  c.num_hidden_layers = require_int(j, source, "num_hidden_layers", kMaxCount);
  c.num_attention_heads = require_int(j, source, "num_attention_heads", kMaxCount);
  c.num_key_value_heads =
      get_int(j, source, "num_key_value_heads", c.num_attention_heads, 1, kMaxCount);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    bad(source, "num_key_value_heads",
        fmt::format("{} does not divide num_attention_heads {}", c.num_key_value_heads,
                    c.num_attention_heads));
  if (!j.contains("head_dim") && c.hidden_size % c.num_attention_heads != 0)
    bad(source, "hidden_size",
        "is not a multiple of num_attention_heads and head_dim is not given");
  c.head_dim = get_int(j, source, "head_dim", c.hidden_size / c.num_attention_heads, 1, kMaxCount);
  if (c.head_dim % 2 != 0) bad(source, "head_dim", "must be even for rotary embeddings");
  c.max_position_embeddings = get_int(j, source, "max_position_embeddings", 4096, 1, kMaxPositions);
  c.rms_norm_eps = get_number(j, source, "rms_norm_eps", 1e-6);
  c.tie_word_embeddings = get_bool(j, source, "tie_word_embeddings", false);
  const bool attention_bias = get_bool(j, source, "attention_bias", false);
  c.qkv_bias = c.model_type == "qwen2" ? true : attention_bias;
  c.o_bias = c.model_type == "qwen2" ? false : attention_bias;
  c.mlp_bias = get_bool(j, source, "mlp_bias", false);
  if (c.model_type == "qwen2" && get_bool(j, source, "use_sliding_window", false))
    bad(source, "use_sliding_window", "Qwen2 sliding-window layers are not supported");
  // Mistral's config class defaults the window to 4096 when the key is absent; null means none.
  if (c.model_type == "mistral")
    c.sliding_window =
        j.contains("sliding_window") ? get_int(j, source, "sliding_window", 0, 0) : 4096;

  c.rope_theta = get_number(j, source, "rope_theta", 10000.0);
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const json& p = j["rope_parameters"];
    c.rope_scaling = parse_rope_scaling(p, source, "rope_parameters");
    c.rope_theta = get_number(p, source, "rope_theta", c.rope_theta);
  } else if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    c.rope_scaling = parse_rope_scaling(j["rope_scaling"], source, "rope_scaling");
  }

  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_token_id = j["bos_token_id"].get<int64_t>();
  if (j.contains("eos_token_id")) {
    const json& eos = j["eos_token_id"];
    if (eos.is_number_integer()) c.eos_token_ids.push_back(eos.get<int64_t>());
    if (eos.is_array())
      for (const auto& e : eos) {
        if (!e.is_number_integer()) bad(source, "eos_token_id", "list entries must be integers");
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
  }
  // A special token the embedding has no row for would fail (or silently clamp) at the first use.
  if (c.bos_token_id && (*c.bos_token_id < 0 || *c.bos_token_id >= c.vocab_size))
    bad(source, "bos_token_id",
        fmt::format("{} is outside the vocabulary [0, {}) ('vocab_size')", *c.bos_token_id,
                    c.vocab_size));
  for (int64_t eos : c.eos_token_ids)
    if (eos < 0 || eos >= c.vocab_size)
      bad(source, "eos_token_id",
          fmt::format("{} is outside the vocabulary [0, {}) ('vocab_size')", eos, c.vocab_size));
  c.torch_dtype = j.value("torch_dtype", std::string("bfloat16"));
  const double parameters = parameter_bound(c);
  if (parameters > kMaxParameters)
    throw UserError(fmt::format(
        "{}: keys 'vocab_size' {}, 'hidden_size' {}, 'intermediate_size' {}, 'num_hidden_layers' "
        "{}, 'num_attention_heads' {}, 'num_key_value_heads' {}, 'head_dim' {} describe {:.3g} "
        "parameters; no checkpoint ptrain loads holds more than 2^40",
        source, c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers,
        c.num_attention_heads, c.num_key_value_heads, c.head_dim, parameters));
  return c;
}

std::string llama_config_json(const LlamaConfig& c) {
  static const std::map<std::string, std::string> kArchitecture = {
      {"llama", "LlamaForCausalLM"},
      {"mistral", "MistralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"}};
  nlohmann::ordered_json j;
  j["architectures"] = {kArchitecture.at(c.model_type)};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    nlohmann::ordered_json r = {{"rope_type", c.rope_scaling.type},
                                {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.type == "llama3") {
      r["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      r["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      r["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = r;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.model_type == "llama") j["attention_bias"] = c.qkv_bias;
  j["mlp_bias"] = c.mlp_bias;
  if (c.model_type == "mistral")
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::ordered_json(c.sliding_window)
                                               : nlohmann::ordered_json(nullptr);
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  j["torch_dtype"] = c.torch_dtype;
  j["transformers_version"] = "4.44.0";
  return j.dump(2) + "\n";
}

int64_t LlamaConfig::num_parameters() const {
  const int64_t q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  int64_t attention = hidden_size * q + 2 * hidden_size * kv + q * hidden_size;
  if (qkv_bias) attention += q + 2 * kv;
  if (o_bias) attention += hidden_size;
  int64_t mlp = 3 * hidden_size * intermediate_size;
  if (mlp_bias) mlp += 2 * intermediate_size + hidden_size;
  const int64_t layer = attention + mlp + 2 * hidden_size;
  const int64_t embeddings = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2);
  return num_hidden_layers * layer + embeddings + hidden_size;
}

double LlamaConfig::forward_flops_per_token(int64_t seq) const {
  const double q = static_cast<double>(num_attention_heads * head_dim);
  const double kv = static_cast<double>(num_key_value_heads * head_dim);
  const double h = static_cast<double>(hidden_size);
  const double projections = h * q + 2 * h * kv + q * h + 3 * h * intermediate_size;
  const double attention = 2.0 * q * (static_cast<double>(seq) / 2.0);  // QK^T and PV, causal
  return 2.0 * (num_hidden_layers * (projections + attention) + h * vocab_size);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> llama_tensor_shapes(
    const LlamaConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, i = c.intermediate_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    auto linear = [&](const std::string& name, int64_t in, int64_t outf, bool bias) {
      out.push_back({p + name + ".weight", {outf, in}});
      if (bias) out.push_back({p + name + ".bias", {outf}});
    };
    linear("self_attn.q_proj", h, q, c.qkv_bias);
    linear("self_attn.k_proj", h, kv, c.qkv_bias);
    linear("self_attn.v_proj", h, kv, c.qkv_bias);
    linear("self_attn.o_proj", q, h, c.o_bias);
    linear("mlp.gate_proj", h, i, c.mlp_bias);
    linear("mlp.up_proj", h, i, c.mlp_bias);
    linear("mlp.down_proj", i, h, c.mlp_bias);
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
  }
  out.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
}

bool llama_ignored_tensor(const std::string& name, bool tied_embeddings) {
  const std::string suffix = ".rotary_emb.inv_freq";
  if (name.size() > suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return true;
  return tied_embeddings && name == "lm_head.weight";
}

bool llama_projection_weight(const std::string& name) {
  const std::string suffix = "_proj.weight";
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         (name.find(".self_attn.") != std::string::npos || name.find(".mlp.") != std::string::npos);
}

LlamaConfig llama_preset(const std::string& name) {
  LlamaConfig c;
  c.model_type = "llama";
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.rms_norm_eps = 1e-5;
  if (name == "tiny") {
    c.vocab_size = 259;  // the byte tokenizer's vocabulary (tokenizer/tokenizer.h)
    c.hidden_size = 64;
    c.intermediate_size = 176;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.max_position_embeddings = 2048;
  } else if (name == "160m") {
    c.vocab_size = 32000;
    c.hidden_size = 768;
    c.intermediate_size = 2048;
    c.num_hidden_layers = 16;
    c.num_attention_heads = 12;
    c.num_key_value_heads = 12;
    c.head_dim = 64;
    c.max_position_embeddings = 2048;
  } else if (name == "1b") {  // TinyLlama-1.1B
    c.vocab_size = 32000;
    c.hidden_size = 2048;
    c.intermediate_size = 5632;
    c.num_hidden_layers = 22;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 4;
    c.head_dim = 64;
    c.max_position_embeddings = 2048;
  } else {
    throw UserError(fmt::format("unknown model preset '{}' (presets: tiny, 160m, 1b)", name));
  }
  return c;
}

std::vector<std::string> llama_preset_names() {
  return {"tiny", "160m", "1b"};
}

}  // namespace ptrain
