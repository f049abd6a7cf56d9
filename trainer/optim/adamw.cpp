#include "trainer/optim/adamw.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ptrain {

AdamW::AdamW(std::vector<OptimizedTensor> tensors, AdamWOptions options)
    : tensors_(std::move(tensors)), options_(options) {
  for (const OptimizedTensor& t : tensors_) {
    PTRAIN_ASSERT(t.param.scalar_type() == at::kFloat && t.grad.sizes() == t.param.sizes(),
                  "AdamW optimizes fp32 tensors with gradients of their shape");
    exp_avg_.push_back(torch::zeros_like(t.param));
    exp_avg_sq_.push_back(torch::zeros_like(t.param));
  }
}

namespace {

struct StepConstants {
  float decay, one_minus_b1, b2, one_minus_b2, bias2_sqrt, eps, step_size;
};

// One pass over [begin, end) of a contiguous fp32 parameter, its gradient and moments: what
// the libtorch ops of the generic path compute (lerp, mul + addcmul, sqrt / c + eps, addcdiv),
// element by element in fp32, without their five passes and the temporary denominator.
// Vectorized by the compiler (target clones; this file is built with -fno-math-errno so the
// square root vectorizes).
__attribute__((target_clones("avx512f", "avx2", "default"))) void adamw_cpu_block(
    float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
    int64_t from, int64_t to, bool decays, const StepConstants& c) {
  for (int64_t i = from; i < to; ++i) {
    float param = decays ? p[i] * c.decay : p[i];
    const float grad = g[i];
    const float mi = m[i] + c.one_minus_b1 * (grad - m[i]);  // lerp with weight < 0.5
    const float vi = v[i] * c.b2 + c.one_minus_b2 * (grad * grad);
    m[i] = mi;
    v[i] = vi;
    param += -c.step_size * (mi / (std::sqrt(vi) / c.bias2_sqrt + c.eps));
    p[i] = param;
  }
}

void adamw_cpu_range(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end,
                     bool decays, const StepConstants& c) {
  at::parallel_for(begin, end, int64_t{1} << 15, [&](int64_t from, int64_t to) {
    adamw_cpu_block(p, g, m, v, from, to, decays, c);
  });
}

}  // namespace

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double bias2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
  const double step_size = lr / bias1;
  const double bias2_sqrt = std::sqrt(bias2);
  const double decay = 1.0 - lr * options_.weight_decay;
  const StepConstants c{static_cast<float>(decay),      static_cast<float>(1.0 - b1),
                        static_cast<float>(b2),         static_cast<float>(1.0 - b2),
                        static_cast<float>(bias2_sqrt), static_cast<float>(options_.eps),
                        static_cast<float>(step_size)};
  for (size_t i = 0; i < tensors_.size(); ++i) {
    at::Tensor& p = tensors_[i].param;
    const at::Tensor& g = tensors_[i].grad;
    const auto& ranges = tensors_[i].decay_ranges;
    if (p.is_cpu() && p.is_contiguous() && g.is_contiguous()) {
      // The fused pass, segment by segment: decay ranges and the gaps between them.
      int64_t at = 0;
      auto run = [&](int64_t begin, int64_t end, bool decays) {
        if (end > begin)
          adamw_cpu_range(p.data_ptr<float>(), g.data_ptr<float>(), exp_avg_[i].data_ptr<float>(),
                          exp_avg_sq_[i].data_ptr<float>(), begin, end,
                          decays && options_.weight_decay != 0, c);
      };
      std::vector<std::pair<int64_t, int64_t>> sorted(ranges.begin(), ranges.end());
      std::sort(sorted.begin(), sorted.end());
      for (const auto& [begin, end] : sorted) {
        run(at, begin, false);
        run(begin, end, true);
        at = end;
      }
      run(at, p.numel(), false);
      continue;
    }
    // Any device: the same update as libtorch ops.
    if (options_.weight_decay != 0)
      for (const auto& [begin, end] : ranges) p.narrow(0, begin, end - begin).mul_(decay);
    exp_avg_[i].lerp_(g, 1.0 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    at::Tensor denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(options_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

nlohmann::json AdamW::state() const {
  return {{"steps", steps_}};
}

void AdamW::restore(const nlohmann::json& state) {
  PTRAIN_CHECK(state.is_object() && state.contains("steps") && state["steps"].is_number_integer() &&
                   state["steps"].get<int64_t>() >= 0,
               "optimizer state: expected {{\"steps\": n >= 0}}, got {}", state.dump());
  steps_ = state["steps"].get<int64_t>();
}

double squared_norm(const std::vector<OptimizedTensor>& tensors) {
  // fp64 over chunks: a whole-tensor fp64 copy would cost 2x an fp32 gradient's memory.
  constexpr int64_t kChunk = int64_t{1} << 20;
  at::Tensor sum;
  for (const OptimizedTensor& t : tensors) {
    const at::Tensor flat = t.grad.reshape({-1});
    for (int64_t begin = 0; begin < flat.numel(); begin += kChunk) {
      const at::Tensor chunk =
          flat.narrow(0, begin, std::min(kChunk, flat.numel() - begin)).to(at::kDouble);
      // ATen's own reduction: BLAS dot would start OpenBLAS's threads beside libtorch's.
      const at::Tensor part = chunk.square().sum();
      sum = sum.defined() ? sum + part : part;
    }
  }
  return sum.defined() ? sum.item<double>() : 0.0;  // one host read for every chunk
}

void clip_gradients(const std::vector<OptimizedTensor>& tensors, double total_norm,
                    double max_norm) {
  if (max_norm <= 0) return;
  const double coefficient = max_norm / (total_norm + 1e-6);
  if (coefficient >= 1.0) return;
  torch::NoGradGuard no_grad;
  for (const OptimizedTensor& t : tensors) t.grad.mul_(coefficient);
}

}  // namespace ptrain
