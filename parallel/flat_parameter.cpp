#include "parallel/flat_parameter.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace ptrain {
namespace {

int64_t checked_numel(const std::string& name, const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    PTRAIN_ASSERT(d >= 0, "tensor '{}' has a negative dimension", name);
    PTRAIN_ASSERT(d == 0 || numel <= std::numeric_limits<int64_t>::max() / d,
                  "tensor '{}' has more elements than int64 counts", name);
    numel *= d;
  }
  return numel;
}

c10::ScalarType dtype_from_name(const std::string& name) {
  for (c10::ScalarType t : {c10::ScalarType::Float, c10::ScalarType::BFloat16,
                            c10::ScalarType::Half, c10::ScalarType::Double, c10::ScalarType::Byte,
                            c10::ScalarType::Int, c10::ScalarType::Long})
    if (name == c10::toString(t)) return t;
  throw UserError(fmt::format("flat parameter layout: unknown dtype '{}'", name));
}

template <class T>
T field(const nlohmann::json& json, const char* key) {
  PTRAIN_CHECK(json.is_object() && json.contains(key),
               "flat parameter layout: field '{}' is missing", key);
  try {
    return json.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw UserError(fmt::format("flat parameter layout: field '{}' has the wrong type: {}", key,
                                json.at(key).dump()));
  }
}

}  // namespace

FlatLayout::FlatLayout(std::string name, c10::ScalarType dtype,
                       const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
                       int shards)
    : name_(std::move(name)), dtype_(dtype), shards_(shards) {
  PTRAIN_ASSERT(shards >= 1, "flat parameter '{}' split into {} shards", name_, shards);
  entries_.reserve(tensors.size());
  for (const auto& [tensor, shape] : tensors) {
    FlatEntry e{tensor, shape, numel_, checked_numel(tensor, shape)};
    PTRAIN_ASSERT(numel_ <= std::numeric_limits<int64_t>::max() - e.numel,
                  "flat parameter '{}' has more elements than int64 counts", name_);
    numel_ += e.numel;
    entries_.push_back(std::move(e));
  }
  shard_numel_ = std::max<int64_t>(1, (numel_ + shards_ - 1) / shards_);
}

std::pair<int64_t, int64_t> FlatLayout::shard_range(int shard) const {
  PTRAIN_ASSERT(shard >= 0 && shard < shards_, "shard {} of {}", shard, shards_);
  return {shard * shard_numel_, (shard + 1) * shard_numel_};
}

std::vector<ShardPiece> FlatLayout::pieces(int shard) const {
  const auto [begin, end] = shard_range(shard);
  std::vector<ShardPiece> out;
  // The first entry ending after `begin`.
  auto it =
      std::upper_bound(entries_.begin(), entries_.end(), begin,
                       [](int64_t at, const FlatEntry& e) { return at < e.offset + e.numel; });
  for (; it != entries_.end() && it->offset < end; ++it) {
    const int64_t first = std::max(begin, it->offset);
    const int64_t last = std::min(end, it->offset + it->numel);
    if (first >= last) continue;  // an empty tensor
    out.push_back({static_cast<size_t>(it - entries_.begin()), first - it->offset, first - begin,
                   last - first});
  }
  return out;
}

FlatLayout FlatLayout::with_shards(int shards) const {
  FlatLayout out = *this;
  PTRAIN_ASSERT(shards >= 1, "flat parameter '{}' split into {} shards", name_, shards);
  out.shards_ = shards;
  out.shard_numel_ = std::max<int64_t>(1, (numel_ + shards - 1) / shards);
  return out;
}

std::vector<ReslicePiece> FlatLayout::reslice(const FlatLayout& target, int new_shard) const {
  PTRAIN_ASSERT(same_tensors(target), "reslice of flat parameter '{}' into '{}'", name_,
                target.name_);
  auto [begin, end] = target.shard_range(new_shard);
  end = std::min(end, numel_);
  std::vector<ReslicePiece> out;
  for (int64_t at = begin; at < end;) {
    const int old = static_cast<int>(at / shard_numel_);
    const int64_t old_end = std::min(end, (old + 1) * shard_numel_);
    out.push_back({old, at - old * shard_numel_, at - begin, old_end - at});
    at = old_end;
  }
  return out;
}

bool FlatLayout::same_tensors(const FlatLayout& other) const {
  if (dtype_ != other.dtype_ || entries_.size() != other.entries_.size()) return false;
  for (size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].name != other.entries_[i].name || entries_[i].shape != other.entries_[i].shape)
      return false;
  return true;
}

nlohmann::json FlatLayout::to_json() const {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& e : entries_)
    entries.push_back(
        {{"name", e.name}, {"shape", e.shape}, {"offset", e.offset}, {"numel", e.numel}});
  return {{"name", name_},     {"dtype", c10::toString(dtype_)}, {"shards", shards_},
          {"numel", numel_},   {"shard_numel", shard_numel_},    {"padding", padding()},
          {"entries", entries}};
}

FlatLayout FlatLayout::from_json(const nlohmann::json& json) {
  const std::string name = field<std::string>(json, "name");
  const int shards = field<int>(json, "shards");
  PTRAIN_CHECK(shards >= 1, "flat parameter '{}': {} shards", name, shards);
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;
  const nlohmann::json entries = field<nlohmann::json>(json, "entries");
  PTRAIN_CHECK(entries.is_array(), "flat parameter '{}': 'entries' is not a list", name);
  for (const auto& e : entries) {
    const auto shape = field<std::vector<int64_t>>(e, "shape");
    for (int64_t d : shape)
      PTRAIN_CHECK(d >= 0, "flat parameter '{}': negative dimension in {}", name, e.dump());
    tensors.emplace_back(field<std::string>(e, "name"), shape);
  }
  FlatLayout layout(name, dtype_from_name(field<std::string>(json, "dtype")), tensors, shards);
  for (size_t i = 0; i < layout.entries_.size(); ++i) {
    const FlatEntry& e = layout.entries_[i];
    PTRAIN_CHECK(field<int64_t>(entries[i], "offset") == e.offset &&
                     field<int64_t>(entries[i], "numel") == e.numel,
                 "flat parameter '{}': entry '{}' is recorded at offset {} with {} elements; its "
                 "shape puts it at {} with {}",
                 name, e.name, entries[i]["offset"].dump(), entries[i]["numel"].dump(), e.offset,
                 e.numel);
  }
  PTRAIN_CHECK(field<int64_t>(json, "numel") == layout.numel_ &&
                   field<int64_t>(json, "shard_numel") == layout.shard_numel_,
               "flat parameter '{}': recorded numel {} / shard_numel {} disagree with its entries "
               "({} / {})",
               name, json["numel"].dump(), json["shard_numel"].dump(), layout.numel_,
               layout.shard_numel_);
  return layout;
}

}  // namespace ptrain
