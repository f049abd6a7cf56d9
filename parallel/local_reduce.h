// Local reduction kernels for backends that reduce on the host after moving raw data (MPI).
// Rows of floating-point data (fp32, fp64, bf16, fp16) are reduced element-wise with fp32
// accumulation (fp64 for fp64) in row order and rounded once, so every rank computing the same
// chunk gets the same bits, and 16-bit results are the correctly rounded fp32 sum.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace ptrain {

bool is_16bit_float(c10::ScalarType dtype);
// fp32, fp64, bf16 and fp16 have a local reduction kernel.
bool has_local_reduce(c10::ScalarType dtype);

// out[k] = reduce over r < rows of in[r * row_stride + k], for k < n (element offsets), where
// reduce is a sum (kSum), the sum divided by `divisor` (kAvg) or a max (kMax). `out` may alias
// the first row.
void reduce_rows(const void* in, int rows, int64_t row_stride, int64_t n, c10::ScalarType dtype,
                 ReduceOp op, int divisor, void* out);

// 16-bit <-> fp32, for reductions done by MPI in fp32. narrow: out = round16(in / divisor).
void widen_16bit(const uint16_t* in, int64_t n, c10::ScalarType dtype, float* out);
void narrow_to_16bit(const float* in, int64_t n, c10::ScalarType dtype, int divisor, uint16_t* out);

}  // namespace ptrain
