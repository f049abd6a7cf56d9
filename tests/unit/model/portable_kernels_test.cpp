// The device-generic paths (what a GPU runs) against the fused CPU kernels, on the CPU: each op
// forward and backward in bf16 and fp32, against each other and against fp64 formulas written
// here; PortableKernelsGuard's choice; and a whole tiny model (dense, and NF4 base + LoRA) with the
// guard on vs off.
//
// Tolerances. A fused kernel and its generic form evaluate the same formula in fp32 and round each
// output once to bf16; they differ only in fp32 rounding (the fused file is built with fast math:
// glibc's vector expf, contractions), a few fp32 ulps (2^-21 relative) of the formula's terms. So
// per element they are at most one bf16 ulp apart (2^-8 to 2^-7 relative: round-to-nearest of two
// fp32 values closer than a bf16 ulp lands on the same or adjacent bf16 values), except where the
// terms cancel, when the fp32 difference itself (bounded by 2^-16 of the terms, a 32x margin over
// 2^-21) may exceed the small result's ulp. fp32 generic paths against the formula in fp64: the
// same fp32 bound.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>
#include <thread>

#include "model/llama.h"
#include "model/llama_config.h"
#include "model/llama_ops.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

constexpr double kFp32Terms = 1.0 / 65536;  // 2^-16 of the terms' magnitude (see the top)

// The bf16 value of every element as a signed position on the number line (sign-magnitude bits
// to two's complement), so adjacent bf16 values are one apart and -0 == +0.
at::Tensor bf16_rank(const at::Tensor& t) {
  at::Tensor bits = t.contiguous().view(at::kShort).to(at::kInt);
  at::Tensor magnitude = bits.bitwise_and(0x7FFF);
  return at::where(bits.lt(0), -magnitude, magnitude);
}

// Elements of bf16 `a` and `b` more than one bf16 ulp apart and further apart than
// kFp32Terms * terms (NaN only where both are NaN); prints the first few.
int64_t bf16_mismatches(const at::Tensor& a, const at::Tensor& b, const at::Tensor& terms,
                        const std::string& what) {
  at::Tensor da = a.to(at::kDouble), db = b.to(at::kDouble);
  at::Tensor both_nan = da.isnan().logical_and(db.isnan());
  at::Tensor ulps = (bf16_rank(a) - bf16_rank(b)).abs();
  at::Tensor close = ulps.le(1).logical_or((da - db).abs().le(terms * kFp32Terms));
  at::Tensor bad = close.logical_or(both_nan).logical_not();
  const int64_t count = bad.sum().item<int64_t>();
  at::Tensor where = bad.reshape({-1}).nonzero().reshape({-1});
  for (int64_t i = 0; i < std::min<int64_t>(count, 5); ++i) {
    const int64_t k = where[i].item<int64_t>();
    ADD_FAILURE() << what << " element " << k << ": " << da.reshape({-1})[k].item<double>()
                  << " vs " << db.reshape({-1})[k].item<double>();
  }
  return count;
}

// |got - want| <= rel * |want| + abs_terms * terms everywhere (NaN where want is NaN).
bool within(const at::Tensor& got, const at::Tensor& want, double rel, const at::Tensor& terms,
            double abs_terms) {
  at::Tensor g = got.to(at::kDouble);
  at::Tensor ok = (g - want).abs().le(want.abs() * rel + terms * abs_terms);
  return ok.logical_or(g.isnan().logical_and(want.isnan())).all().item<bool>();
}

std::string grad_fn_name(const at::Tensor& t) {
  return t.grad_fn() ? t.grad_fn()->name() : "(none)";
}

// ---------------------------------------------------------------- SwiGLU

struct SwigluCase {
  at::Tensor gate, up, grad;
};

// Gates over [-20, 20] and through silu's minimum (g = -1.2785, where d_gate's factor
// 1 + g (1 - s) cancels), zeros and a NaN; an odd count over several parallel chunks. (No
// infinities: the fused kernel is built with fast math, which promises nothing for them.)
SwigluCase swiglu_case(at::ScalarType dtype) {
  torch::manual_seed(8);
  const int64_t n = 100003;
  at::Tensor gate = torch::randn({n}) * 4;
  gate.narrow(0, 0, 2000).copy_(torch::linspace(-1.4, -1.15, 2000));
  gate.narrow(0, 2000, 6).copy_(torch::tensor({0.0f, -0.0f, NAN, 20.0f, -20.0f, 1e-30f}));
  return {gate.to(dtype), torch::randn({n}).to(dtype), torch::randn({n}).to(dtype)};
}

struct SwigluResult {
  at::Tensor out, d_gate, d_up;
};

SwigluResult run_swiglu(const SwigluCase& c, bool generic) {
  at::Tensor gate = c.gate.clone().requires_grad_(true), up = c.up.clone().requires_grad_(true);
  at::Tensor out = generic ? swiglu_generic(gate, up) : swiglu(gate, up);
  out.backward(c.grad);
  return {out.detach(), gate.grad(), up.grad()};
}

// The fp64 formulas of the same (rounded) inputs, and the magnitude of their terms.
struct SwigluReference {
  at::Tensor out, d_gate, d_up, out_terms, d_gate_terms, d_up_terms;
};

SwigluReference swiglu_reference(const SwigluCase& c) {
  at::Tensor g = c.gate.to(at::kDouble), u = c.up.to(at::kDouble), dy = c.grad.to(at::kDouble);
  at::Tensor s = at::sigmoid(g);
  return {g * s * u,         dy * u * s * (1 + g * (1 - s)),     dy * g * s,
          (g * s * u).abs(), (dy * u * s).abs() * (1 + g.abs()), (dy * g * s).abs()};
}

TEST(PortableKernels, SwigluGenericAndFusedBf16AreWithinOneUlpForwardAndBackward) {
  const SwigluCase c = swiglu_case(at::kBFloat16);
  const SwigluResult fused = run_swiglu(c, false), generic = run_swiglu(c, true);
  const SwigluReference ref = swiglu_reference(c);
  EXPECT_EQ(bf16_mismatches(generic.out, fused.out, ref.out_terms, "out"), 0);
  EXPECT_EQ(bf16_mismatches(generic.d_gate, fused.d_gate, ref.d_gate_terms, "d_gate"), 0);
  EXPECT_EQ(bf16_mismatches(generic.d_up, fused.d_up, ref.d_up_terms, "d_up"), 0);
  // Both against fp64: one bf16 rounding (2^-9 relative, 2^-8 with the fp32 math) each.
  for (const SwigluResult* r : {&fused, &generic}) {
    EXPECT_TRUE(within(r->out, ref.out, 1.0 / 256, ref.out_terms, kFp32Terms));
    EXPECT_TRUE(within(r->d_gate, ref.d_gate, 1.0 / 256, ref.d_gate_terms, kFp32Terms));
    EXPECT_TRUE(within(r->d_up, ref.d_up, 1.0 / 256, ref.d_up_terms, kFp32Terms));
  }
}

TEST(PortableKernels, SwigluGenericFp32MatchesTheFp64FormulaAndTheLibtorchOps) {
  const SwigluCase c = swiglu_case(at::kFloat);
  const SwigluResult generic = run_swiglu(c, true);
  const SwigluReference ref = swiglu_reference(c);
  // fp32 math, no rounding to a narrower type: only the fp32 bound.
  EXPECT_TRUE(within(generic.out, ref.out, 0, ref.out_terms, kFp32Terms));
  EXPECT_TRUE(within(generic.d_gate, ref.d_gate, 0, ref.d_gate_terms, kFp32Terms));
  EXPECT_TRUE(within(generic.d_up, ref.d_up, 0, ref.d_up_terms, kFp32Terms));
  // swiglu() on fp32 CPU tensors is the generic path (the fused kernels are bf16 only).
  at::Tensor gate = c.gate.clone().requires_grad_(true);
  EXPECT_NE(grad_fn_name(swiglu(gate, c.up)).find("GenericSwiglu"), std::string::npos);
  // Autograd through libtorch's own silu: the same values within the fp32 bound.
  at::Tensor up = c.up.clone().requires_grad_(true);
  at::Tensor plain = at::silu(gate) * up;
  plain.backward(c.grad);
  EXPECT_TRUE(within(generic.out, plain.detach().to(at::kDouble), 0, ref.out_terms, kFp32Terms));
  EXPECT_TRUE(within(generic.d_gate, gate.grad().to(at::kDouble), 0, ref.d_gate_terms, kFp32Terms));
  EXPECT_TRUE(within(generic.d_up, up.grad().to(at::kDouble), 0, ref.d_up_terms, kFp32Terms));
}

// ---------------------------------------------------------------- RoPE

struct RopeCase {
  at::Tensor x, grad, cos, sin;
};

// x [B, T, heads, d] with positions up to 5000 (large angles), the tables of the tiny preset.
RopeCase rope_case(at::ScalarType dtype) {
  torch::manual_seed(9);
  const LlamaConfig c = llama_preset("tiny");
  const int64_t heads = 3, d = c.head_dim;
  at::Tensor positions =
      torch::tensor({{0, 1, 2, 0, 1, 5, 9, 4999}, {3, 4, 5, 6, 7, 8, 100, 2048}}, torch::kLong);
  auto [cos, sin] = rope_tables(rope_inv_freq(c), positions);
  return {torch::randn({2, 8, heads, d}).to(dtype), torch::randn({2, 8, heads, d}).to(dtype), cos,
          sin};
}

at::Tensor rotate_half(const at::Tensor& v) {
  const int64_t half = v.size(-1) / 2;
  return at::cat({-v.narrow(-1, half, half), v.narrow(-1, 0, half)}, -1);
}

struct RopeResult {
  at::Tensor out, dx;
};

RopeResult run_rope(const RopeCase& c, bool generic) {
  at::Tensor x = c.x.clone().requires_grad_(true);
  at::Tensor out =
      generic ? apply_rope_bthd_generic(x, c.cos, c.sin) : apply_rope_bthd(x, c.cos, c.sin);
  out.backward(c.grad);
  return {out.detach(), x.grad()};
}

// fp64: out = x cos + rotate_half(x) sin; dx = g cos - rotate_half(g sin) (rotate_half^T =
// -rotate_half); the terms' magnitude |v| + |rotate_half(v)| (|cos|, |sin| <= 1).
struct RopeReference {
  at::Tensor out, dx, out_terms, dx_terms;
};

RopeReference rope_reference(const RopeCase& c) {
  at::Tensor x = c.x.to(at::kDouble), g = c.grad.to(at::kDouble);
  at::Tensor cd = c.cos.to(at::kDouble).unsqueeze(2), sd = c.sin.to(at::kDouble).unsqueeze(2);
  return {x * cd + rotate_half(x) * sd, g * cd - rotate_half(g * sd),
          x.abs() + rotate_half(x).abs(), g.abs() + rotate_half(g).abs()};
}

TEST(PortableKernels, RopeGenericAndFusedBf16AreWithinOneUlpForwardAndBackward) {
  const RopeCase c = rope_case(at::kBFloat16);
  const RopeResult fused = run_rope(c, false), generic = run_rope(c, true);
  const RopeReference ref = rope_reference(c);
  EXPECT_EQ(bf16_mismatches(generic.out, fused.out, ref.out_terms, "out"), 0);
  EXPECT_EQ(bf16_mismatches(generic.dx, fused.dx, ref.dx_terms, "dx"), 0);
  for (const RopeResult* r : {&fused, &generic}) {
    EXPECT_TRUE(within(r->out, ref.out, 1.0 / 256, ref.out_terms, kFp32Terms));
    EXPECT_TRUE(within(r->dx, ref.dx, 1.0 / 256, ref.dx_terms, kFp32Terms));
  }
}

TEST(PortableKernels, RopeGenericFp32MatchesTheFp64FormulaAndHuggingFacesForm) {
  const RopeCase c = rope_case(at::kFloat);
  const RopeResult generic = run_rope(c, true);
  const RopeReference ref = rope_reference(c);
  EXPECT_TRUE(within(generic.out, ref.out, 0, ref.out_terms, kFp32Terms));
  EXPECT_TRUE(within(generic.dx, ref.dx, 0, ref.dx_terms, kFp32Terms));
  // apply_rope (Hugging Face's [B, heads, T, d] form), differentiated by autograd.
  at::Tensor x = c.x.clone().requires_grad_(true);
  at::Tensor hf = apply_rope(x.transpose(1, 2), c.cos, c.sin).transpose(1, 2);
  hf.backward(c.grad);
  EXPECT_TRUE(within(generic.out, hf.detach().to(at::kDouble), 0, ref.out_terms, kFp32Terms));
  EXPECT_TRUE(within(generic.dx, x.grad().to(at::kDouble), 0, ref.dx_terms, kFp32Terms));
}

// ---------------------------------------------------------------- the guard

TEST(PortableKernels, TheGuardForcesTheGenericPathOnThisThreadAndNests) {
  at::Tensor gate = torch::randn({4, 6}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor up = torch::randn({4, 6}).to(at::kBFloat16);
  const RopeCase c = rope_case(at::kBFloat16);
  at::Tensor x = c.x.clone().requires_grad_(true);
  auto swiglu_fn = [&] { return grad_fn_name(swiglu(gate, up)); };
  auto rope_fn = [&] { return grad_fn_name(apply_rope_bthd(x, c.cos, c.sin)); };
  EXPECT_FALSE(portable_kernels_forced());
  EXPECT_NE(swiglu_fn().find("FusedSwiglu"), std::string::npos) << swiglu_fn();
  EXPECT_NE(rope_fn().find("FusedRope"), std::string::npos) << rope_fn();
  {
    PortableKernelsGuard portable;
    EXPECT_TRUE(portable_kernels_forced());
    EXPECT_FALSE(use_fused_cpu_kernel(gate, at::kBFloat16));
    EXPECT_NE(swiglu_fn().find("GenericSwiglu"), std::string::npos) << swiglu_fn();
    EXPECT_NE(rope_fn().find("GenericRope"), std::string::npos) << rope_fn();
    bool other_thread_forced = true;
    std::thread([&] { other_thread_forced = portable_kernels_forced(); }).join();
    EXPECT_FALSE(other_thread_forced);
    {
      PortableKernelsGuard fused(false);
      EXPECT_NE(swiglu_fn().find("FusedSwiglu"), std::string::npos) << swiglu_fn();
    }
    EXPECT_NE(swiglu_fn().find("GenericSwiglu"), std::string::npos) << swiglu_fn();
  }
  EXPECT_FALSE(portable_kernels_forced());
  EXPECT_TRUE(use_fused_cpu_kernel(gate, at::kBFloat16));
  EXPECT_FALSE(use_fused_cpu_kernel(gate.to(at::kFloat), at::kBFloat16));
}

TEST(PortableKernels, MasksAndTablesAreBuiltOnTheirInputsDevice) {
  // The meta device stands in for a GPU: a tensor created on the CPU inside these would either
  // land on the CPU or fail to combine with the meta inputs.
  const at::Device meta(at::kMeta);
  at::Tensor ids = torch::zeros({2, 6}, torch::dtype(at::kLong).device(meta));
  EXPECT_EQ(packed_causal_mask(ids, 3).device(), meta);
  EXPECT_EQ(cached_causal_mask(4, 2, 0, meta).device(), meta);
  auto [cos, sin] = rope_tables(rope_inv_freq(micro_config()), ids);
  EXPECT_EQ(cos.device(), meta);
  EXPECT_EQ(sin.device(), meta);
}

// ---------------------------------------------------------------- a whole model, guard on vs off

PackedBatch tiny_batch() {
  return make_packed_batch(
      {{{3, 1, 4, 1, 5, 9, 2, 6}, {5, 3, 5}, {200, 100, 50}}, {{8, 9, 7, 9, 3, 2, 3, 8, 4}, {10}}},
      16);
}

double relative(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm().clamp_min(1e-30)).item<double>();
}

// The fp32 model holds exactly the same values: every op but the fused ones is shared, and in fp32
// the fused kernels (bf16 only) are not used either way, while NF4 dequantizes to the same bits
// on both paths. So the guard must change nothing at all.
void expect_identical(const ModelRun& on, const ModelRun& off) {
  EXPECT_EQ(on.loss, off.loss);
  ASSERT_EQ(on.grads.size(), off.grads.size());
  for (const auto& [name, grad] : off.grads)
    EXPECT_TRUE(on.grads.at(name).equal(grad)) << name << ": " << relative(on.grads.at(name), grad);
}

// bf16: the paths differ only in the roundings of SwiGLU and RoPE outputs (at most one ulp each,
// in a few elements: 2 in 100k for SwiGLU above, none for RoPE); everything downstream is the
// same ops. Such perturbations are far below the model's own bf16 rounding noise, its distance
// from the same values in fp32 (loss 4e-5 relative, gradients up to 1-2% in relative norm here),
// so: the loss within 2^-9 relative (a quarter of a bf16 ulp of a sum the model keeps in fp32),
// each gradient within 2^-6 in relative norm, and the two paths closer to each other than either
// is to fp32. (On this model they agree bit for bit.) A wrong sign or a swapped half in either
// generic op moves gradients by O(1); the mutation checks of the change did exactly that.
void expect_bf16_close(const ModelRun& on, const ModelRun& off) {
  EXPECT_LE(std::fabs(on.loss - off.loss), std::fabs(off.loss) / 512)
      << on.loss << " vs " << off.loss;
  ASSERT_EQ(on.grads.size(), off.grads.size());
  for (const auto& [name, grad] : off.grads)
    EXPECT_LE(relative(on.grads.at(name), grad), 1.0 / 64) << name;
}

// The fp32 model with the bf16 model's values (weights, NF4 bytes, LoRA masters).
LlamaForCausalLM fp32_copy(const LlamaForCausalLM& bf16, bool nf4_lora) {
  LlamaForCausalLM fp32 = tiny_model(at::kFloat, nf4_lora);
  torch::NoGradGuard no_grad;
  for (const auto& p : bf16->named_parameters()) fp32->named_parameters()[p.key()].copy_(p.value());
  for (const auto& b : bf16->named_buffers()) fp32->named_buffers()[b.key()].copy_(b.value());
  return fp32;
}

TEST(PortableKernels, Bf16ModelLossAndGradientsAgreeWithTheGuardOnAndOff) {
  for (bool nf4_lora : {false, true}) {
    SCOPED_TRACE(nf4_lora ? "NF4 base + LoRA" : "dense");
    LlamaForCausalLM model = tiny_model(at::kBFloat16, nf4_lora);
    const PackedBatch batch = tiny_batch();
    const ModelRun off = run_model(model, batch, false), on = run_model(model, batch, true);
    ASSERT_FALSE(off.grads.empty());
    expect_bf16_close(on, off);
    // The bound's yardstick: the same values in fp32 are further from either bf16 run.
    LlamaForCausalLM fp32 = fp32_copy(model, nf4_lora);
    const ModelRun exact = run_model(fp32, batch, false);
    double noise = 0, paths = 0;
    for (const auto& [name, grad] : exact.grads) {
      noise = std::max(noise, relative(off.grads.at(name), grad));
      paths = std::max(paths, relative(on.grads.at(name), off.grads.at(name)));
    }
    EXPECT_LT(paths, noise) << "the two bf16 paths differ more than bf16 differs from fp32";
  }
}

TEST(PortableKernels, Fp32ModelLossAndGradientsAreIdenticalWithTheGuardOnAndOff) {
  for (bool nf4_lora : {false, true}) {
    SCOPED_TRACE(nf4_lora ? "NF4 base + LoRA" : "dense");
    LlamaForCausalLM model = tiny_model(at::kFloat, nf4_lora);
    const PackedBatch batch = tiny_batch();
    const ModelRun off = run_model(model, batch, false), on = run_model(model, batch, true);
    ASSERT_FALSE(off.grads.empty());
    expect_identical(on, off);
  }
}

}  // namespace
}  // namespace ptrain
