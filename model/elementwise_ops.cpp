// SwiGLU and RoPE: the autograd wrappers of the fused CPU kernels (model/fused_kernels.h), their
// device-generic forms in libtorch ops, and the choice between them (PortableKernelsGuard). The
// declarations and the precision policy are in model/llama_ops.h.
#include "model/llama_ops.h"

#include <ATen/Parallel.h>

#include "core/error.h"
#include "model/fused_kernels.h"

namespace ptrain {

// ---------------------------------------------------------------- kernel choice

namespace {

thread_local bool portable_kernels = false;

// fp64 math for fp64 tensors (the tests' reference models), else fp32: the fused kernels' policy.
at::ScalarType math_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

PortableKernelsGuard::PortableKernelsGuard(bool portable) : previous_(portable_kernels) {
  portable_kernels = portable;
}

PortableKernelsGuard::~PortableKernelsGuard() {
  portable_kernels = previous_;
}

bool portable_kernels_forced() {
  return portable_kernels;
}

bool use_fused_cpu_kernel(const at::Tensor& t, at::ScalarType dtype) {
  return !portable_kernels && t.device().is_cpu() && t.scalar_type() == dtype;
}

// ---------------------------------------------------------------- RoPE

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// rope_bf16 over x [B, T, heads, d] (contiguous bf16, CPU), cos and sin [B, T, d] (contiguous
// fp32), parallel over tokens.
void rope_fused(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                bool inverse) {
  const int64_t heads = x.size(2), dim = x.size(3), rows = x.numel() / dim;
  const uint16_t* in = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  uint16_t* o = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const float *c = cos.data_ptr<float>(), *s = sin.data_ptr<float>();
  at::parallel_for(0, rows / heads, 64, [&](int64_t begin, int64_t end) {
    rope_bf16(in + begin * heads * dim, c + begin * dim, s + begin * dim, o + begin * heads * dim,
              (end - begin) * heads, heads, dim, inverse);
  });
}

// The same rotation in libtorch ops on x's device: x * cos + sign * rotate_half(x) * sin in the
// math dtype, rounded once to x's dtype (sign -1: the inverse, for backward).
at::Tensor rope_generic(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                        bool inverse) {
  const at::ScalarType math = math_dtype(x);
  at::Tensor v = x.to(math);
  at::Tensor c = cos.unsqueeze(2).to(math), s = sin.unsqueeze(2).to(math);  // [B, T, 1, d]
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-v.narrow(-1, half, half), v.narrow(-1, 0, half)}, -1);
  at::Tensor out = inverse ? v * c - rotated * s : v * c + rotated * s;
  return out.to(x.scalar_type());
}

class FusedRope : public torch::autograd::Function<FusedRope> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& cos,
                            const at::Tensor& sin) {
    at::Tensor x = x_in.contiguous();
    at::Tensor out = torch::empty_like(x);
    rope_fused(x, cos, sin, out, false);
    ctx->save_for_backward({cos, sin});
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    at::Tensor grad = grad_outputs[0].contiguous();
    at::Tensor dx = torch::empty_like(grad);
    rope_fused(grad, saved[0], saved[1], dx, true);
    return {dx, at::Tensor(), at::Tensor()};
  }
};

// Saves only the tables, as FusedRope: the rotation is linear in x.
class GenericRope : public torch::autograd::Function<GenericRope> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rope_generic(x, cos, sin, false);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    return {rope_generic(grad_outputs[0], saved[0], saved[1], true), at::Tensor(), at::Tensor()};
  }
};

void check_rope_inputs(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  PTRAIN_ASSERT(
      x.dim() == 4 && x.size(-1) % 2 == 0 && cos.dim() == 3 && cos.sizes() == sin.sizes() &&
          cos.size(0) == x.size(0) && cos.size(1) == x.size(1) && cos.size(2) == x.size(3),
      "rope over x {} with tables {}", shape_string(x.sizes()), shape_string(cos.sizes()));
}

}  // namespace

at::Tensor apply_rope_bthd(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope_inputs(x, cos, sin);
  if (use_fused_cpu_kernel(x, at::kBFloat16) && cos.scalar_type() == at::kFloat &&
      sin.scalar_type() == at::kFloat && cos.device().is_cpu() && sin.device().is_cpu())
    return FusedRope::apply(x, cos.contiguous(), sin.contiguous());
  return GenericRope::apply(x, cos, sin);
}

at::Tensor apply_rope_bthd_generic(const at::Tensor& x, const at::Tensor& cos,
                                   const at::Tensor& sin) {
  check_rope_inputs(x, cos, sin);
  return GenericRope::apply(x, cos, sin);
}

// ---------------------------------------------------------------- SwiGLU

namespace {

uint16_t* bf16_bits(const at::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
}

constexpr int64_t kElementwiseGrain = 32768;

class FusedSwiglu : public torch::autograd::Function<FusedSwiglu> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate_in,
                            const at::Tensor& up_in) {
    at::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
    at::Tensor out = torch::empty_like(gate);
    const uint16_t *g = bf16_bits(gate), *u = bf16_bits(up);
    uint16_t* o = bf16_bits(out);
    at::parallel_for(0, gate.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      swiglu_forward_bf16(g + begin, u + begin, o + begin, end - begin);
    });
    ctx->save_for_backward({gate, up});
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1];
    at::Tensor grad = grad_outputs[0].contiguous();
    at::Tensor d_gate = torch::empty_like(gate), d_up = torch::empty_like(up);
    const uint16_t *dy = bf16_bits(grad), *g = bf16_bits(gate), *u = bf16_bits(up);
    uint16_t *dg = bf16_bits(d_gate), *du = bf16_bits(d_up);
    at::parallel_for(0, gate.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      swiglu_backward_bf16(dy + begin, g + begin, u + begin, dg + begin, du + begin, end - begin);
    });
    return {d_gate, d_up};
  }
};

// FusedSwiglu's formulas in libtorch ops on the inputs' device, saving the same two inputs (in
// their own dtype): the math in fp32 (fp64), one rounding per output.
class GenericSwiglu : public torch::autograd::Function<GenericSwiglu> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const at::ScalarType math = math_dtype(gate);
    ctx->save_for_backward({gate, up});
    return (at::silu(gate.to(math)) * up.to(math)).to(gate.scalar_type());
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1];
    const at::ScalarType math = math_dtype(gate);
    at::Tensor g = gate.to(math), u = up.to(math), dy = grad_outputs[0].to(math);
    at::Tensor s = at::sigmoid(g);
    // d_gate = dy * u * s * (1 + g * (1 - s)), d_up = dy * g * s.
    at::Tensor d_gate = dy * u * s * (1 + g * (1 - s));
    at::Tensor d_up = dy * g * s;
    return {d_gate.to(gate.scalar_type()), d_up.to(up.scalar_type())};
  }
};

bool same_shape_and_dtype(const at::Tensor& gate, const at::Tensor& up) {
  return gate.sizes() == up.sizes() && gate.scalar_type() == up.scalar_type() &&
         gate.device() == up.device();
}

}  // namespace

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  if (same_shape_and_dtype(gate, up) && use_fused_cpu_kernel(gate, at::kBFloat16))
    return FusedSwiglu::apply(gate, up);
  return swiglu_generic(gate, up);
}

at::Tensor swiglu_generic(const at::Tensor& gate, const at::Tensor& up) {
  if (same_shape_and_dtype(gate, up)) return GenericSwiglu::apply(gate, up);
  return at::silu(gate) * up;
}

}  // namespace ptrain
