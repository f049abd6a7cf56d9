// An NF4-quantized weight as a libtorch object: the uint8 buffer of quant/nf4.h, its
// layout, and the weight's shape and original dtype; quantize from and dequantize to tensors,
// parallel over blocks.
//
// Devices: the buffer may live on any device (an FSDP flat parameter on a GPU, say), and
// dequantization chooses by its device: the CPU kernels of quant/nf4.h for a CPU buffer; for bf16
// of a device buffer the device kernel compiled into this build (the CUDA kernel of quant/cuda/
// when libtorch has CUDA), else nf4_dequantize_generic. Every path gives the same values bit for
// bit: fp32 level * absmax (absmax = code * scale + offset, two fp32 roundings, with double
// quantization), rounded once to the output dtype.
#pragma once

#include <torch/torch.h>

#include "quant/nf4.h"

namespace ptrain {

struct Nf4Weight {
  at::Tensor storage;  // uint8 [layout.bytes]
  Nf4Layout layout;
  std::vector<int64_t> shape;            // the dequantized weight's shape, e.g. [out, in]
  at::ScalarType dtype = at::kBFloat16;  // the dtype it was quantized from

  // Quantizes any floating-point tensor (converted to fp32 a few blocks at a time, on the CPU);
  // the buffer is placed on the weight's device.
  static Nf4Weight quantize(const at::Tensor& weight, bool double_quant = true);
  // The dequantized weight in `dtype` (bf16 rounded to nearest even; fp32/fp64: exact fp32
  // values), shaped `shape`, on the buffer's device (the kernel chosen as the header says).
  at::Tensor dequantize(at::ScalarType dtype = at::kBFloat16) const;
  int64_t numel() const { return layout.numel; }
};

// Nf4Weight::dequantize in libtorch ops on the buffer's device, any dtype: the path of a device
// with no kernel of its own, and what tests compare the kernels with. A million values at a time,
// so its temporaries stay small beside the weight.
at::Tensor nf4_dequantize_generic(const Nf4Weight& weight, at::ScalarType dtype);

// The bf16 dequantization of a device buffer by the device kernel compiled into this build, on
// the device's current stream; an undefined tensor when there is none for the buffer's device.
// Defined by quant/cuda/nf4_device_cuda.cpp when libtorch has CUDA, else by
// quant/nf4_device_none.cpp (quant/CMakeLists.txt chooses).
at::Tensor nf4_dequantize_bf16_on_device(const Nf4Weight& weight);

}  // namespace ptrain
