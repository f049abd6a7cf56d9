// An NF4-quantized weight as a libtorch object: the uint8 buffer of quant/nf4.h, its
// layout, and the weight's shape and original dtype; quantize from and dequantize to tensors,
// parallel over blocks.
#pragma once

#include <torch/torch.h>

#include "quant/nf4.h"

namespace ptrain {

struct Nf4Weight {
  at::Tensor storage;  // uint8 [layout.bytes]
  Nf4Layout layout;
  std::vector<int64_t> shape;            // the dequantized weight's shape, e.g. [out, in]
  at::ScalarType dtype = at::kBFloat16;  // the dtype it was quantized from

  // Quantizes any floating-point tensor (converted to fp32 a few blocks at a time).
  static Nf4Weight quantize(const at::Tensor& weight, bool double_quant = true);
  // The dequantized weight in `dtype` (bf16: the vectorised kernel; fp32/fp64: exact fp32
  // values), shaped `shape`.
  at::Tensor dequantize(at::ScalarType dtype = at::kBFloat16) const;
  int64_t numel() const { return layout.numel; }
};

}  // namespace ptrain
