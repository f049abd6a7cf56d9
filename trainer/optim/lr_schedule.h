// Learning-rate schedules as Hugging Face transformers' get_scheduler computes them: the rate of
// optimizer step s (0-based) of T is base_lr * factor(s), with W warmup steps:
//   warmup (s < W):        s / max(1, W)                 (every schedule but constant)
//   constant:              1
//   constant_with_warmup:  1 after warmup
//   linear:                max(0, (T - s) / max(1, T - W))
//   cosine:                max(0, 0.5 (1 + cos(pi * (s - W) / max(1, T - W))))
// W is warmup_steps, or ceil(warmup_ratio * T) (as the HF Trainer rounds it).
#pragma once

#include <cstdint>
#include <string>

namespace ptrain {

class LrSchedule {
 public:
  // `kind`: constant | constant_with_warmup | linear | cosine. UserError naming lr_scheduler for
  // anything else.
  LrSchedule(std::string kind, double base_lr, int64_t total_steps, int64_t warmup_steps);

  double at(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }
  int64_t total_steps() const { return total_; }

 private:
  std::string kind_;
  double base_lr_;
  int64_t total_, warmup_;
};

// warmup_steps when > 0, else ceil(warmup_ratio * total_steps).
int64_t warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t total_steps);

}  // namespace ptrain
