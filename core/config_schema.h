// The schema of JobConfig: one entry per YAML key, binding it to a JobConfig member with a type,
// an allowed range or set of values, and a one-line doc. It is the single source for parsing,
// validation, the resolved config, --set overrides and the generated docs/config.md.
#pragma once

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/config.h"

namespace ptrain {

enum class KeyType { kBool, kInt, kFloat, kString, kEnum, kStringList, kDatasetList };

// One key of a record (JobConfig, or DatasetConfig for the items of `datasets`). `member` returns
// the address of the bound member; its C++ type follows `type` (bool, int64_t, double, std::string,
// std::vector<std::string>, std::vector<DatasetConfig>).
template <class Record>
struct FieldSpec {
  std::string name;  // dotted for nested sections: "comm.collective_timeout"
  KeyType type;
  std::string doc;
  std::function<void*(Record&)> member;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;  // kEnum (and kStringList items when non-empty)
  bool required = false;
  // kString only: a credential. Set, it appears in the resolved config (and so in its hash, in
  // `validate-config --print` and in what checkpoints record) as kRedacted, never as itself.
  bool secret = false;
};

// What the resolved config shows in place of a secret key's value.
inline constexpr char kRedacted[] = "<redacted>";

using ConfigKey = FieldSpec<JobConfig>;
using DatasetKey = FieldSpec<DatasetConfig>;

// An Axolotl key that ptrain accepts and ignores, with the reason shown in the warning.
struct IgnoredKey {
  std::string name;
  std::string reason;
};

class ConfigSchema {
 public:
  static const ConfigSchema& instance();

  const std::vector<ConfigKey>& keys() const { return keys_; }
  const std::vector<DatasetKey>& dataset_keys() const { return dataset_keys_; }
  const std::vector<IgnoredKey>& ignored_keys() const { return ignored_; }
  // Top-level names that hold nested keys ("comm", "logging").
  const std::vector<std::string>& sections() const { return sections_; }

  const ConfigKey* find(const std::string& dotted_name) const;
  const DatasetKey* find_dataset_key(const std::string& name) const;
  const IgnoredKey* find_ignored(const std::string& name) const;

  // Markdown reference of every key (docs/config.md is this text).
  std::string markdown() const;

 private:
  ConfigSchema();
  std::vector<ConfigKey> keys_;
  std::vector<DatasetKey> dataset_keys_;
  std::vector<IgnoredKey> ignored_;
  std::vector<std::string> sections_;
};

// A range bound as people write it: integers in full ("1048576"), other values shortest ("0.999").
std::string format_bound(double value);

// The candidate closest to `name` by edit distance (comparing with both the whole dotted name and
// its last component), or "" when nothing is close enough to be a plausible typo.
std::string nearest_name(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace ptrain
