#include "trainer/optim/adamw.h"

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

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double bias2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
  const double step_size = lr / bias1;
  const double bias2_sqrt = std::sqrt(bias2);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    at::Tensor& p = tensors_[i].param;
    const at::Tensor& g = tensors_[i].grad;
    if (options_.weight_decay != 0)
      for (const auto& [begin, end] : tensors_[i].decay_ranges)
        p.narrow(0, begin, end - begin).mul_(1.0 - lr * options_.weight_decay);
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
  double sum = 0;
  for (const OptimizedTensor& t : tensors)
    sum += t.grad.to(at::kDouble).pow(2).sum().item<double>();
  return sum;
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
