#include "parallel/collective_watchdog.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace ptrain {

CollectiveWatchdog::CollectiveWatchdog(std::chrono::duration<double> timeout, int rank, int world,
                                       std::string host, std::shared_ptr<spdlog::logger> log,
                                       AbortAction abort)
    : timeout_(timeout),
      tick_(std::min(timeout / 8, std::chrono::duration<double>(1.0))),
      rank_(rank),
      world_(world),
      host_(std::move(host)),
      log_(std::move(log)),
      abort_(std::move(abort)),
      thread_([this] { loop(); }) {}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t CollectiveWatchdog::start(Collective collective) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout_);
  uint64_t token;
  {
    std::lock_guard<std::mutex> lock(mu_);
    token = next_token_++;
    running_.emplace(token, Running{collective, deadline});
  }
  return token;
}

void CollectiveWatchdog::finish(uint64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  running_.erase(token);
}

void CollectiveWatchdog::add_abort_hook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string CollectiveWatchdog::describe(const Collective& c) {
  std::string text;
  if (c.root >= 0) text += fmt::format("root {}, ", c.root);
  if (c.reduce) text += fmt::format("{}, ", c.reduce);
  if (c.dtype) return text + fmt::format("{}, {} elements", c.dtype, c.numel);
  return text + "no data";
}

std::string CollectiveWatchdog::report(const Collective& c) const {
  std::string step = c.step >= 0 ? fmt::format("step {}", c.step) : "no training step yet";
  return fmt::format(
      "collective watchdog: {} #{} ({}) on communicator '{}' ({}) did not complete within {:g} s "
      "({}); rank {} of {} on host {}; aborting the job",
      c.op, c.seq, describe(c), c.communicator ? *c.communicator : "?", c.backend, timeout_.count(),
      step, rank_, world_, host_);
}

void CollectiveWatchdog::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, tick_);  // woken early only to stop
    if (stopping_ || running_.empty()) continue;
    auto oldest = running_.begin();  // tokens grow with start time, and all share one timeout
    if (Clock::now() < oldest->second.deadline) continue;
    if (fired_) return;
    fired_ = true;
    std::string text = report(oldest->second.collective);
    auto hooks = hooks_;
    lock.unlock();
    // stderr directly: the console sink may be off on this rank, and the job is about to die.
    std::fprintf(stderr, "[rank %d %s] FATAL %s\n", rank_, host_.c_str(), text.c_str());
    std::fflush(stderr);
    if (log_) {
      log_->critical(text);
      log_->flush();
    }
    for (auto& hook : hooks) hook();
    abort_(text);
    return;
  }
}

}  // namespace ptrain
