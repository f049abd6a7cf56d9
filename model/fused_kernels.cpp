#include "model/fused_kernels.h"

#include <cmath>

#include "core/bf16.h"

namespace ptrain {

__attribute__((target_clones("avx512f", "avx2", "default"))) void swiglu_forward_bf16(
    const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = bf16_to_float(gate[i]);
    const float s = 1.0f / (1.0f + std::exp(-g));
    out[i] = float_to_bf16(g * s * bf16_to_float(up[i]));
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void swiglu_backward_bf16(
    const uint16_t* grad, const uint16_t* gate, const uint16_t* up, uint16_t* d_gate,
    uint16_t* d_up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = bf16_to_float(gate[i]), u = bf16_to_float(up[i]), dy = bf16_to_float(grad[i]);
    const float s = 1.0f / (1.0f + std::exp(-g));
    d_gate[i] = float_to_bf16(dy * u * s * (1.0f + g * (1.0f - s)));
    d_up[i] = float_to_bf16(dy * g * s);
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
      const float a = bf16_to_float(xr[i]), b = bf16_to_float(xr[i + half]);
      o[i] = float_to_bf16(a * c[i] - sign * b * s[i]);
      o[i + half] = float_to_bf16(b * c[i + half] + sign * a * s[i + half]);
    }
  }
}

}  // namespace ptrain
