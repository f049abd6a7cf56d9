// A build whose libtorch has no CUDA: no device kernel for NF4, so device buffers (of another
// backend) take nf4_dequantize_generic (quant/CMakeLists.txt picks this file or
// quant/cuda/nf4_device_cuda.cpp).
#include "quant/nf4_weight.h"

namespace ptrain {

at::Tensor nf4_dequantize_bf16_on_device(const Nf4Weight&) {
  return at::Tensor();
}

}  // namespace ptrain
