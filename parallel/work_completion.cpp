#include "parallel/work_completion.h"

#include "core/error.h"

namespace ptrain {

void WorkCompletion::complete(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    PTRAIN_ASSERT(!done_, "a collective completed twice");
    done_ = true;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

void WorkCompletion::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  if (error_) std::rethrow_exception(error_);
}

bool WorkCompletion::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return done_; })) return false;
  if (error_) std::rethrow_exception(error_);
  return true;
}

bool WorkCompletion::is_completed() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

void WorkCompletion::rethrow_if_failed() {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) std::rethrow_exception(error_);
}

}  // namespace ptrain
