// NF4 (bitsandbytes' 4-bit NormalFloat) quantization of a weight into one contiguous byte buffer.
//
// Exactly bitsandbytes' scheme (FORMATS.md): the row-major weight is flattened into blocks of 64;
// each block keeps its absmax, each value the index of the nearest of the 16 NF4 levels to
// value / absmax, two codes per byte (element 2j in the high nibble), an odd count padded with code
// 0. With double quantization the absmaxes are stored as offset = mean(absmax) plus (absmax -
// offset) quantized to 8 bits in blocks of 256 against the signed dynamic map, with one fp32
// absmax per 256-block.
//
// The buffer (Nf4Layout) holds everything a weight needs, so FSDP can shard it as a flat uint8
// parameter:
//   [packed codes, ceil(n/2) bytes][pad to 4]
//   double quant:  [uint8 absmax codes, one per block][pad to 4][fp32 nested absmax, one per
//                   256 blocks][fp32 offset]
//   single:        [fp32 absmax, one per block]
// No torch here: the kernels work on raw buffers (quant/nf4_weight.h wraps them).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace ptrain {

// The 16 NF4 levels, index = code (FORMATS.md).
extern const std::array<float, 16> kNf4Levels;

// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True)): 256 sorted values in
// [-1, 1], used for the double-quantized absmax.
const std::array<float, 256>& signed_dynamic_map();

struct Nf4Layout {
  static constexpr int64_t kBlock = 64;
  static constexpr int64_t kNestedBlock = 256;

  Nf4Layout() = default;
  Nf4Layout(int64_t numel, bool double_quant);

  int64_t numel = 0;
  bool double_quant = true;
  int64_t blocks = 0;         // ceil(numel / 64)
  int64_t nested_blocks = 0;  // ceil(blocks / 256) with double quant, else 0
  // Byte offsets into the buffer.
  int64_t codes_offset = 0;          // packed codes, ceil(numel / 2) bytes
  int64_t absmax_offset = 0;         // uint8 codes (double quant) or fp32 values
  int64_t nested_absmax_offset = 0;  // fp32 per nested block (double quant)
  int64_t offset_offset = 0;         // fp32 mean offset (double quant)
  int64_t bytes = 0;                 // total buffer size

  int64_t code_bytes() const { return (numel + 1) / 2; }
  // Bits of storage per weight element.
  double bits_per_param() const { return numel ? 8.0 * bytes / numel : 0.0; }
};

// The NF4 code of a value already divided by its block's absmax, as bitsandbytes' kernel decides
// it: the number of level midpoints (fp32) strictly below x. (nf4_quantize gives an all-zero
// block code 7, level 0.0, where bitsandbytes' kernel computes 0 * 1/0 = NaN and stores code 0.)
uint8_t nf4_code(float x);

// The index of the dynamic-map entry nearest to x, by bitsandbytes' binary search (dQuantize).
uint8_t dynamic_map_code(const std::array<float, 256>& map, float x);

// Quantizes `numel` fp32 values into `out` (layout.bytes bytes).
void nf4_quantize(const float* values, const Nf4Layout& layout, uint8_t* out);
// The same in two phases, so the first can run in parallel over block ranges: the codes of blocks
// [first_block, last_block) from `values` (which starts at element first_block * 64) and their
// fp32 absmax (absmax[b]); then the absmax statistics
// (double-quantized or plain) from every block's absmax. The code region's padding bytes (after
// the last code, up to absmax_offset) must already be zero.
void nf4_quantize_blocks(const float* values, const Nf4Layout& layout, int64_t first_block,
                         int64_t last_block, uint8_t* out, float* absmax);
void nf4_quantize_statistics(const float* absmax, const Nf4Layout& layout, uint8_t* out);

// The fp32 absmax of every block (the double-quantized ones decoded): absmax[0..blocks).
void nf4_block_absmax(const uint8_t* buffer, const Nf4Layout& layout, float* absmax);

// Dequantizes blocks [first_block, last_block) into out[first_block*64 ..] (up to numel), in
// fp32 or as bf16 bits (round to nearest even). The bf16 kernel is vectorised with AVX-512 or
// AVX2 when the CPU has them (chosen at run time), else portable C++.
void nf4_dequantize_f32(const uint8_t* buffer, const Nf4Layout& layout, int64_t first_block,
                        int64_t last_block, float* out);
void nf4_dequantize_bf16(const uint8_t* buffer, const Nf4Layout& layout, int64_t first_block,
                         int64_t last_block, uint16_t* out);

// Which bf16 kernel nf4_dequantize_bf16 uses on this CPU: "avx512", "avx2" or "portable"; and a
// way to force one (tests compare every kernel the CPU can run with the portable one).
const char* nf4_kernel_name();
void nf4_dequantize_bf16_with(const char* kernel, const uint8_t* buffer, const Nf4Layout& layout,
                              int64_t first_block, int64_t last_block, uint16_t* out);

}  // namespace ptrain
