// NF4 dequantization on a CUDA device: the same result, bit for bit, as the CPU kernels of
// quant/nf4.h (fp32 level * absmax, rounded to bf16 to nearest even). Built only when the
// CUDA toolkit is found (PTRAIN_WITH_CUDA); the buffer and output live in device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "quant/nf4.h"

namespace ptrain {

// Dequantizes the whole weight: `buffer` (layout.bytes, device) -> `out` (layout.numel bf16 bits,
// device), asynchronously on `stream`. Returns the launch's error code.
cudaError_t nf4_dequantize_bf16_cuda(const uint8_t* buffer, const Nf4Layout& layout, uint16_t* out,
                                     cudaStream_t stream);

// The same, throwing RuntimeFailure (core/cuda/cuda_check.h: the call, file:line and `where`,
// "rank R on host H") when the launch fails.
void nf4_dequantize_bf16_cuda_checked(const uint8_t* buffer, const Nf4Layout& layout, uint16_t* out,
                                      cudaStream_t stream, const std::string& where);

}  // namespace ptrain
