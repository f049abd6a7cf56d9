// NF4 dequantization of CUDA tensors by the CUDA kernel (quant/cuda/nf4_cuda.h), on the current
// libtorch stream of the buffer's device, so it orders with the matmul that reads the result.
// Built into ptrain_quant only when libtorch itself has CUDA (quant/CMakeLists.txt); other device
// buffers take nf4_dequantize_generic.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "quant/cuda/nf4_cuda.h"
#include "quant/nf4_weight.h"

namespace ptrain {

at::Tensor nf4_dequantize_bf16_on_device(const Nf4Weight& weight) {
  if (!weight.storage.is_cuda()) return at::Tensor();
  const at::Device device = weight.storage.device();
  const c10::cuda::CUDAGuard guard(device);
  // The kernel reads the buffer at any byte offset (fp32 statistics included) but needs it dense.
  const at::Tensor bytes = weight.storage.contiguous();
  at::Tensor out = torch::empty(weight.shape, bytes.options().dtype(at::kBFloat16));
  nf4_dequantize_bf16_cuda_checked(bytes.data_ptr<uint8_t>(), weight.layout,
                                   reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()),
                                   c10::cuda::getCurrentCUDAStream(device.index()).stream(),
                                   "NF4 dequantization on " + device.str());
  return out;
}

}  // namespace ptrain
