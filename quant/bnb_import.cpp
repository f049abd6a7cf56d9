#include "quant/bnb_import.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/shape_string.h"

namespace ptrain {
namespace {

const char* kStateSuffix = ".quant_state.bitsandbytes__nf4";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const SafetensorsModel::Located& require(const SafetensorsModel& weights, const std::string& name,
                                         StDtype dtype, int64_t numel) {
  const SafetensorsModel::Located* t = weights.find(name);
  PTRAIN_CHECK(t != nullptr, "model '{}': the 4-bit weight needs tensor '{}' (bitsandbytes)",
               weights.dir(), name);
  PTRAIN_CHECK(t->info->dtype == dtype, "'{}': tensor '{}' is {}, expected {}", t->file->path(),
               name, dtype_name(t->info->dtype), dtype_name(dtype));
  PTRAIN_CHECK(numel < 0 || t->info->numel() == numel,
               "'{}': tensor '{}' has {} elements, expected {}", t->file->path(), name,
               t->info->numel(), numel);
  return *t;
}

std::vector<float> floats(const SafetensorsModel::Located& t) {
  std::vector<float> out(static_cast<size_t>(t.info->numel()));
  std::memcpy(out.data(), t.bytes(), out.size() * sizeof(float));
  return out;
}

}  // namespace

bool bnb_aux_tensor(const std::string& name) {
  for (const char* suffix : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                             ".quant_state.bitsandbytes__nf4"})
    if (ends_with(name, suffix)) return true;
  return false;
}

namespace {

// The stored tensors of one 4-bit weight, each checked (presence, dtype, element count against
// the config's shape, the quant state and the maps) from the headers and the small tensors alone:
// nothing the size of the weight is allocated before every check has passed.
struct BnbTensors {
  Nf4Layout layout;
  at::ScalarType dtype = at::kBFloat16;
  const SafetensorsModel::Located* codes = nullptr;
  const SafetensorsModel::Located* absmax = nullptr;
  const SafetensorsModel::Located* nested_absmax = nullptr;  // double quant only
  float nested_offset = 0;
};

BnbTensors locate_bnb_nf4(const SafetensorsModel& weights, const std::string& name,
                          const std::vector<int64_t>& shape, bool double_quant) {
  BnbTensors t;
  t.layout = Nf4Layout(c10::multiply_integers(shape), double_quant);
  const Nf4Layout& l = t.layout;

  const auto& state_tensor = require(weights, name + kStateSuffix, StDtype::kU8, -1);
  const std::string state_where =
      fmt::format("'{}': tensor '{}{}'", state_tensor.file->path(), name, kStateSuffix);
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(state_tensor.bytes()),
                                              state_tensor.info->nbytes()));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: not valid JSON: {}", state_where, e.what()));
  }
  PTRAIN_CHECK(state.is_object() && state.value("quant_type", "") == "nf4",
               "{}: quant_type must be \"nf4\" (FP4 and other types are not supported)",
               state_where);
  PTRAIN_CHECK(state.value("blocksize", 0) == Nf4Layout::kBlock, "{}: blocksize must be 64, got {}",
               state_where, state.contains("blocksize") ? state["blocksize"].dump() : "nothing");
  PTRAIN_CHECK(state.contains("shape") && state["shape"].get<std::vector<int64_t>>() == shape,
               "{}: shape {} does not match the config's {}", state_where,
               state.contains("shape") ? state["shape"].dump() : "(none)", shape_string(shape));
  const std::string dtype = state.value("dtype", "bfloat16");
  t.dtype = dtype == "float32" ? at::kFloat : dtype == "float16" ? at::kHalf : at::kBFloat16;
  PTRAIN_CHECK(state.contains("nested_offset") == double_quant,
               "{}: nested quantization {} in the quant state but {} in config.json", state_where,
               state.contains("nested_offset") ? "present" : "absent", double_quant ? "on" : "off");

  t.codes = &require(weights, name, StDtype::kU8, l.code_bytes());
  const auto& quant_map = require(weights, name + ".quant_map", StDtype::kF32, 16);
  const std::vector<float> map = floats(quant_map);
  for (int i = 0; i < 16; ++i)
    PTRAIN_CHECK(map[i] == kNf4Levels[i],
                 "'{}': tensor '{}.quant_map' entry {} is {}, not NF4's {}", quant_map.file->path(),
                 name, i, map[i], kNf4Levels[i]);
  if (!double_quant) {
    t.absmax = &require(weights, name + ".absmax", StDtype::kF32, l.blocks);
    return t;
  }
  PTRAIN_CHECK(state.value("nested_blocksize", 0) == Nf4Layout::kNestedBlock,
               "{}: nested_blocksize must be 256", state_where);
  t.absmax = &require(weights, name + ".absmax", StDtype::kU8, l.blocks);
  t.nested_absmax = &require(weights, name + ".nested_absmax", StDtype::kF32, l.nested_blocks);
  const auto& nested_map = require(weights, name + ".nested_quant_map", StDtype::kF32, 256);
  const std::vector<float> dynamic = floats(nested_map);
  const auto& ours = signed_dynamic_map();
  for (int i = 0; i < 256; ++i) {
    const float ulp = std::nextafter(std::fabs(ours[i]), 2.0f) - std::fabs(ours[i]);
    PTRAIN_CHECK(
        std::fabs(dynamic[i] - ours[i]) <= 2 * ulp,
        "'{}': tensor '{}.nested_quant_map' entry {} is {}, not the signed dynamic map's {}",
        nested_map.file->path(), name, i, dynamic[i], ours[i]);
  }
  t.nested_offset = state["nested_offset"].get<float>();
  return t;
}

// The checks' one conversion of a quant-state value of the wrong JSON type into a UserError.
template <typename F>
auto with_state_errors(const SafetensorsModel& weights, const std::string& name, F&& f) {
  try {
    return f();
  } catch (const nlohmann::json::exception& e) {  // a quant-state value of the wrong JSON type
    throw UserError(
        fmt::format("model '{}': tensor '{}.quant_state.bitsandbytes__nf4': unexpected "
                    "value: {}",
                    weights.dir(), name, e.what()));
  }
}

}  // namespace

Nf4Layout check_bnb_nf4(const SafetensorsModel& weights, const std::string& name,
                        const std::vector<int64_t>& shape, bool double_quant) {
  return with_state_errors(
      weights, name, [&] { return locate_bnb_nf4(weights, name, shape, double_quant).layout; });
}

Nf4Weight read_bnb_nf4(const SafetensorsModel& weights, const std::string& name,
                       const std::vector<int64_t>& shape, bool double_quant) {
  const BnbTensors t = with_state_errors(
      weights, name, [&] { return locate_bnb_nf4(weights, name, shape, double_quant); });
  const Nf4Layout& l = t.layout;
  Nf4Weight w;
  w.shape = shape;
  w.layout = l;
  w.dtype = t.dtype;
  w.storage = torch::zeros({l.bytes}, torch::kUInt8);
  uint8_t* out = w.storage.data_ptr<uint8_t>();
  std::memcpy(out + l.codes_offset, t.codes->bytes(), static_cast<size_t>(l.code_bytes()));
  if (!double_quant) {
    std::memcpy(out + l.absmax_offset, t.absmax->bytes(), static_cast<size_t>(4 * l.blocks));
    return w;
  }
  std::memcpy(out + l.absmax_offset, t.absmax->bytes(), static_cast<size_t>(l.blocks));
  std::memcpy(out + l.nested_absmax_offset, t.nested_absmax->bytes(),
              static_cast<size_t>(4 * l.nested_blocks));
  std::memcpy(out + l.offset_offset, &t.nested_offset, sizeof(t.nested_offset));
  return w;
}

}  // namespace ptrain
