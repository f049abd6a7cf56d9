// The flat-parameter layout of FSDP: which elements of which tensors each rank holds.
//
// [Note: flat parameters]
// The tensors of one unit and one kind (model/model_units.h: frozen NF4 bytes, frozen, trainable)
// are laid end to end, in their listed order, in one 1-D buffer of one dtype: tensor i occupies
// elements [offset_i, offset_i + numel_i), offset_0 = 0, offset_{i+1} = offset_i + numel_i. The
// buffer is padded at its end to shards x shard_numel elements (shard_numel = ceil(numel /
// shards), at least 1) so that it splits into equal shards; shard r is elements
// [r * shard_numel, (r + 1) * shard_numel) and may hold padding, or only padding. Padding is zero
// in every buffer and gradient and never read back into a tensor.
//
// All-gathering every rank's shard (in rank order) rebuilds the padded buffer, which is why the
// shards are equal; reduce-scattering a padded gradient gives each rank the reduction of its
// shard. The layout is plain arithmetic on element counts: it knows no dtype beyond its name, no
// device and no model, and is the same on every rank. A resume at another world size re-slices
// the same global buffer (reslice()).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ptrain {

struct FlatEntry {
  std::string name;            // the tensor's name (e.g. the Hugging Face name)
  std::vector<int64_t> shape;  // its shape; numel is their product
  int64_t offset = 0;          // first element in the flat buffer
  int64_t numel = 0;
};

// A run of one entry's elements inside one shard.
struct ShardPiece {
  size_t entry = 0;          // index into entries()
  int64_t entry_offset = 0;  // first element within the entry
  int64_t shard_offset = 0;  // first element within the shard
  int64_t count = 0;
};

// A run of a shard of one layout inside a shard of another layout of the same global buffer.
struct ReslicePiece {
  int old_shard = 0;
  int64_t old_offset = 0;  // within the old shard
  int64_t new_offset = 0;  // within the new shard
  int64_t count = 0;
};

class FlatLayout {
 public:
  // `tensors`: (name, shape) in buffer order; shapes with a negative dimension or a numel
  // overflowing int64 are an internal error, as is shards < 1.
  FlatLayout(std::string name, c10::ScalarType dtype,
             const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors, int shards);

  const std::string& name() const { return name_; }
  c10::ScalarType dtype() const { return dtype_; }
  const std::vector<FlatEntry>& entries() const { return entries_; }
  int shards() const { return shards_; }
  int64_t numel() const { return numel_; }  // the tensors' elements, without padding
  int64_t shard_numel() const { return shard_numel_; }
  int64_t padded_numel() const { return shard_numel_ * shards_; }
  int64_t padding() const { return padded_numel() - numel_; }

  // Elements [first, second) of the padded buffer that shard `shard` holds.
  std::pair<int64_t, int64_t> shard_range(int shard) const;
  // The entries' elements in shard `shard`, in buffer order (padding is in no piece).
  std::vector<ShardPiece> pieces(int shard) const;

  // The same buffer split into `shards` shards instead.
  FlatLayout with_shards(int shards) const;
  // Where shard `new_shard` of `target` (the same entries, another shard count) comes from in this
  // layout's shards: pieces covering the target shard's non-padding elements, in order.
  std::vector<ReslicePiece> reslice(const FlatLayout& target, int new_shard) const;

  // {"name", "dtype", "shards", "numel", "shard_numel", "padding", "entries": [{"name", "shape",
  // "offset", "numel"}]}: the global layout a checkpoint manifest records.
  nlohmann::json to_json() const;
  // Throws UserError naming the field when `json` is not a layout written by to_json(), or its
  // offsets and counts disagree.
  static FlatLayout from_json(const nlohmann::json& json);

  // True when both describe the same tensors in the same buffer (names, shapes, dtype), whatever
  // their shard counts.
  bool same_tensors(const FlatLayout& other) const;

 private:
  std::string name_;
  c10::ScalarType dtype_;
  std::vector<FlatEntry> entries_;
  int shards_ = 1;
  int64_t numel_ = 0;
  int64_t shard_numel_ = 1;
};

}  // namespace ptrain
