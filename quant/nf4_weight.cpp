#include "quant/nf4_weight.h"

#include <ATen/Parallel.h>

#include "core/error.h"

namespace ptrain {

namespace {

void check_storage(const Nf4Weight& w) {
  PTRAIN_ASSERT(w.storage.defined() && w.storage.scalar_type() == at::kByte &&
                    w.storage.dim() == 1 && w.storage.numel() >= w.layout.bytes,
                "NF4 buffer of {} bytes for a layout of {}",
                w.storage.defined() ? w.storage.numel() : 0, w.layout.bytes);
}

// `count` values of `dtype` from byte `offset` of the buffer, as a fresh tensor on its device:
// the buffer may start at any byte of a flat parameter, where a typed view could be misaligned.
at::Tensor read_as(const at::Tensor& storage, int64_t offset, int64_t count, at::ScalarType dtype) {
  return storage.narrow(0, offset, count * static_cast<int64_t>(c10::elementSize(dtype)))
      .clone()
      .view(dtype);
}

// A host table as a tensor on `device`.
template <size_t N>
at::Tensor table_on(const std::array<float, N>& values, at::Device device) {
  return torch::tensor(c10::ArrayRef<float>(values.data(), N), torch::kFloat).to(device);
}

// Every block's fp32 absmax [blocks] on the buffer's device.
at::Tensor block_absmax(const Nf4Weight& w) {
  const Nf4Layout& l = w.layout;
  if (!l.double_quant) return read_as(w.storage, l.absmax_offset, l.blocks, at::kFloat);
  at::Tensor codes = w.storage.narrow(0, l.absmax_offset, l.blocks).to(at::kLong);
  at::Tensor scale = read_as(w.storage, l.nested_absmax_offset, l.nested_blocks, at::kFloat)
                         .unsqueeze(1)
                         .expand({l.nested_blocks, Nf4Layout::kNestedBlock})
                         .reshape({-1})
                         .narrow(0, 0, l.blocks);
  at::Tensor offset = read_as(w.storage, l.offset_offset, 1, at::kFloat);
  // Two fp32 roundings (two kernels), as bitsandbytes and the CPU kernel: code * scale, then
  // + offset.
  at::Tensor scaled =
      table_on(signed_dynamic_map(), w.storage.device()).index_select(0, codes) * scale;
  return scaled + offset;
}

}  // namespace

Nf4Weight Nf4Weight::quantize(const at::Tensor& weight, bool double_quant) {
  PTRAIN_ASSERT(at::isFloatingType(weight.scalar_type()), "NF4 quantization of a {} tensor",
                c10::toString(weight.scalar_type()));
  Nf4Weight out;
  out.shape = weight.sizes().vec();
  out.dtype = weight.scalar_type();
  out.layout = Nf4Layout(weight.numel(), double_quant);
  out.storage = torch::zeros({out.layout.bytes}, torch::kUInt8);  // the kernels run on the CPU
  const Nf4Layout& l = out.layout;
  uint8_t* buffer = out.storage.data_ptr<uint8_t>();
  at::Tensor flat = weight.detach().to(at::kCPU).contiguous().view({-1});
  std::vector<float> absmax(static_cast<size_t>(l.blocks));
  // Blocks in parallel, each task converting only its own slice to fp32.
  at::parallel_for(0, l.blocks, 256, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * Nf4Layout::kBlock;
    const int64_t count = std::min(l.numel, end * Nf4Layout::kBlock) - first;
    at::Tensor values = flat.narrow(0, first, count).to(at::kFloat).contiguous();
    nf4_quantize_blocks(values.data_ptr<float>(), l, begin, end, buffer, absmax.data());
  });
  nf4_quantize_statistics(absmax.data(), l, buffer);
  out.storage = out.storage.to(weight.device());
  return out;
}

at::Tensor Nf4Weight::dequantize(at::ScalarType out_dtype) const {
  check_storage(*this);
  if (!storage.device().is_cpu()) {
    if (out_dtype == at::kBFloat16) {
      at::Tensor out = nf4_dequantize_bf16_on_device(*this);
      if (out.defined()) return out;
    }
    return nf4_dequantize_generic(*this, out_dtype);
  }
  const at::Tensor bytes = storage.contiguous();
  const uint8_t* buffer = bytes.data_ptr<uint8_t>();
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

at::Tensor nf4_dequantize_generic(const Nf4Weight& weight, at::ScalarType dtype) {
  check_storage(weight);
  const Nf4Layout& l = weight.layout;
  const at::Device device = weight.storage.device();
  const at::Tensor levels = table_on(kNf4Levels, device);
  const at::Tensor absmax = block_absmax(weight);
  at::Tensor out = torch::empty({l.numel}, weight.storage.options().dtype(dtype));
  constexpr int64_t kChunkBlocks = 16384;  // 1 Mi values
  for (int64_t first = 0; first < l.blocks; first += kChunkBlocks) {
    const int64_t blocks = std::min(kChunkBlocks, l.blocks - first);
    const int64_t begin = first * Nf4Layout::kBlock;  // even: a chunk starts on a byte
    const int64_t count = std::min(l.numel, (first + blocks) * Nf4Layout::kBlock) - begin;
    at::Tensor bytes = weight.storage.narrow(0, l.codes_offset + begin / 2, (count + 1) / 2);
    // Element 2j in the high nibble, 2j + 1 in the low one.
    at::Tensor codes = at::stack({at::bitwise_right_shift(bytes, 4), at::bitwise_and(bytes, 15)}, 1)
                           .view({-1})
                           .narrow(0, 0, count)
                           .to(at::kLong);
    at::Tensor scale = absmax.narrow(0, first, blocks)
                           .unsqueeze(1)
                           .expand({blocks, Nf4Layout::kBlock})
                           .reshape({-1})
                           .narrow(0, 0, count);
    // One fp32 product per value, rounded once into the output dtype by the copy.
    out.narrow(0, begin, count).copy_(levels.index_select(0, codes) * scale);
  }
  return out.view(weight.shape);
}

}  // namespace ptrain
