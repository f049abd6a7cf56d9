#include "model/projection.h"

#include <cmath>

#include "core/error.h"
#include "model/llama_ops.h"

namespace ptrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// x W^T with W dequantized from NF4 for the forward matmul and again for backward: no dense copy
// of W outlives the call, and W gets no gradient (the base is frozen).
class Nf4Linear : public torch::autograd::Function<Nf4Linear> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Nf4Weight* weight) {
    ctx->saved_data["weight"] = reinterpret_cast<int64_t>(weight);
    return at::matmul(x, weight->dequantize(x.scalar_type()).t());
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto* weight = reinterpret_cast<const Nf4Weight*>(ctx->saved_data["weight"].toInt());
    at::Tensor grad = grad_outputs[0];
    return {at::matmul(grad, weight->dequantize(grad.scalar_type())), at::Tensor()};
  }
};

}  // namespace

double LoraOptions::scaling() const {
  return rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, bool bias, at::ScalarType dtype, bool nf4,
                               bool double_quant)
    : in_(in), out_(out), dtype_(dtype) {
  if (nf4) {
    Nf4Weight w;
    w.shape = {out, in};
    w.dtype = dtype;
    w.layout = Nf4Layout(out * in, double_quant);
    w.storage = register_buffer("weight_nf4", torch::zeros({w.layout.bytes}, torch::kUInt8));
    nf4_ = std::move(w);
  } else {
    weight_ = register_parameter("weight", torch::empty({out, in}, torch::dtype(dtype)));
  }
  if (bias) bias_ = register_parameter("bias", torch::zeros({out}, torch::dtype(dtype)));
}

at::Tensor ProjectionImpl::forward(const at::Tensor& x) {
  at::Tensor y;
  if (nf4_) {
    y = Nf4Linear::apply(x, &*nf4_);
    if (bias_.defined()) y = y + bias_;
  } else {
    y = at::linear(x, weight_, bias_);
  }
  if (!lora_a_.defined()) return y;
  at::Tensor h = x;
  if (lora_.dropout > 0 && is_training()) h = at::dropout(h, lora_.dropout, /*train=*/true);
  at::Tensor a = lora_a_.to(x.scalar_type()), b = lora_b_.to(x.scalar_type());
  return y + at::matmul(at::matmul(h, a.t()), b.t()) * lora_.scaling();
}

void ProjectionImpl::set_weight(const at::Tensor& weight) {
  PTRAIN_ASSERT(weight.dim() == 2 && weight.size(0) == out_ && weight.size(1) == in_,
                "projection [{}, {}] given {}", out_, in_, shape_string(weight.sizes()));
  torch::NoGradGuard no_grad;
  if (!nf4_) {
    weight_.copy_(weight);
    return;
  }
  Nf4Weight q = Nf4Weight::quantize(weight, nf4_->layout.double_quant);
  nf4_->storage.copy_(q.storage);  // the registered buffer keeps its identity
  nf4_->dtype = weight.scalar_type();
}

void ProjectionImpl::set_nf4(const Nf4Weight& weight) {
  PTRAIN_CHECK(nf4_.has_value(), "set_nf4 on a dense projection");
  PTRAIN_ASSERT(weight.shape == nf4_->shape && weight.layout.bytes == nf4_->layout.bytes &&
                    weight.layout.double_quant == nf4_->layout.double_quant,
                "NF4 weight {} does not fit projection [{}, {}]", shape_string(weight.shape), out_,
                in_);
  torch::NoGradGuard no_grad;
  nf4_->storage.copy_(weight.storage);
  nf4_->dtype = weight.dtype;
}

at::Tensor ProjectionImpl::base_weight(at::ScalarType dtype) const {
  if (nf4_) return nf4_->dequantize(dtype);
  return weight_.detach().to(dtype);
}

at::Tensor ProjectionImpl::merged_weight(at::ScalarType dtype) const {
  torch::NoGradGuard no_grad;
  if (!lora_a_.defined()) return base_weight(dtype);
  const at::ScalarType acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor delta = at::matmul(lora_b_.to(acc), lora_a_.to(acc)) * lora_.scaling();
  return (base_weight(acc) + delta).to(dtype);
}

void ProjectionImpl::add_lora(const LoraOptions& options, at::Generator generator) {
  PTRAIN_CHECK(options.r > 0, "lora_r must be > 0, got {}", options.r);
  PTRAIN_ASSERT(!lora_a_.defined(), "projection already has a LoRA adapter");
  lora_ = options;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
  const at::ScalarType master = dtype_ == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor a = torch::empty({options.r, in_}, torch::dtype(master));
  a.uniform_(-bound, bound, generator);
  auto a_module = register_module("lora_A", std::make_shared<torch::nn::Module>());
  lora_a_ = a_module->register_parameter("weight", a);
  auto b_module = register_module("lora_B", std::make_shared<torch::nn::Module>());
  lora_b_ =
      b_module->register_parameter("weight", torch::zeros({out_, options.r}, torch::dtype(master)));
}

}  // namespace ptrain
