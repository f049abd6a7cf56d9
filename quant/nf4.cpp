#include "quant/nf4.h"

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*); not our code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"

namespace ptrain {

const std::array<float, 16> kNf4Levels = {-1.0f,
                                          -0.6961928009986877f,
                                          -0.5250730514526367f,
                                          -0.39491748809814453f,
                                          -0.28444138169288635f,
                                          -0.18477343022823334f,
                                          -0.09105003625154495f,
                                          0.0f,
                                          0.07958029955625534f,
                                          0.16093020141124725f,
                                          0.24611230194568634f,
                                          0.33791524171829224f,
                                          0.44070982933044434f,
                                          0.5626170039176941f,
                                          0.7229568362236023f,
                                          1.0f};

namespace {

// Midpoints between neighbouring levels, computed in fp64 and rounded to fp32, as bitsandbytes'
// dQuantizeNF4 hard-codes them.
std::array<float, 15> nf4_midpoints() {
  std::array<float, 15> mid{};
  for (int i = 0; i < 15; ++i)
    mid[i] = static_cast<float>((static_cast<double>(kNf4Levels[i]) + kNf4Levels[i + 1]) / 2.0);
  return mid;
}

// torch.linspace(start, end, steps) in fp32 as ATen's CPU kernel computes it (and so as
// bitsandbytes' map was built): an fp32 step; pairs of `lanes`-wide vector chunks, each chunk
// counted from its first index (from start in the first half, back from end in the second), lane
// j adding j * step; the tail element by element.
std::vector<float> linspace_f32(float start, float end, int64_t steps, int64_t lanes) {
  std::vector<float> out(steps);
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int64_t halfway = steps / 2;
  auto scalar = [&](int64_t idx) {
    return idx < halfway ? start + step * static_cast<float>(idx)
                         : end - step * static_cast<float>(steps - idx - 1);
  };
  int64_t i = 0;
  for (; i + 2 * lanes <= steps; i += lanes) {
    const float base = scalar(i);
    for (int64_t j = 0; j < lanes; ++j) out[i + j] = base + static_cast<float>(j) * step;
    i += lanes;
    const float base2 = scalar(i);
    for (int64_t j = 0; j < lanes; ++j) out[i + j] = base2 + static_cast<float>(j) * step;
  }
  for (; i < steps; ++i) out[i] = scalar(i);
  return out;
}

constexpr int64_t kLinspaceLanes = 8;

std::array<float, 256> make_signed_dynamic_map() {
  // bitsandbytes.functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
  // for exponent i in 0..6, 2^i means of linspace(0.1, 1, 2^i + 1) scaled by 10^(i - 6), both
  // signs; then 0 and 1; sorted. Its tensor arithmetic is fp32, reproduced here.
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    std::vector<float> b = linspace_f32(0.1f, 1.0f, (int64_t{1} << i) + 1, kLinspaceLanes);
    const float scale = static_cast<float>(std::pow(10.0, i - 6));
    for (size_t j = 0; j + 1 < b.size(); ++j) {
      const float mean = (b[j] + b[j + 1]) / 2.0f;
      const float value = scale * mean;  // fp32, as the tensor op
      data.push_back(value);
      data.push_back(-value);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  PTRAIN_ASSERT(data.size() == 256, "dynamic map has {} entries", data.size());
  std::sort(data.begin(), data.end());
  std::array<float, 256> map{};
  std::copy(data.begin(), data.end(), map.begin());
  return map;
}

int64_t round_up4(int64_t n) {
  return (n + 3) / 4 * 4;
}

float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void store_f32(uint8_t* p, float v) {
  std::memcpy(p, &v, sizeof(v));
}

}  // namespace

const std::array<float, 256>& signed_dynamic_map() {
  static const std::array<float, 256> map = make_signed_dynamic_map();
  return map;
}

Nf4Layout::Nf4Layout(int64_t n, bool dq) : numel(n), double_quant(dq) {
  PTRAIN_ASSERT(n >= 0, "numel {}", n);
  blocks = (n + kBlock - 1) / kBlock;
  codes_offset = 0;
  absmax_offset = round_up4(code_bytes());
  if (double_quant) {
    nested_blocks = (blocks + kNestedBlock - 1) / kNestedBlock;
    nested_absmax_offset = absmax_offset + round_up4(blocks);
    offset_offset = nested_absmax_offset + 4 * nested_blocks;
    bytes = offset_offset + 4;
  } else {
    bytes = absmax_offset + 4 * blocks;
  }
}

namespace {
const std::array<float, 15> kMidpoints = nf4_midpoints();
}  // namespace

inline int code_of(float x) {
  int code = 0;
  for (int k = 0; k < 15; ++k) code += x > kMidpoints[k] ? 1 : 0;  // NaN: false everywhere
  return code;
}

uint8_t nf4_code(float x) {
  return static_cast<uint8_t>(code_of(x));
}

uint8_t dynamic_map_code(const std::array<float, 256>& code, float x) {
  // bitsandbytes' dQuantize<STOCHASTIC=0> (csrc/kernels.cu), step for step.
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return static_cast<uint8_t>(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = (lower + val) * 0.5f;
  return static_cast<uint8_t>(x < midpoint ? lower_pivot : pivot);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void nf4_quantize_blocks(
    const float* values, const Nf4Layout& layout, int64_t first_block, int64_t last_block,
    uint8_t* out, float* absmax) {
  uint8_t* codes = out + layout.codes_offset;
  values -= first_block * Nf4Layout::kBlock;  // index by element number from here
  for (int64_t b = first_block; b < last_block; ++b) {
    const int64_t begin = b * Nf4Layout::kBlock;
    const int64_t end = std::min(layout.numel, begin + Nf4Layout::kBlock);
    float m = 0.0f;
    for (int64_t i = begin; i < end; ++i) m = std::fmax(m, std::fabs(values[i]));
    absmax[b] = m;
    const float inv = 1.0f / m;
    int block_codes[Nf4Layout::kBlock + 1] = {};
    const float* v = values + begin;
    const int64_t count = end - begin;
    for (int64_t i = 0; i < count; ++i) block_codes[i] = code_of(v[i] * inv);
    // An all-zero block takes level 0.0 (code 7), so it dequantizes to exact zeros whatever its
    // double-quantized absmax; bitsandbytes' kernel gives code 0 (x * 1/0 is NaN) there.
    if (m == 0.0f)
      for (int64_t i = 0; i < count; ++i) block_codes[i] = 7;
    for (int64_t i = begin; i < end; i += 2)
      codes[i / 2] = static_cast<uint8_t>(block_codes[i - begin] << 4 | block_codes[i - begin + 1]);
  }
}

void nf4_quantize_statistics(const float* absmax_in, const Nf4Layout& layout, uint8_t* out) {
  const std::vector<float> absmax(absmax_in, absmax_in + layout.blocks);
  std::memset(out + layout.absmax_offset, 0,
              static_cast<size_t>(layout.bytes - layout.absmax_offset));
  if (!layout.double_quant) {
    for (int64_t b = 0; b < layout.blocks; ++b)
      store_f32(out + layout.absmax_offset + 4 * b, absmax[b]);
    return;
  }
  double sum = 0;
  for (float m : absmax) sum += m;
  const float offset = layout.blocks ? static_cast<float>(sum / layout.blocks) : 0.0f;
  store_f32(out + layout.offset_offset, offset);
  const auto& map = signed_dynamic_map();
  for (int64_t nb = 0; nb < layout.nested_blocks; ++nb) {
    const int64_t begin = nb * Nf4Layout::kNestedBlock;
    const int64_t end = std::min(layout.blocks, begin + Nf4Layout::kNestedBlock);
    float m = 0.0f;
    for (int64_t i = begin; i < end; ++i) m = std::fmax(m, std::fabs(absmax[i] - offset));
    store_f32(out + layout.nested_absmax_offset + 4 * nb, m);
    const float inv = 1.0f / m;
    for (int64_t i = begin; i < end; ++i)
      out[layout.absmax_offset + i] = dynamic_map_code(map, (absmax[i] - offset) * inv);
  }
}

void nf4_quantize(const float* values, const Nf4Layout& layout, uint8_t* out) {
  std::memset(out, 0, static_cast<size_t>(layout.absmax_offset));  // code padding
  std::vector<float> absmax(static_cast<size_t>(layout.blocks));
  nf4_quantize_blocks(values, layout, 0, layout.blocks, out, absmax.data());
  nf4_quantize_statistics(absmax.data(), layout, out);
}

void nf4_block_absmax(const uint8_t* buffer, const Nf4Layout& layout, float* absmax) {
  if (!layout.double_quant) {
    std::memcpy(absmax, buffer + layout.absmax_offset, static_cast<size_t>(4 * layout.blocks));
    return;
  }
  const auto& map = signed_dynamic_map();
  const float offset = load_f32(buffer + layout.offset_offset);
  for (int64_t b = 0; b < layout.blocks; ++b) {
    const float scale =
        load_f32(buffer + layout.nested_absmax_offset + 4 * (b / Nf4Layout::kNestedBlock));
    absmax[b] = map[buffer[layout.absmax_offset + b]] * scale + offset;
  }
}

namespace {

float block_absmax(const uint8_t* buffer, const Nf4Layout& layout, int64_t b) {
  if (!layout.double_quant) return load_f32(buffer + layout.absmax_offset + 4 * b);
  const float scale =
      load_f32(buffer + layout.nested_absmax_offset + 4 * (b / Nf4Layout::kNestedBlock));
  // Two fp32 roundings, as bitsandbytes: code * absmax2, then + offset.
  const float scaled = signed_dynamic_map()[buffer[layout.absmax_offset + b]] * scale;
  return scaled + load_f32(buffer + layout.offset_offset);
}

// Blocks [first, last), one value at a time: out[i] = convert(level * absmax) in fp32.
template <class T, class Convert>
void dequantize_blocks_portable(const uint8_t* buffer, const Nf4Layout& layout, int64_t first,
                                int64_t last, T* out, Convert convert) {
  const uint8_t* codes = buffer + layout.codes_offset;
  for (int64_t b = first; b < last; ++b) {
    const int64_t begin = b * Nf4Layout::kBlock;
    const int64_t end = std::min(layout.numel, begin + Nf4Layout::kBlock);
    const float absmax = block_absmax(buffer, layout, b);
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t byte = codes[i / 2];
      const uint8_t c = (i % 2 == 0) ? (byte >> 4) : (byte & 0x0F);
      out[i] = convert(kNf4Levels[c] * absmax);
    }
  }
}

void dequantize_bf16_portable(const uint8_t* buffer, const Nf4Layout& layout, int64_t first,
                              int64_t last, uint16_t* out) {
  dequantize_blocks_portable(buffer, layout, first, last, out, float_to_bf16);
}

// Full blocks with AVX-512: the block's 16 scaled levels sit in one register, and
// vpermps looks 16 codes up at once.
__attribute__((target("avx512f,avx512bw,avx2"))) void dequantize_bf16_avx512(
    const uint8_t* buffer, const Nf4Layout& layout, int64_t first, int64_t last, uint16_t* out) {
  const uint8_t* codes = buffer + layout.codes_offset;
  const __m512 levels = _mm512_loadu_ps(kNf4Levels.data());
  const __m256i low_nibble = _mm256_set1_epi8(0x0F);
  const __m512i round_bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
  const int64_t full = layout.numel / Nf4Layout::kBlock;  // blocks with all 64 values
  int64_t b = first;
  for (; b < std::min(last, full); ++b) {
    const __m512 table = _mm512_mul_ps(levels, _mm512_set1_ps(block_absmax(buffer, layout, b)));
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * b));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_nibble);
    const __m256i lo = _mm256_and_si256(bytes, low_nibble);
    // Per 128-bit lane: unpacklo interleaves bytes 0..7 (elements 0..15 of the lane's 32),
    // unpackhi bytes 8..15.
    const __m256i u0 = _mm256_unpacklo_epi8(hi, lo), u1 = _mm256_unpackhi_epi8(hi, lo);
    const __m128i groups[4] = {_mm256_castsi256_si128(u0), _mm256_castsi256_si128(u1),
                               _mm256_extracti128_si256(u0, 1), _mm256_extracti128_si256(u1, 1)};
    uint16_t* dst = out + b * Nf4Layout::kBlock;
    for (int g = 0; g < 4; ++g) {
      const __m512 v = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(groups[g]), table);
      const __m512i w = _mm512_castps_si512(v);
      const __m512i rounded =
          _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(w, round_bias),
                                             _mm512_and_si512(_mm512_srli_epi32(w, 16), one)),
                            16);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16 * g), _mm512_cvtepi32_epi16(rounded));
    }
  }
  if (b < last) dequantize_bf16_portable(buffer, layout, b, last, out);
}

// Eight codes' scaled levels as bf16 bits (in the low half of each 32-bit lane).
__attribute__((target("avx2,fma"))) inline __m256i lookup8_avx2(__m128i eight_codes, __m256 tlo,
                                                                __m256 thi) {
  const __m256i idx = _mm256_cvtepu8_epi32(eight_codes);
  const __m256 v =
      _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, idx), _mm256_permutevar8x32_ps(thi, idx),
                       _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7))));
  const __m256i w = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(w, 16), _mm256_set1_epi32(1));
  return _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(w, _mm256_set1_epi32(0x7FFF)), lsb),
                           16);
}

// Full blocks with AVX2: two 8-entry halves of the table, vpermps on each, blended by code > 7.
__attribute__((target("avx2,fma"))) void dequantize_bf16_avx2(const uint8_t* buffer,
                                                              const Nf4Layout& layout,
                                                              int64_t first, int64_t last,
                                                              uint16_t* out) {
  const uint8_t* codes = buffer + layout.codes_offset;
  const __m256 levels_lo = _mm256_loadu_ps(kNf4Levels.data());
  const __m256 levels_hi = _mm256_loadu_ps(kNf4Levels.data() + 8);
  const __m128i low_nibble = _mm_set1_epi8(0x0F);
  const int64_t full = layout.numel / Nf4Layout::kBlock;
  int64_t b = first;
  for (; b < std::min(last, full); ++b) {
    const __m256 scale = _mm256_set1_ps(block_absmax(buffer, layout, b));
    const __m256 tlo = _mm256_mul_ps(levels_lo, scale), thi = _mm256_mul_ps(levels_hi, scale);
    uint16_t* dst = out + b * Nf4Layout::kBlock;
    for (int half = 0; half < 2; ++half) {
      const __m128i bytes =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 32 * b + 16 * half));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibble);
      const __m128i lo = _mm_and_si128(bytes, low_nibble);
      const __m128i c[2] = {_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo)};  // 16 codes
      for (int k = 0; k < 2; ++k) {
        const __m256i r0 = lookup8_avx2(c[k], tlo, thi);
        const __m256i r1 = lookup8_avx2(_mm_srli_si128(c[k], 8), tlo, thi);
        // packus interleaves 128-bit lanes; permute them back into element order.
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r0, r1), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32 * half + 16 * k), packed);
      }
    }
  }
  if (b < last) dequantize_bf16_portable(buffer, layout, b, last, out);
}

using Bf16Kernel = void (*)(const uint8_t*, const Nf4Layout&, int64_t, int64_t, uint16_t*);

struct KernelChoice {
  const char* name;
  Bf16Kernel fn;
};

KernelChoice best_kernel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    return {"avx512", dequantize_bf16_avx512};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {"avx2", dequantize_bf16_avx2};
  return {"portable", dequantize_bf16_portable};
}

const KernelChoice& chosen_kernel() {
  static const KernelChoice choice = best_kernel();
  return choice;
}

}  // namespace

void nf4_dequantize_f32(const uint8_t* buffer, const Nf4Layout& layout, int64_t first_block,
                        int64_t last_block, float* out) {
  dequantize_blocks_portable(buffer, layout, first_block, last_block, out,
                             [](float v) { return v; });
}

void nf4_dequantize_bf16(const uint8_t* buffer, const Nf4Layout& layout, int64_t first_block,
                         int64_t last_block, uint16_t* out) {
  chosen_kernel().fn(buffer, layout, first_block, last_block, out);
}

const char* nf4_kernel_name() {
  return chosen_kernel().name;
}

void nf4_dequantize_bf16_with(const char* kernel, const uint8_t* buffer, const Nf4Layout& layout,
                              int64_t first_block, int64_t last_block, uint16_t* out) {
  const std::string name = kernel;
  Bf16Kernel fn = name == "avx512"     ? dequantize_bf16_avx512
                  : name == "avx2"     ? dequantize_bf16_avx2
                  : name == "portable" ? dequantize_bf16_portable
                                       : nullptr;
  PTRAIN_CHECK(fn != nullptr, "unknown NF4 kernel '{}' (avx512, avx2, portable)", name);
  __builtin_cpu_init();
  PTRAIN_CHECK(
      name != "avx512" || (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")),
      "NF4 kernel avx512: this CPU has no AVX-512");
  PTRAIN_CHECK(name != "avx2" || (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")),
               "NF4 kernel avx2: this CPU has no AVX2");
  fn(buffer, layout, first_block, last_block, out);
}

}  // namespace ptrain
