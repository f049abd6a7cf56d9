#include "model/projection.h"

#include <cmath>

#include "core/error.h"
#include "model/deferred_weights.h"
#include "model/llama_ops.h"

namespace ptrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// W in `dtype` on its buffer's device: the kernel Nf4Weight chooses by device, or the libtorch
// ops when the forward ran under a PortableKernelsGuard (the same values either way, bit for bit;
// model/llama_ops.h).
at::Tensor dequantize(const Nf4Weight& weight, at::ScalarType dtype, bool portable) {
  return portable ? nf4_dequantize_generic(weight, dtype) : weight.dequantize(dtype);
}

// x W^T with W dequantized from NF4 for the forward matmul and again for backward: no dense copy
// of W outlives the call, and W gets no gradient (the base is frozen). The byte buffer is saved as
// the registered tensor itself (not a copy of its data), so backward reads whatever storage it
// holds then: a sharding layer that freed it after forward gathers it again before backward.
class Nf4Linear : public torch::autograd::Function<Nf4Linear> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Nf4Weight weight) {
    const bool portable = portable_kernels_forced();
    at::Tensor out = at::matmul(x, dequantize(weight, x.scalar_type(), portable).t());
    ctx->saved_data["portable"] = portable;
    ctx->saved_data["bytes"] = weight.storage;
    ctx->saved_data["numel"] = weight.layout.numel;
    ctx->saved_data["double_quant"] = weight.layout.double_quant;
    ctx->saved_data["shape"] = weight.shape;
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    Nf4Weight weight;
    weight.storage = ctx->saved_data["bytes"].toTensor();
    weight.layout =
        Nf4Layout(ctx->saved_data["numel"].toInt(), ctx->saved_data["double_quant"].toBool());
    weight.shape = ctx->saved_data["shape"].toIntVector();
    at::Tensor grad = grad_outputs[0];
    const bool portable = ctx->saved_data["portable"].toBool();
    return {at::matmul(grad, dequantize(weight, grad.scalar_type(), portable)), at::Tensor()};
  }
};

// PEFT's nn.Dropout on the adapter input, drawing its mask from `generator` (never libtorch's
// global generator): zero with probability p, the rest scaled by 1 / (1 - p).
at::Tensor dropout(const at::Tensor& x, double p, at::Generator& generator) {
  at::Tensor keep = at::empty(x.sizes(), x.options().device(at::kCPU));
  keep.bernoulli_(1.0 - p, generator);
  return x * keep.div_(1.0 - p).to(x.device());
}

}  // namespace

double LoraOptions::scaling() const {
  return rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, bool bias, at::ScalarType dtype, bool nf4,
                               bool double_quant, bool deferred)
    : in_(in), out_(out), dtype_(dtype), generator_(at::make_generator<at::CPUGeneratorImpl>(0)) {
  if (nf4) {
    Nf4Weight format;
    format.shape = {out, in};
    format.dtype = dtype;
    format.layout = Nf4Layout(out * in, double_quant);
    register_buffer("weight_nf4", deferred ? deferred_tensor({format.layout.bytes}, torch::kUInt8)
                                           : torch::zeros({format.layout.bytes}, torch::kUInt8));
    nf4_format_ = std::move(format);
  } else {
    register_parameter("weight", deferred ? deferred_tensor({out, in}, dtype)
                                          : torch::empty({out, in}, torch::dtype(dtype)));
  }
  if (bias)
    register_parameter("bias", deferred ? deferred_tensor({out}, dtype)
                                        : torch::zeros({out}, torch::dtype(dtype)));
}

at::Tensor ProjectionImpl::parameter(const char* name) const {
  const at::Tensor* t = parameters_.find(name);
  return t ? *t : at::Tensor();
}

std::optional<Nf4Weight> ProjectionImpl::nf4() const {
  if (!nf4_format_) return std::nullopt;
  Nf4Weight weight = *nf4_format_;
  for (const auto& buffer : named_buffers(/*recurse=*/false))
    if (buffer.key() == "weight_nf4") weight.storage = buffer.value();
  return weight;
}

at::Tensor ProjectionImpl::dense() const {
  return parameter("weight");
}

at::Tensor ProjectionImpl::bias() const {
  return parameter("bias");
}

at::Tensor ProjectionImpl::lora_a() const {
  return has_lora() ? lora_a_->weight() : at::Tensor();
}

at::Tensor ProjectionImpl::lora_b() const {
  return has_lora() ? lora_b_->weight() : at::Tensor();
}

at::Tensor ProjectionImpl::forward(const at::Tensor& x) {
  const at::Tensor b = bias();
  at::Tensor y;
  if (nf4_format_) {
    y = Nf4Linear::apply(x, *nf4());
    if (b.defined()) y = y + b;
  } else {
    y = at::linear(x, dense(), b);
  }
  if (!has_lora()) return y;
  at::Tensor h = x;
  if (lora_options_.dropout > 0 && is_training()) h = dropout(h, lora_options_.dropout, generator_);
  at::Tensor a = lora_a().to(x.scalar_type()), b_up = lora_b().to(x.scalar_type());
  return y + at::matmul(at::matmul(h, a.t()), b_up.t()) * lora_options_.scaling();
}

void ProjectionImpl::set_weight(const at::Tensor& weight) {
  PTRAIN_ASSERT(weight.dim() == 2 && weight.size(0) == out_ && weight.size(1) == in_,
                "projection [{}, {}] given {}", out_, in_, shape_string(weight.sizes()));
  torch::NoGradGuard no_grad;
  if (!nf4_format_) {
    allocate_if_deferred(dense());
    dense().copy_(weight);
    return;
  }
  Nf4Weight q = Nf4Weight::quantize(weight, nf4_format_->layout.double_quant);
  allocate_if_deferred(nf4()->storage);
  nf4()->storage.copy_(q.storage);  // the registered buffer keeps its identity
  nf4_format_->dtype = weight.scalar_type();
}

void ProjectionImpl::set_nf4(const Nf4Weight& weight) {
  PTRAIN_CHECK(nf4_format_.has_value(), "set_nf4 on a dense projection");
  PTRAIN_ASSERT(
      weight.shape == nf4_format_->shape && weight.layout.bytes == nf4_format_->layout.bytes &&
          weight.layout.double_quant == nf4_format_->layout.double_quant,
      "NF4 weight {} does not fit projection [{}, {}]", shape_string(weight.shape), out_, in_);
  torch::NoGradGuard no_grad;
  allocate_if_deferred(nf4()->storage);
  nf4()->storage.copy_(weight.storage);
  nf4_format_->dtype = weight.dtype;
}

at::Tensor ProjectionImpl::base_weight(at::ScalarType dtype) const {
  if (nf4_format_) return nf4()->dequantize(dtype);
  return dense().detach().to(dtype);
}

at::Tensor ProjectionImpl::merged_weight(at::ScalarType dtype) const {
  torch::NoGradGuard no_grad;
  if (!has_lora()) return base_weight(dtype);
  const at::ScalarType acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor delta = at::matmul(lora_b().to(acc), lora_a().to(acc)) * lora_options_.scaling();
  return (base_weight(acc) + delta).to(dtype);
}

void ProjectionImpl::add_lora(const LoraOptions& options, at::Generator generator) {
  PTRAIN_CHECK(options.r > 0, "lora_r must be > 0, got {}", options.r);
  PTRAIN_ASSERT(!has_lora(), "projection already has a LoRA adapter");
  lora_options_ = options;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
  const at::ScalarType master = dtype_ == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor a = torch::empty({options.r, in_}, torch::dtype(master));
  a.uniform_(-bound, bound, generator);
  lora_a_ = register_module("lora_A", WeightModule(a));
  lora_b_ = register_module("lora_B",
                            WeightModule(torch::zeros({out_, options.r}, torch::dtype(master))));
}

}  // namespace ptrain
