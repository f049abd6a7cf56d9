#include "launcher/checkpoint_tools.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <vector>

#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_model.h"
#include "core/error.h"
#include "core/file_util.h"
#include "launcher/model_tools.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"
#include "parallel/flat_parameter.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

std::string mebibytes(uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / 1048576.0);
}

// The manifest's `key`, or CorruptData naming the checkpoint.
const nlohmann::json& field(const CheckpointManifest& m, const char* key) {
  if (!m.json.contains(key))
    throw CorruptData(
        fmt::format("checkpoint '{}' is not valid: {} has no '{}'", m.dir, kManifestFile, key));
  return m.json.at(key);
}

// A manifest field's text for a summary: "?" when absent or of another type.
template <typename T>
std::string shown(const nlohmann::json& json, const nlohmann::json::json_pointer& at) {
  if (!json.contains(at)) return "?";
  const nlohmann::json& value = json.at(at);
  try {
    return fmt::format("{}", value.get<T>());
  } catch (const nlohmann::json::exception&) {
    return value.dump();
  }
}

struct SavedFlat {
  FlatLayout layout;
  bool trainable = false;
  std::string saved;  // the tensor this flat's values are in: "master", "shard", or "" (not saved)
};

std::vector<SavedFlat> saved_flats(const CheckpointManifest& m) {
  std::vector<SavedFlat> flats;
  try {
    for (const nlohmann::json& f : field(m, "flat_parameters")) {
      SavedFlat flat{FlatLayout::from_json(f), f.value("trainable", false), ""};
      const std::vector<std::string> saved = f.at("saved").get<std::vector<std::string>>();
      const char* value = flat.trainable ? "master" : "shard";
      if (std::find(saved.begin(), saved.end(), value) != saved.end()) flat.saved = value;
      flats.push_back(std::move(flat));
    }
  } catch (const nlohmann::json::exception& e) {
    throw CorruptData(fmt::format("checkpoint '{}' is not valid: {} 'flat_parameters': {}", m.dir,
                                  kManifestFile, e.what()));
  } catch (const UserError& e) {
    throw CorruptData(fmt::format("checkpoint '{}' is not valid: {} 'flat_parameters': {}", m.dir,
                                  kManifestFile, e.what()));
  }
  return flats;
}

std::vector<std::string> shard_files(const CheckpointManifest& m) {
  try {
    return field(m, "shard_files").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw CorruptData(fmt::format("checkpoint '{}' is not valid: {} 'shard_files': {}", m.dir,
                                  kManifestFile, e.what()));
  }
}

// The text a YAML scalar's value reads as ("true", a path), without the quotes YAML may add.
std::string unquoted(std::string text) {
  if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') &&
      text.back() == text.front())
    text = text.substr(1, text.size() - 2);
  return text;
}

// Where a tensor's values are: entry `entry` of `flat` (a saved one), read from its shards.
struct FlatSource {
  const SavedFlat* flat = nullptr;
  size_t entry = 0;
};

// Copies entry `source.entry` of its flat, shard by shard (padding dropped), into `out` as
// `dtype`. The rank files are mapped once (`files`); nothing of the flat's size is allocated.
void read_entry(const CheckpointManifest& m, const FlatSource& source,
                const std::vector<std::string>& files_by_shard,
                std::map<std::string, std::unique_ptr<SafetensorsFile>>& files,
                c10::ScalarType dtype, void* out) {
  const FlatLayout& layout = source.flat->layout;
  const FlatEntry& entry = layout.entries()[source.entry];
  const std::string tensor = layout.name() + "/" + source.flat->saved;
  // A master is fp32 whatever the flat's (compute) dtype; a saved frozen shard is in its dtype.
  const c10::ScalarType saved_dtype =
      source.flat->saved == "master" ? c10::ScalarType::Float : layout.dtype();
  const at::Tensor target =
      torch::from_blob(out, {entry.numel}, torch::TensorOptions().dtype(dtype));
  for (int s = 0; s < layout.shards(); ++s) {
    const auto [shard_begin, shard_end] = layout.shard_range(s);
    const int64_t begin = std::max(shard_begin, entry.offset);
    const int64_t end = std::min(shard_end, entry.offset + entry.numel);
    if (begin >= end) continue;
    if (static_cast<size_t>(s) >= files_by_shard.size())
      throw CorruptData(
          fmt::format("checkpoint '{}' is not valid: shard {} of '{}' has no file in "
                      "'shard_files'",
                      m.dir, s, layout.name()));
    auto& file = files[files_by_shard[static_cast<size_t>(s)]];
    if (!file)
      file = std::make_unique<SafetensorsFile>(
          (fs::path(m.dir) / files_by_shard[static_cast<size_t>(s)]).string());
    const TensorInfo* info = file->find(tensor);
    if (info == nullptr || info->dtype != safetensors_dtype(saved_dtype) ||
        info->numel() != layout.shard_numel())
      throw CorruptData(fmt::format(
          "checkpoint '{}' is not valid: {} holds no {} '{}' of {} "
          "elements (shard {} of the manifest's layout)",
          m.dir, file->path(), c10::toString(saved_dtype), tensor, layout.shard_numel(), s));
    const int64_t element = static_cast<int64_t>(c10::elementSize(saved_dtype));
    const at::Tensor piece =
        torch::from_blob(const_cast<uint8_t*>(file->bytes(*info)) + (begin - shard_begin) * element,
                         {end - begin}, torch::TensorOptions().dtype(saved_dtype));
    target.narrow(0, begin - entry.offset, end - begin).copy_(piece);
  }
}

}  // namespace

bool is_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / kManifestFile, ec);
}

// What a leftover under a checkpoints root is ("" for anything else): the suffix after step-S.
std::string leftover_suffix(const fs::path& path) {
  static const std::regex pattern(R"(step-[0-9]+(\.tmp|\.removing|\.rejected)(-[0-9]+)?)");
  std::smatch m;
  const std::string name = path.filename().string();
  return std::regex_match(name, m, pattern) ? m[1].str() : "";
}

bool is_checkpoint_root(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "config.json", ec)) return false;
  if (!committed_checkpoints(dir).empty()) return true;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec))
    if (!leftover_suffix(entry.path()).empty()) return true;
  return false;
}

std::string checkpoint_mode(const CheckpointManifest& m) {
  const nlohmann::json& mode = field(m, "mode");
  if (mode == "full" || mode == "lora" || mode == "qlora") return mode.get<std::string>();
  throw CorruptData(
      fmt::format("checkpoint '{}' is not valid: {} 'mode' is {}, not full, lora or "
                  "qlora",
                  m.dir, kManifestFile, mode.dump()));
}

std::optional<std::string> checkpoint_config_value(const CheckpointManifest& m,
                                                   const std::string& key) {
  const nlohmann::json& config = m.json.value("config", nlohmann::json::object());
  if (!config.is_object() || !config.contains(key) || !config[key].is_string()) return std::nullopt;
  return unquoted(config[key].get<std::string>());
}

std::string describe_checkpoint(const CheckpointManifest& m, std::vector<std::string>& problems) {
  const nlohmann::json& j = m.json;
  using P = nlohmann::json::json_pointer;
  std::string text = fmt::format("checkpoint {}\n", m.dir);
  text += fmt::format("  step: {} (completed optimizer steps), mode: {}\n", m.step,
                      shown<std::string>(j, P("/mode")));
  text += fmt::format("  saved by: {} rank(s), shard size {}, {} replica(s)\n",
                      shown<int64_t>(j, P("/world")), shown<int64_t>(j, P("/shard_size")),
                      shown<int64_t>(j, P("/replicas")));
  text += fmt::format("  base model: {} (fingerprint {}), tokenizer fingerprint {}\n",
                      shown<std::string>(j, P("/model/base_model")),
                      shown<std::string>(j, P("/model/fingerprint")),
                      shown<std::string>(j, P("/tokenizer/fingerprint")));
  text += fmt::format("  config hash: {}\n", shown<std::string>(j, P("/config_hash")));
  text += fmt::format(
      "  sampler: epoch {}, position {} of {} rows\n", shown<int64_t>(j, P("/sampler/epoch")),
      shown<int64_t>(j, P("/sampler/position")), shown<int64_t>(j, P("/sampler/rows")));
  if (j.contains("schedule"))
    text += fmt::format(
        "  schedule: {}, learning rate {}, {} steps ({} warmup); optimizer at step {}\n",
        shown<std::string>(j, P("/schedule/lr_scheduler")),
        shown<double>(j, P("/schedule/learning_rate")),
        shown<int64_t>(j, P("/schedule/total_steps")),
        shown<int64_t>(j, P("/schedule/warmup_steps")), shown<int64_t>(j, P("/optimizer/steps")));
  const std::vector<SavedFlat> flats = saved_flats(m);
  int64_t trainable = 0, trainable_elements = 0, frozen_saved = 0;
  for (const SavedFlat& flat : flats) {
    if (flat.trainable) {
      ++trainable;
      trainable_elements += flat.layout.numel();
    } else if (!flat.saved.empty()) {
      ++frozen_saved;
    }
  }
  const int64_t frozen = static_cast<int64_t>(flats.size()) - trainable;
  text +=
      fmt::format("  flat parameters: {} ({} trainable, {} frozen{}); trainable parameters: {}\n",
                  flats.size(), trainable, frozen,
                  frozen == 0              ? ""
                  : frozen_saved == 0      ? ", not saved: the base model's"
                  : frozen_saved == frozen ? ", saved"
                                           : fmt::format(", {} saved", frozen_saved),
                  trainable_elements);
  text += "  files:\n";
  uint64_t total = 0;
  for (size_t i = 0; i < m.files.size(); ++i) {
    const std::string problem = verify_file(m, i);
    if (!problem.empty()) problems.push_back(problem);
    text += fmt::format("    {}  {} bytes  {}\n", m.files[i].name, m.files[i].bytes,
                        problem.empty() ? "OK" : "BAD: " + problem);
    total += m.files[i].bytes;
  }
  text +=
      fmt::format("  total: {} file(s), {} bytes ({})\n", m.files.size(), total, mebibytes(total));
  text += problems.empty()
              ? "  status: OK (every file has the size and XXH3-64 checksum manifest.json lists)\n"
              : fmt::format("  status: DAMAGED ({} bad file(s))\n", problems.size());
  return text;
}

std::string describe_checkpoint_root(const std::string& root) {
  std::vector<CommittedCheckpoint> all = committed_checkpoints(root);
  std::reverse(all.begin(), all.end());
  std::string text = fmt::format(
      "checkpoints under {}: {} committed (not verified; `ptrain inspect "
      "DIR` verifies one)\n",
      root, all.size());
  for (const CommittedCheckpoint& c : all) text += fmt::format("  step {}  {}\n", c.step, c.dir);
  // What is not a checkpoint, and why it is there.
  const std::map<std::string, std::string> others = {
      {".tmp", "a save that did not finish: never loaded, removed at the next start"},
      {".removing", "removed by checkpoint.keep_last; a crash stopped the removal"},
      {".rejected", "failed its checks at a resume from 'latest'; never loaded"}};
  std::vector<std::string> lines;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
    auto it = others.find(leftover_suffix(entry.path()));
    if (it != others.end())
      lines.push_back(fmt::format("  {}  ({})\n", entry.path().string(), it->second));
  }
  std::sort(lines.begin(), lines.end());
  for (const std::string& line : lines) text += line;
  return text;
}

CheckpointManifest open_verified_checkpoint(const std::string& dir) {
  PTRAIN_CHECK(fs::is_directory(dir), "--checkpoint: '{}' is not a directory", dir);
  if (!is_checkpoint_dir(dir) && is_checkpoint_root(dir))
    throw UserError(
        fmt::format("--checkpoint: '{}' holds checkpoints; name one of them (the newest "
                    "is {})",
                    dir, committed_checkpoints(dir).front().dir));
  CheckpointManifest manifest = read_manifest(dir);
  verify_checkpoint(manifest);
  return manifest;
}

std::string checkpoint_base_model(const CheckpointManifest& m, const std::string& model) {
  const std::string saved = m.json.value("/model/base_model"_json_pointer, "");
  const std::string dir = model.empty() ? saved : model;
  PTRAIN_CHECK(!dir.empty(),
               "checkpoint '{}' names no base model; give the one it trained with --model DIR",
               m.dir);
  PTRAIN_CHECK(fs::is_directory(dir),
               "the base model of checkpoint '{}' ({}) is not a directory here; give it with "
               "--model DIR",
               m.dir, dir);
  const std::string expected = m.json.value("/model/fingerprint"_json_pointer, "");
  const std::string actual = model_fingerprint(dir);
  PTRAIN_CHECK(
      expected.empty() || actual == expected,
      "'{}' (fingerprint {}) is not the base model checkpoint '{}' trained ({}, fingerprint "
      "{}); give that model with --model DIR",
      dir, actual, m.dir, saved, expected);
  return dir;
}

void export_checkpoint_adapter(const CheckpointManifest& m, const std::string& out_dir) {
  const std::string mode = checkpoint_mode(m);
  PTRAIN_CHECK(mode != "full",
               "checkpoint '{}' is of full training: it holds no adapter to export as PEFT; "
               "use --format merged for the model",
               m.dir);
  const std::string prefix = "adapter/";
  size_t copied = 0;
  for (const CheckpointFile& file : m.files) {
    if (file.name.compare(0, prefix.size(), prefix) != 0) continue;
    const fs::path target = fs::path(out_dir) / file.name.substr(prefix.size());
    fs::create_directories(target.parent_path());
    write_file_atomic(target.string(), read_text_file((fs::path(m.dir) / file.name).string()));
    ++copied;
  }
  if (copied == 0)
    throw CorruptData(
        fmt::format("checkpoint '{}' is not valid: a {} checkpoint whose {} lists no "
                    "adapter/ files",
                    m.dir, mode, kManifestFile));
}

void export_full_checkpoint(const CheckpointManifest& m, const std::string& base_model,
                            const std::string& out_dir, c10::ScalarType dtype,
                            uint64_t max_shard_bytes) {
  const std::string mode = checkpoint_mode(m);
  PTRAIN_ASSERT(mode == "full", "export_full_checkpoint of a {} checkpoint", mode);
  const std::vector<SavedFlat> flats = saved_flats(m);
  const std::vector<std::string> files_by_shard = shard_files(m);
  std::map<std::string, FlatSource> sources;
  for (const SavedFlat& flat : flats) {
    if (flat.saved.empty()) continue;
    for (size_t e = 0; e < flat.layout.entries().size(); ++e)
      sources[flat.layout.entries()[e].name] = FlatSource{&flat, e};
  }

  LlamaConfig config = load_llama_config(base_model);
  std::unique_ptr<SafetensorsModel> base;  // opened only for a tensor the checkpoint lacks
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files;
  std::vector<TensorBytes> tensors;
  const uint64_t element = c10::elementSize(dtype);
  for (const auto& [name, shape] : llama_tensor_shapes(config)) {
    TensorBytes bytes;
    bytes.name = name;
    bytes.dtype = safetensors_dtype(dtype);
    bytes.shape = shape;
    bytes.nbytes = element * static_cast<uint64_t>(c10::multiply_integers(shape));
    auto it = sources.find(name);
    if (it != sources.end()) {
      const FlatSource source = it->second;
      const FlatEntry& entry = source.flat->layout.entries()[source.entry];
      if (entry.shape != shape)
        throw CorruptData(fmt::format(
            "checkpoint '{}': tensor '{}' of '{}' has shape [{}]; the base model's config.json "
            "({}) needs [{}]",
            m.dir, name, source.flat->layout.name(), fmt::join(entry.shape, ", "), base_model,
            fmt::join(shape, ", ")));
      PTRAIN_CHECK(c10::isFloatingType(source.flat->layout.dtype()),
                   "checkpoint '{}': tensor '{}' is saved as {}, not a floating-point dtype", m.dir,
                   name, c10::toString(source.flat->layout.dtype()));
      bytes.produce = [&, source](void* out) {
        read_entry(m, source, files_by_shard, files, dtype, out);
      };
    } else {
      bytes.produce = [&, name = name, n = bytes.nbytes](void* out) {
        if (!base) base = std::make_unique<SafetensorsModel>(base_model);
        const SafetensorsModel::Located& located = base->at(name);
        const at::Tensor t =
            tensor_from_safetensors(*located.file, *located.info).to(dtype).contiguous();
        PTRAIN_ASSERT(t.nbytes() == n, "tensor '{}': {} bytes, expected {}", name, t.nbytes(), n);
        std::memcpy(out, t.data_ptr(), n);
      };
    }
    tensors.push_back(std::move(bytes));
  }
  // Every trained tensor must land in the model: a checkpoint of another architecture would
  // otherwise export the base's values silently.
  std::map<std::string, bool> used;
  for (const auto& t : tensors) used[t.name] = true;
  for (const SavedFlat& flat : flats)
    if (flat.trainable)
      for (const FlatEntry& entry : flat.layout.entries())
        if (!used.count(entry.name))
          throw CorruptData(
              fmt::format("checkpoint '{}' trains '{}', which the base model's "
                          "config.json ({}) has no place for",
                          m.dir, entry.name, base_model));

  write_safetensors_model(out_dir, tensors, max_shard_bytes, {{"format", "pt"}});
  config.torch_dtype = dtype == at::kBFloat16 ? "bfloat16"
                       : dtype == at::kHalf   ? "float16"
                                              : "float32";
  write_file_atomic((fs::path(out_dir) / "config.json").string(), llama_config_json(config));
  copy_model_companions(base_model, out_dir);
}

}  // namespace ptrain
