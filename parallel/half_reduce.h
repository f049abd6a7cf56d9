// Reductions of 16-bit floating-point data (bf16, fp16) with fp32 accumulation, for backends whose
// transport has no such types (MPI). Values travel as raw 16-bit words; these kernels convert,
// accumulate in fp32 and round once to nearest-even.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace ptrain {

bool is_16bit_float(c10::ScalarType dtype);

// out[k] = round16(reduce over r < rows of value(in + r * row_stride)[k]) for k < n, where
// reduce is a sum (kSum), a sum times 1/rows (kAvg) or a max (kMax), accumulated in fp32.
// `out` may alias the first row.
void reduce_16bit_rows(const uint16_t* in, int rows, int64_t row_stride, int64_t n,
                       c10::ScalarType dtype, ReduceOp op, int divisor, uint16_t* out);

void widen_16bit(const uint16_t* in, int64_t n, c10::ScalarType dtype, float* out);
// out = round16(in * scale)
void narrow_to_16bit(const float* in, int64_t n, c10::ScalarType dtype, float scale, uint16_t* out);

}  // namespace ptrain
