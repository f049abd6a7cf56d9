#include "quant/nf4_weight.h"

#include <ATen/Parallel.h>

#include "core/error.h"

namespace ptrain {

Nf4Weight Nf4Weight::quantize(const at::Tensor& weight, bool double_quant) {
  PTRAIN_ASSERT(at::isFloatingType(weight.scalar_type()), "NF4 quantization of a {} tensor",
                c10::toString(weight.scalar_type()));
  Nf4Weight out;
  out.shape = weight.sizes().vec();
  out.dtype = weight.scalar_type();
  out.layout = Nf4Layout(weight.numel(), double_quant);
  out.storage = torch::zeros({out.layout.bytes}, torch::kUInt8);
  const Nf4Layout& l = out.layout;
  uint8_t* buffer = out.storage.data_ptr<uint8_t>();
  at::Tensor flat = weight.detach().contiguous().view({-1});
  std::vector<float> absmax(static_cast<size_t>(l.blocks));
  // Blocks in parallel, each task converting only its own slice to fp32.
  at::parallel_for(0, l.blocks, 256, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * Nf4Layout::kBlock;
    const int64_t count = std::min(l.numel, end * Nf4Layout::kBlock) - first;
    at::Tensor values = flat.narrow(0, first, count).to(at::kFloat).contiguous();
    nf4_quantize_blocks(values.data_ptr<float>(), l, begin, end, buffer, absmax.data());
  });
  nf4_quantize_statistics(absmax.data(), l, buffer);
  return out;
}

at::Tensor Nf4Weight::dequantize(at::ScalarType out_dtype) const {
  const uint8_t* buffer = storage.data_ptr<uint8_t>();
  const Nf4Layout& l = layout;
  const int64_t grain = 256;  // blocks per task: 16 Ki values
  if (out_dtype == at::kBFloat16) {
    at::Tensor out = torch::empty(shape, torch::kBFloat16);
    auto* bits = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
    at::parallel_for(0, l.blocks, grain, [&](int64_t begin, int64_t end) {
      nf4_dequantize_bf16(buffer, l, begin, end, bits);
    });
    return out;
  }
  at::Tensor out = torch::empty(shape, torch::kFloat);
  float* values = out.data_ptr<float>();
  at::parallel_for(0, l.blocks, grain, [&](int64_t begin, int64_t end) {
    nf4_dequantize_f32(buffer, l, begin, end, values);
  });
  return out_dtype == at::kFloat ? out : out.to(out_dtype);
}

}  // namespace ptrain
