#include "core/config.h"
#include "core/host_port.h"

#include <xxhash.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "core/config_schema.h"
#include "core/error.h"
#include "core/file_util.h"

namespace ptrain {
namespace {

// Collects every problem in a config so the user fixes them all in one round.
struct Problems {
  std::vector<std::string> lines;
  void add(const std::string& where, const std::string& message) {
    lines.push_back(where + ": " + message);
  }
};

std::string location(const std::string& source, const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.line < 0) return source;
  return fmt::format("{}:{}:{}", source, mark.line + 1, mark.column + 1);
}

// The YAML being read: its name in messages and its text.
struct YamlSource {
  const std::string& name;
  const std::string& text;
};

// Whether a null `node` was written as a null (`~`, `null`) rather than left empty (`key:` with
// nothing after it). yaml-cpp reads both as null; an empty value's mark is the next token's.
bool written_as_null(const YamlSource& source, const YAML::Node& node) {
  const int pos = node.Mark().pos;
  if (pos < 0 || static_cast<size_t>(pos) >= source.text.size()) return false;
  for (const char* word : {"~", "null", "Null", "NULL"}) {
    const size_t n = std::strlen(word);
    if (source.text.compare(pos, n, word) != 0) continue;
    const size_t end = pos + n;
    if (end == source.text.size() ||
        (source.text[end] != '\0' && std::strchr(" \t\r\n,]}#", source.text[end]) != nullptr))
      return true;
  }
  return false;
}

std::string no_value(const std::string& label) {
  return fmt::format("{} has no value; remove the key for the default or give a value", label);
}

std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates) {
  std::string nearest = nearest_name(name, candidates);
  return nearest.empty() ? "" : fmt::format("; did you mean '{}'?", nearest);
}

std::string quoted_choices(const std::vector<std::string>& choices) {
  std::string out;
  for (const auto& c : choices) out += (out.empty() ? "" : ", ") + fmt::format("'{}'", c);
  return out;
}

std::string scalar_text(const YAML::Node& node) {
  return node.IsScalar() ? node.Scalar() : "";
}

bool parse_int(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  size_t used = 0;
  try {
    *out = std::stoll(text, &used, 10);
  } catch (const std::exception&) {
    return false;
  }
  return used == text.size();
}

bool parse_double(const std::string& text, double* out) {
  if (text.empty()) return false;
  size_t used = 0;
  try {
    *out = std::stod(text, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used == text.size() && std::isfinite(*out);
}

template <class Record>
std::string expectation(const FieldSpec<Record>& spec) {
  std::string range;
  bool has_min = spec.min > -std::numeric_limits<double>::infinity();
  bool has_max = spec.max < std::numeric_limits<double>::infinity();
  if (has_min && has_max)
    range = fmt::format(" in [{}, {}]", format_bound(spec.min), format_bound(spec.max));
  switch (spec.type) {
    case KeyType::kBool:
      return "a boolean (true or false)";
    case KeyType::kInt:
      return "an integer" + range;
    case KeyType::kFloat:
      return "a number" + range;
    case KeyType::kString:
      return "a string";
    case KeyType::kEnum:
      return "one of " + quoted_choices(spec.choices);
    case KeyType::kStringList:
      return "a list of strings";
    case KeyType::kDatasetList:
      return "a list of dataset entries ({path, type, ...})";
  }
  return "?";
}

void parse_datasets(const YAML::Node& node, std::vector<DatasetConfig>* out,
                    const YamlSource& source, Problems& problems);

// Assigns `node` to the member `spec` binds in `record`; a mismatch is a problem naming `label`.
template <class Record>
void assign(const FieldSpec<Record>& spec, Record& record, const YAML::Node& node,
            const std::string& where, const std::string& label, const YamlSource& source,
            Problems& problems) {
  void* member = spec.member(record);
  auto bad = [&](const std::string& extra = "") {
    std::string got = node.IsScalar()     ? fmt::format("'{}'", node.Scalar())
                      : node.IsSequence() ? "a list"
                      : node.IsMap()      ? "a mapping"
                                          : "nothing";
    problems.add(
        where, fmt::format("key '{}' expects {}, got {}{}", label, expectation(spec), got, extra));
  };
  const std::string text = scalar_text(node);
  switch (spec.type) {
    case KeyType::kBool: {
      bool value = false;
      if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) return bad();
      *static_cast<bool*>(member) = value;
      return;
    }
    case KeyType::kInt: {
      int64_t value = 0;
      if (!node.IsScalar() || !parse_int(text, &value)) return bad();
      if (value < spec.min || value > spec.max) return bad(" (out of range)");
      *static_cast<int64_t*>(member) = value;
      return;
    }
    case KeyType::kFloat: {
      double value = 0;
      if (!node.IsScalar() || !parse_double(text, &value)) return bad();
      if (value < spec.min || value > spec.max) return bad(" (out of range)");
      *static_cast<double*>(member) = value;
      return;
    }
    case KeyType::kString:
      if (!node.IsScalar()) return bad();
      *static_cast<std::string*>(member) = text;
      return;
    case KeyType::kEnum:
      if (!node.IsScalar()) return bad();
      for (const auto& choice : spec.choices) {
        if (choice == text) {
          *static_cast<std::string*>(member) = text;
          return;
        }
      }
      return bad(did_you_mean(text, spec.choices));
    case KeyType::kStringList: {
      std::vector<std::string> values;
      if (node.IsScalar()) {
        values.push_back(text);  // `lora_target_modules: q_proj` means a one-element list
      } else if (node.IsSequence()) {
        for (const auto& item : node) {
          if (!item.IsScalar()) return bad(" (an item is not a string)");
          values.push_back(item.Scalar());
        }
      } else {
        return bad();
      }
      *static_cast<std::vector<std::string>*>(member) = std::move(values);
      return;
    }
    case KeyType::kDatasetList:
      if (!node.IsSequence()) return bad();
      parse_datasets(node, static_cast<std::vector<DatasetConfig>*>(member), source, problems);
      return;
  }
}

void parse_datasets(const YAML::Node& node, std::vector<DatasetConfig>* out,
                    const YamlSource& source, Problems& problems) {
  const ConfigSchema& schema = ConfigSchema::instance();
  std::vector<std::string> names;
  for (const auto& key : schema.dataset_keys()) names.push_back(key.name);
  out->clear();
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    const std::string label = fmt::format("datasets[{}]", i);
    if (!item.IsMap()) {
      problems.add(location(source.name, item),
                   label + " must be a mapping such as {path: data.jsonl, type: alpaca}");
      continue;
    }
    DatasetConfig dataset;
    std::set<std::string> seen, given;  // keys present; keys present with a value
    for (const auto& entry : item) {
      const std::string name = entry.first.Scalar();
      const DatasetKey* key = schema.find_dataset_key(name);
      if (key == nullptr) {
        problems.add(location(source.name, entry.first),
                     fmt::format("unknown key '{}.{}'{}", label, name, did_you_mean(name, names)));
        continue;
      }
      if (!seen.insert(name).second) {
        problems.add(location(source.name, entry.first),
                     fmt::format("key '{}.{}' is given twice", label, name));
        continue;
      }
      if (entry.second.IsNull()) {
        // A required key without a value is reported as missing, below.
        if (!key->required && !written_as_null(source, entry.second))
          problems.add(location(source.name, entry.first), no_value(label + "." + name));
        continue;
      }
      given.insert(name);
      assign(*key, dataset, entry.second, location(source.name, entry.second), label + "." + name,
             source, problems);
    }
    for (const auto& key : schema.dataset_keys()) {
      if (key.required && !given.count(key.name))
        problems.add(location(source.name, item),
                     fmt::format("{} is missing the required key '{}'", label, key.name));
    }
    out->push_back(dataset);
  }
}

// Walks a mapping, resolving each key to its dotted schema name. `prefix` is "" or "comm.".
void parse_mapping(const YAML::Node& map, const std::string& prefix, const YamlSource& source,
                   JobConfig& job, std::map<std::string, std::string>& seen,
                   std::vector<std::string>& warnings, Problems& problems) {
  const ConfigSchema& schema = ConfigSchema::instance();
  std::vector<std::string> candidates = schema.sections();
  for (const auto& key : schema.keys()) candidates.push_back(key.name);

  for (const auto& entry : map) {
    const std::string where = location(source.name, entry.first);
    if (!entry.first.IsScalar()) {
      problems.add(where, "a key must be a plain name");
      continue;
    }
    const std::string name = prefix + entry.first.Scalar();
    if (auto it = seen.find(name); it != seen.end()) {
      problems.add(where, fmt::format("key '{}' is given twice (first at {})", name, it->second));
      continue;
    }
    seen[name] = where;

    const bool is_section =
        prefix.empty() && std::find(schema.sections().begin(), schema.sections().end(), name) !=
                              schema.sections().end();
    // `key:` with nothing after it is a slip, not a request for the default (a default is had by
    // leaving the key out, or by `key: null`): Axolotl reads it as None, which is not ptrain's
    // default for most keys either.
    const bool empty = entry.second.IsNull() && !written_as_null(source, entry.second);
    if (empty && (is_section || schema.find(name) != nullptr)) {
      problems.add(where, no_value(name));
      continue;
    }
    if (is_section) {
      if (entry.second.IsMap()) {
        parse_mapping(entry.second, name + ".", source, job, seen, warnings, problems);
      } else if (!entry.second.IsNull()) {
        problems.add(where, fmt::format("key '{}' is a section: it expects a mapping of keys such "
                                        "as '{}.<key>: value'",
                                        name, name));
      }
      continue;
    }
    if (const ConfigKey* key = schema.find(name)) {
      if (!entry.second.IsNull())  // `key: null` keeps the default
        assign(*key, job, entry.second, location(source.name, entry.second), name, source,
               problems);
      continue;
    }
    if (const IgnoredKey* ignored = prefix.empty() ? schema.find_ignored(name) : nullptr) {
      warnings.push_back(
          fmt::format("{}: ignoring Axolotl key '{}': {}", where, name, ignored->reason));
      continue;
    }
    problems.add(where, fmt::format("unknown key '{}'{}", name, did_you_mean(name, candidates)));
  }
}

void apply_override(const std::string& flag, JobConfig& job,
                    std::map<std::string, std::string>& seen, Problems& problems) {
  const ConfigSchema& schema = ConfigSchema::instance();
  const std::string where = fmt::format("--set {}", flag);
  size_t eq = flag.find('=');
  if (eq == std::string::npos || eq == 0) {
    problems.add(where, "expected --set key=value");
    return;
  }
  const std::string name = flag.substr(0, eq);
  const std::string value_text = flag.substr(eq + 1);
  const ConfigKey* key = schema.find(name);
  if (key == nullptr) {
    std::vector<std::string> candidates;
    for (const auto& k : schema.keys()) candidates.push_back(k.name);
    problems.add(where, fmt::format("unknown key '{}'{}", name, did_you_mean(name, candidates)));
    return;
  }
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    problems.add(where, fmt::format("value of '{}' is not valid YAML: {}", name, e.msg));
    return;
  }
  if (value.IsNull()) value = YAML::Node(value_text);  // "--set output_dir=" is an empty string
  assign(*key, job, value, where, name, YamlSource{where, value_text}, problems);
  seen[name] = where;
}

// ---------------------------------------------------------------- relations between keys

// Where each key was given: file:line:column or the --set flag; the file for a default.
struct KeyLocations {
  const std::map<std::string, std::string>& seen;
  const std::string& source;
  bool given(const std::string& key) const { return seen.count(key) > 0; }
  std::string operator()(const std::string& key) const {
    auto it = seen.find(key);
    return it == seen.end() ? source : it->second;
  }
};

// Why `address` is not host:port with a port number in [min_port, 65535]; "" when it is.
std::string host_port_problem(const std::string& address, int min_port) {
  const std::string expected = fmt::format(
      "expected host:port with a port number in [{}, 65535] (an IPv6 host in brackets: [::1]:{})",
      min_port, min_port);
  const std::optional<HostPort> parts = parse_host_port(address);
  return !parts || parts->port < min_port ? expected : "";
}

void check_coordinator(const CoordinatorConfig& c, const KeyLocations& where, Problems& problems) {
  auto key = [](const char* leaf) { return fmt::format("coordinator.{}", leaf); };
  // `leaf` given without `other` is a problem, reported where `leaf` is.
  auto needs = [&](bool given, const char* leaf, bool other_given, const char* other,
                   const char* why) {
    if (given && !other_given)
      problems.add(where(key(leaf)), fmt::format("'{}' needs '{}'{}", key(leaf), key(other), why));
  };
  if (!c.auth_token.empty() && !c.auth_token_file.empty())
    problems.add(
        where(key("auth_token_file")),
        "'coordinator.auth_token' and 'coordinator.auth_token_file' are exclusive: set one");
  needs(!c.tls_cert.empty(), "tls_cert", !c.tls_key.empty(), "tls_key",
        " (the certificate's private key)");
  needs(!c.tls_key.empty(), "tls_key", !c.tls_cert.empty(), "tls_cert",
        " (the certificate the key belongs to)");
  needs(!c.tls_client_ca.empty(), "tls_client_ca", !c.tls_cert.empty(), "tls_cert",
        ": client certificates are asked for only over TLS");
  needs(!c.tls_client_cert.empty(), "tls_client_cert", !c.tls_client_key.empty(), "tls_client_key",
        " (the certificate's private key)");
  needs(!c.tls_client_key.empty(), "tls_client_key", !c.tls_client_cert.empty(), "tls_client_cert",
        " (the certificate the key belongs to)");
  needs(!c.tls_client_cert.empty(), "tls_client_cert", !c.tls_ca.empty(), "tls_ca",
        ": ranks use TLS, and so present a certificate, only when they trust a CA");
  if (c.address.empty() && !c.tls_cert.empty() && c.tls_ca.empty())
    problems.add(where(key("tls_cert")),
                 "'coordinator.tls_cert' with no 'coordinator.address' makes rank 0's coordinator "
                 "serve TLS only: the ranks need 'coordinator.tls_ca' to trust it");
  const struct {
    const char* leaf;
    const std::string& value;
    bool check;
    int min_port;
  } addresses[] = {
      {"listen", c.listen, c.address.empty() || !c.listen.empty(), 0},
      {"metrics_listen", c.metrics_listen, !c.metrics_listen.empty(), 0},
      {"address", c.address, !c.address.empty(), 1},
  };
  for (const auto& a : addresses) {
    if (!a.check) continue;
    const std::string problem = host_port_problem(a.value, a.min_port);
    if (!problem.empty())
      problems.add(where(key(a.leaf)),
                   fmt::format("'{}' is '{}': {}", key(a.leaf), a.value, problem));
  }
  if (c.heartbeat_timeout <= 2 * c.heartbeat_interval) {
    const std::string timeout = key("heartbeat_timeout");
    problems.add(
        where(where.given(timeout) ? timeout : key("heartbeat_interval")),
        fmt::format("'{}' ({} s) must be more than twice 'coordinator.heartbeat_interval' ({} s): "
                    "else a rank whose heartbeat is a little late flaps between lost and back",
                    timeout, c.heartbeat_timeout, c.heartbeat_interval));
  }
}

// A secret key given its own placeholder: the value was copied from a resolved config.
void check_secrets(const JobConfig& job, const KeyLocations& where, Problems& problems) {
  JobConfig copy = job;
  for (const auto& key : ConfigSchema::instance().keys()) {
    if (key.secret && *static_cast<std::string*>(key.member(copy)) == kRedacted)
      problems.add(where(key.name),
                   fmt::format("'{}' is '{}', the placeholder a resolved config shows for a "
                               "secret: give the value itself",
                               key.name, kRedacted));
  }
}

void check_relations(const JobConfig& job, const std::map<std::string, std::string>& seen,
                     const std::string& source, Problems& problems) {
  const KeyLocations where{seen, source};
  if (job.adapter == "qlora" && !job.load_in_4bit)
    problems.add(where("adapter"),
                 "'adapter: qlora' needs 'load_in_4bit: true' (NF4 base weights)");
  // 'load_in_4bit: true' without 'adapter: qlora' is valid for eval, generate and export (a 4-bit
  // base scored or merged); only training refuses it (launcher/train_command.cpp).
  if (job.optimizer.find("8bit") != std::string::npos)
    problems.add(where("optimizer"),
                 fmt::format("'{}' keeps 8-bit optimizer states (bitsandbytes), which ptrain does "
                             "not implement: use adamw_torch or paged_adamw_32bit (the same AdamW "
                             "update with fp32 states, sharded over the ranks)",
                             job.optimizer));
  if (job.adam_beta1 >= 1 || job.adam_beta2 >= 1)
    problems.add(where(job.adam_beta1 >= 1 ? "adam_beta1" : "adam_beta2"),
                 "AdamW betas must be below 1");
  if (job.warmup_steps > 0 && job.warmup_ratio > 0)
    problems.add(where("warmup_ratio"), "'warmup_steps' and 'warmup_ratio' are exclusive: set one");
  if (job.save_steps > 0 && job.saves_per_epoch > 0)
    problems.add(where("saves_per_epoch"),
                 "'save_steps' and 'saves_per_epoch' are exclusive: set one");
  const bool targets = job.lora_target_linear || !job.lora_target_modules.empty();
  if (job.adapter.empty() && targets)
    problems.add(
        where(job.lora_target_linear ? "lora_target_linear" : "lora_target_modules"),
        "LoRA targets are set but 'adapter' is empty: set 'adapter: lora' or 'adapter: qlora'");
  if (!job.adapter.empty() && !targets)
    problems.add(where("adapter"), fmt::format("'adapter: {}' needs 'lora_target_linear: true' or "
                                               "'lora_target_modules'",
                                               job.adapter));
  if (job.val_set_size >= 1 && job.val_set_size != std::floor(job.val_set_size))
    problems.add(where("val_set_size"),
                 "'val_set_size' >= 1 is a row count and must be a whole number");
  if (job.output_dir.empty()) problems.add(where("output_dir"), "'output_dir' must not be empty");
  check_coordinator(job.coordinator, where, problems);
  check_secrets(job, where, problems);
}

// ---------------------------------------------------------------- the resolved config

YAML::Node emit_value(KeyType type, void* member);

YAML::Node emit_dataset(const DatasetConfig& dataset) {
  DatasetConfig copy = dataset;
  YAML::Node node(YAML::NodeType::Map);
  for (const auto& key : ConfigSchema::instance().dataset_keys())
    node[key.name] = emit_value(key.type, key.member(copy));
  return node;
}

YAML::Node emit_value(KeyType type, void* member) {
  switch (type) {
    case KeyType::kBool:
      return YAML::Node(*static_cast<bool*>(member));
    case KeyType::kInt:
      return YAML::Node(*static_cast<int64_t*>(member));
    case KeyType::kFloat:
      // Shortest text that reads back to the same double: stable for hashing, readable for people.
      return YAML::Node(fmt::format("{}", *static_cast<double*>(member)));
    case KeyType::kString:
    case KeyType::kEnum:
      return YAML::Node(*static_cast<std::string*>(member));
    case KeyType::kStringList: {
      YAML::Node list(YAML::NodeType::Sequence);
      for (const auto& s : *static_cast<std::vector<std::string>*>(member)) list.push_back(s);
      return list;
    }
    case KeyType::kDatasetList: {
      YAML::Node list(YAML::NodeType::Sequence);
      for (const auto& d : *static_cast<std::vector<DatasetConfig>*>(member))
        list.push_back(emit_dataset(d));
      return list;
    }
  }
  return {};
}

std::string emit_resolved(const JobConfig& job) {
  JobConfig copy = job;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string open_section;
  for (const auto& key : ConfigSchema::instance().keys()) {
    size_t dot = key.name.find('.');
    std::string section = dot == std::string::npos ? "" : key.name.substr(0, dot);
    if (section != open_section) {
      if (!open_section.empty()) out << YAML::EndMap;
      if (!section.empty()) out << YAML::Key << section << YAML::Value << YAML::BeginMap;
      open_section = section;
    }
    std::string leaf = dot == std::string::npos ? key.name : key.name.substr(dot + 1);
    YAML::Node value = emit_value(key.type, key.member(copy));
    // A credential must not reach the outputs, nor (rotated) change the hash.
    if (key.secret && !value.Scalar().empty()) value = YAML::Node(std::string(kRedacted));
    out << YAML::Key << leaf << YAML::Value << value;
  }
  if (!open_section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

ResolvedConfig load_config_text(const std::string& yaml_text, const std::string& source_name,
                                const std::vector<std::string>& overrides) {
  ResolvedConfig resolved;
  resolved.source = source_name;
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw UserError(fmt::format("{}:{}:{}: invalid YAML: {}", source_name, e.mark.line + 1,
                                e.mark.column + 1, e.msg));
  }
  const YamlSource source{source_name, yaml_text};
  const YAML::Node root = documents.empty() ? YAML::Node() : documents[0];
  Problems problems;
  // Only the first document would be read: one after it (past a `---` line) is refused.
  for (size_t i = 1; i < documents.size(); ++i) {
    if (documents[i].IsNull()) continue;  // nothing after the `---`: nothing lost
    problems.add(location(source_name, documents[i]),
                 "a second YAML document starts here (after a '---' line), and a config file is "
                 "one document: merge the two or remove the '---'");
    break;
  }
  std::map<std::string, std::string> seen;
  if (root.IsMap()) {
    parse_mapping(root, "", source, resolved.job, seen, resolved.warnings, problems);
  } else if (!root.IsNull()) {
    problems.add(source_name, "a config file must be a mapping of keys to values");
  }
  for (const auto& flag : overrides) apply_override(flag, resolved.job, seen, problems);
  if (problems.lines.empty()) check_relations(resolved.job, seen, source_name, problems);
  if (!problems.lines.empty()) {
    std::string message = fmt::format("invalid config ({} problem{}):", problems.lines.size(),
                                      problems.lines.size() == 1 ? "" : "s");
    for (const auto& line : problems.lines) message += "\n  " + line;
    throw UserError(message);
  }
  resolved.resolved_yaml = emit_resolved(resolved.job);
  resolved.hash = fmt::format(
      "{:016x}", XXH3_64bits(resolved.resolved_yaml.data(), resolved.resolved_yaml.size()));
  return resolved;
}

ResolvedConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (path.empty()) return load_config_text("{}", "<defaults>", overrides);
  // Read as a file, a directory is empty text: the default config, silently.
  std::error_code ec;
  PTRAIN_CHECK(!std::filesystem::is_directory(path, ec),
               "config '{}' is a directory; give the YAML file of the job (e.g. {}/job.yaml)", path,
               path);
  return load_config_text(read_text_file(path), path, overrides);
}

namespace {

void flatten_values(const YAML::Node& map, const std::string& prefix,
                    std::map<std::string, std::string>& out) {
  for (const auto& item : map) {
    const std::string key = prefix + item.first.as<std::string>();
    if (item.second.IsMap() && prefix.empty() && key != "datasets") {
      flatten_values(item.second, key + ".", out);
      continue;
    }
    YAML::Emitter emitter;
    emitter << YAML::Flow << item.second;
    out[key] = emitter.c_str();
  }
}

}  // namespace

std::map<std::string, std::string> config_values(const ResolvedConfig& config) {
  std::map<std::string, std::string> out;
  flatten_values(YAML::Load(config.resolved_yaml), "", out);
  return out;
}

std::string write_resolved_config(const ResolvedConfig& config, const std::string& dir) {
  std::string path = dir + "/config.resolved.yaml";
  write_file_atomic(path, fmt::format("# ptrain resolved config; hash {}; from {}\n{}", config.hash,
                                      config.source, config.resolved_yaml));
  return path;
}

}  // namespace ptrain
