// AdamW on fp32 tensors (this rank's master shards), with torch.optim.AdamW's arithmetic
// (decoupled weight decay, bias-corrected moments):
//   p <- p * (1 - lr * weight_decay)                  (only where the parameter decays)
//   m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
//   p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// and global gradient-norm clipping as torch.nn.utils.clip_grad_norm_ (coefficient
// max_norm / (norm + 1e-6), capped at 1). The state is the step count (Stateful) and the moments
// (tensors, beside it in a checkpoint).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "core/stateful.h"

namespace ptrain {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// One optimized tensor: the parameter and its gradient (same shape, fp32), and the element
// ranges [begin, end) that take weight decay.
struct OptimizedTensor {
  at::Tensor param, grad;
  std::vector<std::pair<int64_t, int64_t>> decay_ranges;
};

class AdamW final : public Stateful {
 public:
  AdamW(std::vector<OptimizedTensor> tensors, AdamWOptions options);

  // One update at learning rate `lr` from the current gradients.
  void step(double lr);
  int64_t steps() const { return steps_; }
  const std::vector<OptimizedTensor>& tensors() const { return tensors_; }
  // First and second moments, one pair per tensor.
  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }

  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;

 private:
  std::vector<OptimizedTensor> tensors_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  int64_t steps_ = 0;
};

// Sum of squares of the gradients (fp64 accumulation).
double squared_norm(const std::vector<OptimizedTensor>& tensors);

// Scales every gradient by min(1, max_norm / (total_norm + 1e-6)); total_norm is given (it is
// global: the caller all-reduces the squared norms). max_norm <= 0: no clipping.
void clip_gradients(const std::vector<OptimizedTensor>& tensors, double total_norm,
                    double max_norm);

}  // namespace ptrain
