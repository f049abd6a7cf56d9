#include "trainer/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ptrain {

LrSchedule::LrSchedule(std::string kind, double base_lr, int64_t total_steps, int64_t warmup_steps)
    : kind_(std::move(kind)), base_lr_(base_lr), total_(total_steps), warmup_(warmup_steps) {
  PTRAIN_CHECK(kind_ == "constant" || kind_ == "constant_with_warmup" || kind_ == "linear" ||
                   kind_ == "cosine",
               "lr_scheduler: '{}' is not one of cosine, linear, constant, constant_with_warmup",
               kind_);
}

double LrSchedule::at(int64_t step) const {
  const double s = static_cast<double>(step), w = static_cast<double>(warmup_);
  if (kind_ == "constant") return base_lr_;
  if (step < warmup_) return base_lr_ * s / std::max(1.0, w);
  if (kind_ == "constant_with_warmup") return base_lr_;
  const double span = std::max(1.0, static_cast<double>(total_ - warmup_));
  if (kind_ == "linear") return base_lr_ * std::max(0.0, static_cast<double>(total_ - step) / span);
  const double progress = (s - w) / span;
  return base_lr_ * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

int64_t warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t total_steps) {
  if (warmup_steps > 0) return warmup_steps;
  return static_cast<int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)));
}

}  // namespace ptrain
