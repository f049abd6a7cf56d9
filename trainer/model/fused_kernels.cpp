#include "trainer/model/fused_kernels.h"

#include <cmath>
#include <cstring>

namespace ptrain {
namespace {

inline float load(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

inline uint16_t store(float value) {  // round to nearest even; NaN stays NaN
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  const uint32_t rounded = (word + 0x7FFFu + ((word >> 16) & 1u)) >> 16;
  const bool is_nan = (word & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(is_nan ? 0x7FC0u : rounded);
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default"))) void swiglu_forward_bf16(
    const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = load(gate[i]);
    const float s = 1.0f / (1.0f + std::exp(-g));
    out[i] = store(g * s * load(up[i]));
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void swiglu_backward_bf16(
    const uint16_t* grad, const uint16_t* gate, const uint16_t* up, uint16_t* d_gate,
    uint16_t* d_up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = load(gate[i]), u = load(up[i]), dy = load(grad[i]);
    const float s = 1.0f / (1.0f + std::exp(-g));
    d_gate[i] = store(dy * u * s * (1.0f + g * (1.0f - s)));
    d_up[i] = store(dy * g * s);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void rope_bf16(
    const uint16_t* x, const float* cos, const float* sin, uint16_t* out, int64_t rows,
    int64_t rows_per_table, int64_t dim, bool inverse) {
  const int64_t half = dim / 2;
  const float sign = inverse ? -1.0f : 1.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* xr = x + r * dim;
    uint16_t* o = out + r * dim;
    const float* c = cos + (r / rows_per_table) * dim;
    const float* s = sin + (r / rows_per_table) * dim;
    // cos and sin repeat across the two halves (emb = cat(freqs, freqs)).
    for (int64_t i = 0; i < half; ++i) {
      const float a = load(xr[i]), b = load(xr[i + half]);
      o[i] = store(a * c[i] - sign * b * s[i]);
      o[i + half] = store(b * c[i + half] + sign * a * s[i + half]);
    }
  }
}

}  // namespace ptrain
