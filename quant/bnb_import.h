// Reading weights that bitsandbytes already quantized to 4-bit NF4 (a Hugging Face model saved
// with BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")). Per quantized weight
// "<w>" the directory holds: "<w>" (uint8 packed codes, [ceil(n/2), 1]), "<w>.absmax" (uint8 with
// double quant, else fp32), "<w>.quant_map" (fp32 [16]), with double quant "<w>.nested_absmax"
// (fp32) and "<w>.nested_quant_map" (fp32 [256]), and "<w>.quant_state.bitsandbytes__nf4"
// (uint8 UTF-8 JSON: quant_type, blocksize, dtype, shape, nested_blocksize, nested_offset).
#pragma once

#include <string>
#include <vector>

#include "checkpoint/safetensors_model.h"
#include "quant/nf4_weight.h"

namespace ptrain {

// Whether `name` is one of the auxiliary tensors bitsandbytes stores next to a 4-bit weight.
bool bnb_aux_tensor(const std::string& name);

// Checks the tensors stored for the 4-bit weight `name` against `shape` and `double_quant` (from
// config.json's quantization_config) and against what ptrain decodes: quant_type nf4, blocksize
// 64, nested blocksize 256, every tensor present with its dtype and element count, quant_map equal
// to the NF4 levels, nested_quant_map within two fp32 ulps of the signed dynamic map. Reads only
// headers and the small quant-state tensors, and allocates nothing sized by `shape`. Returns the
// layout; UserError naming the file, tensor and rule otherwise.
Nf4Layout check_bnb_nf4(const SafetensorsModel& weights, const std::string& name,
                        const std::vector<int64_t>& shape, bool double_quant);

// The NF4 weight stored under `name`, after every check of check_bnb_nf4 (its buffer is
// allocated only once they pass).
Nf4Weight read_bnb_nf4(const SafetensorsModel& weights, const std::string& name,
                       const std::vector<int64_t>& shape, bool double_quant);

}  // namespace ptrain
