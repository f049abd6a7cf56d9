// Fused elementwise kernels of the decoder on raw bf16 buffers (no torch), vectorised by the
// compiler for AVX-512, AVX2 or baseline x86-64 (chosen at load time). Each is one pass over
// memory where the libtorch ops take several; math in fp32, one rounding to bf16 per output.
#pragma once

#include <cstdint>

namespace ptrain {

// SwiGLU: out = silu(gate) * up.
void swiglu_forward_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n);

// Its gradients: d_gate = grad * up * s * (1 + gate * (1 - s)) with s = sigmoid(gate),
// d_up = grad * silu(gate).
void swiglu_backward_bf16(const uint16_t* grad, const uint16_t* gate, const uint16_t* up,
                          uint16_t* d_gate, uint16_t* d_up, int64_t n);

// Rotary embedding of `rows` rows of `dim` values (non-interleaved: rotate_half pairs i and
// i + dim/2): out = x * cos + rotate_half(x) * sin, with row r using table row
// r / rows_per_table (the heads of one token share its cos/sin row, fp32, dim values each).
// `inverse` applies the transpose (the backward pass: sin negated).
void rope_bf16(const uint16_t* x, const float* cos, const float* sin, uint16_t* out, int64_t rows,
               int64_t rows_per_table, int64_t dim, bool inverse);

}  // namespace ptrain
