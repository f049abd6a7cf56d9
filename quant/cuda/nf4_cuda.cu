#include <cuda_bf16.h>

#include <algorithm>

#include "core/cuda/cuda_check.h"
#include "quant/cuda/nf4_cuda.h"

namespace ptrain {
namespace {

// The level and map tables travel as a kernel argument (1 KiB + 64 B, under the 4 KiB limit):
// no per-device constant memory to initialise, whichever device the caller has selected.
struct Tables {
  float levels[16];
  float dynamic_map[256];
};

__device__ float load_f32(const uint8_t* p) {  // the buffer may sit at any byte offset
  float v;
  memcpy(&v, p, sizeof(v));
  return v;
}

// One thread per code byte: two consecutive elements of one 64-block (blocks start at even
// elements, so a byte never straddles two blocks).
__global__ void dequantize_kernel(const Tables tables, const uint8_t* __restrict__ buffer,
                                  int64_t numel,
                                  int64_t absmax_offset, int64_t nested_offset,
                                  int64_t offset_offset, bool double_quant,
                                  uint16_t* __restrict__ out) {
  const int64_t byte = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t first = 2 * byte;
  if (first >= numel) return;
  const int64_t block = first / 64;
  float absmax;
  if (double_quant) {
    const float scale = load_f32(buffer + nested_offset + 4 * (block / 256));
    const float offset = load_f32(buffer + offset_offset);
    // Two fp32 roundings, as bitsandbytes and the CPU path: code * scale, then + offset.
    absmax = __fadd_rn(__fmul_rn(tables.dynamic_map[buffer[absmax_offset + block]], scale), offset);
  } else {
    absmax = load_f32(buffer + absmax_offset + 4 * block);
  }
  const uint8_t codes = buffer[byte];
  const __nv_bfloat16 hi = __float2bfloat16_rn(__fmul_rn(tables.levels[codes >> 4], absmax));
  out[first] = *reinterpret_cast<const uint16_t*>(&hi);
  if (first + 1 < numel) {
    const __nv_bfloat16 lo = __float2bfloat16_rn(__fmul_rn(tables.levels[codes & 0x0F], absmax));
    out[first + 1] = *reinterpret_cast<const uint16_t*>(&lo);
  }
}

}  // namespace

cudaError_t nf4_dequantize_bf16_cuda(const uint8_t* buffer, const Nf4Layout& layout, uint16_t* out,
                                     cudaStream_t stream) {
  Tables tables;
  std::copy(kNf4Levels.begin(), kNf4Levels.end(), tables.levels);
  std::copy(signed_dynamic_map().begin(), signed_dynamic_map().end(), tables.dynamic_map);
  if (layout.numel == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t bytes = layout.code_bytes();
  const unsigned grid = static_cast<unsigned>((bytes + threads - 1) / threads);
  dequantize_kernel<<<grid, threads, 0, stream>>>(tables, buffer, layout.numel, layout.absmax_offset,
                                                  layout.nested_absmax_offset,
                                                  layout.offset_offset, layout.double_quant, out);
  return cudaGetLastError();
}

void nf4_dequantize_bf16_cuda_checked(const uint8_t* buffer, const Nf4Layout& layout,
                                      uint16_t* out, cudaStream_t stream,
                                      const std::string& where) {
  PTRAIN_CUDA_CHECK(where, nf4_dequantize_bf16_cuda(buffer, layout, out, stream));
}

}  // namespace ptrain
