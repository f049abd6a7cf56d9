#include "parallel/collective_watchdog.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <exception>

namespace ptrain {

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "10:00:01.123": local time of day, as in the log's timestamps.
std::string time_of_day(double unix_s) {
  const long long ms = std::llround(unix_s * 1000.0);
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm local{};
  localtime_r(&seconds, &local);
  return fmt::format("{:02}:{:02}:{:02}.{:03}", local.tm_hour, local.tm_min, local.tm_sec,
                     ms % 1000);
}

// "600.2 s", "0.8 ms", "35 us": one decimal of the largest unit that keeps it at least 0.1.
std::string duration_text(double seconds) {
  seconds = std::max(seconds, 0.0);
  if (seconds >= 1.0) return fmt::format("{:.1f} s", seconds);
  if (seconds >= 1e-4) return fmt::format("{:.1f} ms", seconds * 1e3);
  return fmt::format("{:.0f} us", seconds * 1e6);
}

std::string format_record(const CollectiveRecord& r, double now_unix_s) {
  std::string step = r.step >= 0 ? fmt::format("step {}", r.step) : "no step";
  std::string state = r.finished_unix_s > 0
                          ? "finished in " + duration_text(r.finished_unix_s - r.started_unix_s)
                          : "running " + duration_text(now_unix_s - r.started_unix_s);
  return fmt::format("{} {} #{} {}, {} B, started {}, {}", r.communicator, r.op, r.seq, step,
                     r.bytes, time_of_day(r.started_unix_s), state);
}

}  // namespace

// ---------------------------------------------------------------- lifetime

CollectiveWatchdog::CollectiveWatchdog(Seconds timeout, int rank, int world, std::string host,
                                       std::shared_ptr<spdlog::logger> log, AbortAction abort,
                                       std::optional<Seconds> grace, size_t history)
    : timeout_(timeout),
      tick_(std::min(timeout / 8, Seconds(1.0))),
      grace_(grace ? *grace : default_grace(timeout)),
      rank_(rank),
      world_(world),
      host_(std::move(host)),
      log_(std::move(log)),
      abort_(std::move(abort)),
      ring_(std::max<size_t>(history, 1)),
      thread_([this] { loop(); }) {}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

CollectiveWatchdog::Seconds CollectiveWatchdog::default_grace(Seconds timeout) {
  return std::clamp(timeout / 4, Seconds(0.5), Seconds(5.0));
}

// ---------------------------------------------------------------- hot path

uint64_t CollectiveWatchdog::start(Collective collective) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout_);
  double started = unix_now();
  uint64_t token;
  {
    std::lock_guard<std::mutex> lock(mu_);
    token = next_token_++;
    running_.emplace(token, Running{collective, deadline, started});
    Slot& slot = ring_[token % ring_.size()];
    slot.token = token;
    if (collective.communicator) {
      slot.communicator.assign(*collective.communicator);
    } else {
      slot.communicator.assign("?");
    }
    slot.op = collective.op;
    slot.seq = collective.seq;
    slot.step = collective.step;
    slot.bytes = collective.bytes;
    slot.started_unix_s = started;
    slot.finished_unix_s = 0;
  }
  return token;
}

void CollectiveWatchdog::finish(uint64_t token) {
  double finished = unix_now();
  std::lock_guard<std::mutex> lock(mu_);
  running_.erase(token);
  Slot& slot = ring_[token % ring_.size()];
  if (slot.token == token) slot.finished_unix_s = finished;
}

// ---------------------------------------------------------------- hooks and history

void CollectiveWatchdog::add_fire_hook(FireHook hook) {
  std::lock_guard<std::mutex> lock(mu_);
  fire_hooks_.push_back(std::move(hook));
}

void CollectiveWatchdog::add_abort_hook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::vector<CollectiveRecord> CollectiveWatchdog::recent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return recent_locked();
}

std::vector<CollectiveRecord> CollectiveWatchdog::recent_locked() const {
  const uint64_t size = ring_.size();
  const uint64_t first = next_token_ > size ? next_token_ - size : 1;
  std::vector<CollectiveRecord> records;
  records.reserve(next_token_ - first);
  for (uint64_t token = first; token < next_token_; ++token) {
    const Slot& slot = ring_[token % size];
    records.push_back(CollectiveRecord{slot.communicator, slot.op, slot.seq, slot.step, slot.bytes,
                                       slot.started_unix_s, slot.finished_unix_s});
  }
  return records;
}

std::string CollectiveWatchdog::format_history(const std::vector<CollectiveRecord>& records,
                                               double now_unix_s) {
  std::string text;
  for (const auto& record : records) text += format_record(record, now_unix_s) + "\n";
  return text;
}

// ---------------------------------------------------------------- reports

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

// ---------------------------------------------------------------- the watchdog thread

void CollectiveWatchdog::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, tick_);  // woken early only to stop
    if (stopping_ || running_.empty()) continue;
    auto oldest = running_.begin();  // tokens grow with start time, and all share one timeout
    if (Clock::now() < oldest->second.deadline) continue;
    if (fired_) return;
    fired_ = true;
    fire(lock, oldest->first, oldest->second);
    return;
  }
}

void CollectiveWatchdog::fire(std::unique_lock<std::mutex>& lock, uint64_t token,
                              const Running& stuck) {
  const auto fired_at = Clock::now();
  const Collective& c = stuck.collective;
  const std::string text = report(c);
  std::vector<CollectiveRecord> history = recent_locked();
  if (token + ring_.size() < next_token_) {
    // Pushed out of the ring; its communicator is alive, since the collective is still running.
    history.insert(history.begin(),
                   CollectiveRecord{c.communicator ? *c.communicator : "?", c.op, c.seq, c.step,
                                    c.bytes, stuck.started_unix_s, 0});
  }
  const auto fire_hooks = fire_hooks_;
  lock.unlock();

  // stderr directly: the console sink may be off on this rank, and the job is about to die. One
  // write, so that the blocks of ranks firing together do not interleave line by line.
  const double now = unix_now();
  const std::string prefix = fmt::format("[rank {} {}] ", rank_, host_);
  const std::string header = fmt::format("last collectives on rank {}:", rank_);
  std::vector<std::string> lines;
  for (const auto& record : history) lines.push_back(format_record(record, now));
  std::string block = prefix + "FATAL " + text + "\n" + prefix + header + "\n";
  for (const auto& line : lines) block += prefix + "  " + line + "\n";
  std::fputs(block.c_str(), stderr);
  std::fflush(stderr);
  if (log_) {
    log_->critical(text);
    log_->critical(header);
    for (const auto& line : lines) log_->critical("  {}", line);
    log_->flush();
  }

  for (const auto& hook : fire_hooks) run_hook("a fire hook", [&] { hook(text, history); });

  lock.lock();
  cv_.wait_until(lock, fired_at + std::chrono::duration_cast<Clock::duration>(grace_),
                 [this] { return stopping_; });
  const auto abort_hooks = hooks_;
  lock.unlock();
  for (const auto& hook : abort_hooks) run_hook("an abort hook", hook);
  abort_(text);
}

// A hook that throws must not end the process here (std::terminate, without MPI_Abort, could
// leave the other ranks hanging): its error is reported and the sequence goes on.
void CollectiveWatchdog::run_hook(const char* what, const std::function<void()>& hook) const {
  std::string error;
  try {
    hook();
    return;
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown exception";
  }
  std::fprintf(stderr, "[rank %d %s] collective watchdog: %s failed: %s\n", rank_, host_.c_str(),
               what, error.c_str());
  std::fflush(stderr);
  if (log_) {
    log_->error("collective watchdog: {} failed: {}", what, error);
    log_->flush();
  }
}

}  // namespace ptrain
