#include <cuda_bf16.h>

#include "trainer/quant/cuda/nf4_cuda.h"

namespace ptrain {
namespace {

__constant__ float kLevels[16];
__constant__ float kDynamicMap[256];

// One thread per code byte: two consecutive elements of one 64-block (blocks start at even
// elements, so a byte never straddles two blocks).
__global__ void dequantize_kernel(const uint8_t* __restrict__ buffer, int64_t numel,
                                  int64_t absmax_offset, int64_t nested_offset,
                                  int64_t offset_offset, bool double_quant,
                                  uint16_t* __restrict__ out) {
  const int64_t byte = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t first = 2 * byte;
  if (first >= numel) return;
  const int64_t block = first / 64;
  float absmax;
  if (double_quant) {
    const float scale = reinterpret_cast<const float*>(buffer + nested_offset)[block / 256];
    const float offset = *reinterpret_cast<const float*>(buffer + offset_offset);
    // Two fp32 roundings, as bitsandbytes and the CPU path: code * scale, then + offset.
    absmax = __fadd_rn(__fmul_rn(kDynamicMap[buffer[absmax_offset + block]], scale), offset);
  } else {
    absmax = reinterpret_cast<const float*>(buffer + absmax_offset)[block];
  }
  const uint8_t codes = buffer[byte];
  const __nv_bfloat16 hi = __float2bfloat16_rn(__fmul_rn(kLevels[codes >> 4], absmax));
  out[first] = *reinterpret_cast<const uint16_t*>(&hi);
  if (first + 1 < numel) {
    const __nv_bfloat16 lo = __float2bfloat16_rn(__fmul_rn(kLevels[codes & 0x0F], absmax));
    out[first + 1] = *reinterpret_cast<const uint16_t*>(&lo);
  }
}

}  // namespace

cudaError_t nf4_dequantize_bf16_cuda(const uint8_t* buffer, const Nf4Layout& layout, uint16_t* out,
                                     cudaStream_t stream) {
  static const cudaError_t tables = [] {
    cudaError_t e = cudaMemcpyToSymbol(kLevels, kNf4Levels.data(), sizeof(float) * 16);
    if (e != cudaSuccess) return e;
    return cudaMemcpyToSymbol(kDynamicMap, signed_dynamic_map().data(), sizeof(float) * 256);
  }();
  if (tables != cudaSuccess) return tables;
  if (layout.numel == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t bytes = layout.code_bytes();
  const unsigned grid = static_cast<unsigned>((bytes + threads - 1) / threads);
  dequantize_kernel<<<grid, threads, 0, stream>>>(buffer, layout.numel, layout.absmax_offset,
                                                  layout.nested_absmax_offset,
                                                  layout.offset_offset, layout.double_quant, out);
  return cudaGetLastError();
}

}  // namespace ptrain
