#include "checkpoint/safetensors_model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/checksum.h"
#include "core/error.h"
#include "core/file_util.h"

namespace ptrain {

SafetensorsModel::SafetensorsModel(const std::string& dir, const std::string& prefix) : dir_(dir) {
  namespace fs = std::filesystem;
  const fs::path index_path = fs::path(dir) / (prefix + ".safetensors.index.json");
  const fs::path single_path = fs::path(dir) / (prefix + ".safetensors");
  // Paths that cannot be examined (too long, a symlink loop, no permission) count as absent: the
  // messages below name the directory.
  std::error_code ec;
  const bool has_index = fs::exists(index_path, ec);
  const bool has_single = fs::exists(single_path, ec);
  PTRAIN_CHECK(
      !(has_index && has_single),
      "'{}' holds both {} and {}: which weights are meant is ambiguous (Hugging Face loads "
      "the single file); remove one",
      dir, single_path.filename().string(), index_path.filename().string());
  if (!has_index) {
    PTRAIN_CHECK(has_single, "'{}' has neither {} nor {}", dir, single_path.filename().string(),
                 index_path.filename().string());
    files_.push_back(std::make_unique<SafetensorsFile>(single_path.string()));
    for (const auto& t : files_.back()->tensors())
      tensors_[t.name] = Located{files_.back().get(), &t};
    return;
  }

  nlohmann::json index;
  try {
    index = nlohmann::json::parse(read_text_file(index_path.string()));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("'{}' is not valid JSON: {}", index_path.string(), e.what()));
  }
  PTRAIN_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
               "'{}' has no \"weight_map\" object", index_path.string());
  std::map<std::string, SafetensorsFile*> by_file;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    PTRAIN_CHECK(it.value().is_string(), "'{}': weight_map entry '{}' is not a file name",
                 index_path.string(), it.key());
    const std::string file = it.value().get<std::string>();
    PTRAIN_CHECK(fs::path(file).filename().string() == file,
                 "'{}': weight_map entry '{}' names '{}', which is not a file in the directory",
                 index_path.string(), it.key(), file);
    if (!by_file.count(file)) {
      const fs::path shard = fs::path(dir) / file;
      PTRAIN_CHECK(fs::is_regular_file(shard, ec),
                   "'{}' lists shard '{}' (for '{}'), which does not exist or is not a file",
                   index_path.string(), file, it.key());
      files_.push_back(std::make_unique<SafetensorsFile>(shard.string()));
      by_file[file] = files_.back().get();
    }
    const SafetensorsFile* shard = by_file[file];
    const TensorInfo* info = shard->find(it.key());
    PTRAIN_CHECK(info != nullptr, "'{}' maps tensor '{}' to '{}', which does not contain it",
                 index_path.string(), it.key(), file);
    tensors_[it.key()] = Located{shard, info};
  }
  // A tensor stored in two shards is ambiguous whatever the index says.
  std::map<std::string, const SafetensorsFile*> owner;
  for (const auto& file : files_) {
    for (const auto& t : file->tensors()) {
      auto [it, inserted] = owner.emplace(t.name, file.get());
      PTRAIN_CHECK(inserted, "tensor '{}' is stored in both '{}' and '{}'", t.name,
                   it->second->path(), file->path());
    }
  }
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  for (const auto& [name, located] : tensors_) out.push_back(name);
  return out;
}

const SafetensorsModel::Located* SafetensorsModel::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const SafetensorsModel::Located& SafetensorsModel::at(const std::string& name) const {
  const Located* located = find(name);
  PTRAIN_CHECK(located != nullptr, "model '{}' has no tensor named '{}'", dir_, name);
  return *located;
}

std::vector<std::string> write_safetensors_model(const std::string& dir,
                                                 const std::vector<TensorBytes>& tensors,
                                                 uint64_t max_shard_bytes,
                                                 const std::map<std::string, std::string>& metadata,
                                                 const std::string& prefix) {
  namespace fs = std::filesystem;
  std::vector<std::vector<TensorBytes>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (const auto& t : tensors) {
    if (!shards.back().empty() && shard_bytes + t.nbytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += t.nbytes;
    total += t.nbytes;
  }
  const fs::path index_path = fs::path(dir) / (prefix + ".safetensors.index.json");
  std::vector<std::string> written;
  if (shards.size() == 1) {
    std::error_code ec;
    fs::remove(index_path, ec);  // a stale index would shadow the new single file
    written.push_back((fs::path(dir) / (prefix + ".safetensors")).string());
    write_safetensors(written.back(), shards[0], metadata);
    return written;
  }
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string file =
        fmt::format("{}-{:05d}-of-{:05d}.safetensors", prefix, k + 1, shards.size());
    written.push_back((fs::path(dir) / file).string());
    write_safetensors(written.back(), shards[k], metadata);
    for (const auto& t : shards[k]) weight_map[t.name] = file;
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}},
                                  {"weight_map", weight_map}};
  write_file_atomic(index_path.string(), index.dump(2) + "\n");
  written.push_back(index_path.string());
  // A single file from an earlier save would shadow the shards for Hugging Face loaders, which
  // look for it first.
  std::error_code ec;
  fs::remove(fs::path(dir) / (prefix + ".safetensors"), ec);
  return written;
}

}  // namespace ptrain

namespace ptrain {

std::string model_fingerprint(const std::string& dir, const std::string& prefix) {
  namespace fs = std::filesystem;
  const SafetensorsModel model(dir, prefix);
  std::vector<const SafetensorsFile*> files;
  for (const std::string& name : model.names()) {
    const SafetensorsFile* file = model.at(name).file;
    if (std::find(files.begin(), files.end(), file) == files.end()) files.push_back(file);
  }
  std::sort(files.begin(), files.end(), [](const SafetensorsFile* a, const SafetensorsFile* b) {
    return a->path() < b->path();
  });
  Xxh3Stream h;
  auto add = [&](const void* data, uint64_t size) {
    h.update(&size, sizeof size);
    h.update(data, size);
  };
  const fs::path config = fs::path(dir) / "config.json";
  if (fs::is_regular_file(config)) {
    const std::string text = read_text_file(config.string());
    add(text.data(), text.size());
  }
  constexpr uint64_t kSample = 64 << 10;
  constexpr int kSamples = 16;
  for (const SafetensorsFile* file : files) {
    const std::string name = fs::path(file->path()).filename().string();
    add(name.data(), name.size());
    const MappedFile& bytes = *file->mapping();
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), sizeof header);
    add(bytes.data(), 8 + header);  // validated by SafetensorsFile: within the file
    const uint64_t data_start = 8 + header, data_size = bytes.size() - data_start;
    for (int i = 0; i < kSamples && data_size > 0; ++i) {
      const uint64_t span = std::min(kSample, data_size);
      const uint64_t offset = (data_size - span) * static_cast<uint64_t>(i) / (kSamples - 1);
      add(bytes.data() + data_start + offset, span);
    }
  }
  return h.hex();
}

}  // namespace ptrain
