// The weights of a Hugging Face model directory: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` ({"metadata": {"total_size": N}, "weight_map": {name: file}}).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"

namespace ptrain {

class SafetensorsModel {
 public:
  // Opens (and validates) every file the directory's index names, or its single model file.
  // UserError naming the directory, file and tensor for a missing file, an index entry absent
  // from its shard, a tensor found in two shards, or a directory holding both a single file and
  // an index.
  explicit SafetensorsModel(const std::string& dir, const std::string& prefix = "model");

  struct Located {
    const SafetensorsFile* file = nullptr;
    const TensorInfo* info = nullptr;
    const uint8_t* bytes() const { return file->bytes(*info); }
  };

  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  const Located* find(const std::string& name) const;
  // UserError naming the directory when absent.
  const Located& at(const std::string& name) const;
  size_t file_count() const { return files_.size(); }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Located> tensors_;
};

// Writes `tensors` into `dir` as `<prefix>.safetensors`, or, when they exceed `max_shard_bytes`,
// as `<prefix>-0000k-of-0000n.safetensors` shards (in order, each up to the limit unless a single
// tensor is larger) plus `<prefix>.safetensors.index.json`. Each file is written atomically, the
// index last; a stale index (or single file) from an earlier save of the other kind is removed.
// Returns the files written.
std::vector<std::string> write_safetensors_model(const std::string& dir,
                                                 const std::vector<TensorBytes>& tensors,
                                                 uint64_t max_shard_bytes,
                                                 const std::map<std::string, std::string>& metadata,
                                                 const std::string& prefix = "model");

// 16 hex digits identifying a model directory's weights without reading all of them: config.json,
// each weight file's name, size and header (every tensor's name, dtype, shape and offsets), and
// 64 KiB at each of 16 evenly spaced places in its data. Another model, or the same one with
// other values, gets another fingerprint; a copy of the directory keeps it. UserError as
// SafetensorsModel for a directory without weights.
std::string model_fingerprint(const std::string& dir, const std::string& prefix = "model");

}  // namespace ptrain
