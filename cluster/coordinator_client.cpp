#include "cluster/coordinator_client.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "core/clock.h"

namespace ptrain {
namespace {

constexpr size_t kMaxQueuedProgress = 10000;
constexpr int kProgressPerHeartbeat = 1000;
constexpr double kFirstBackoff = 0.2, kMaxBackoff = 10;
constexpr double kFlushRetry = 0.25;  // seconds between tries while a flush waits

// Failures that retrying the same request will not fix: said once, loudly.
bool is_refusal(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::INVALID_ARGUMENT ||
         code == grpc::StatusCode::PERMISSION_DENIED ||
         code == grpc::StatusCode::FAILED_PRECONDITION || code == grpc::StatusCode::UNIMPLEMENTED;
}

}  // namespace

std::string new_launch_id() {
  std::random_device device;
  return fmt::format("{:08x}{:08x}", device(), device());
}

CoordinatorClient::CoordinatorClient(CoordinatorClientOptions options,
                                     std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)),
      log_(std::move(log)),
      channel_(make_rpc_channel(options_.rpc)),
      stub_(v1::Coordinator::NewStub(channel_)),
      interval_s_(options_.heartbeat_interval_s),
      total_steps_(options_.total_steps) {
  step_ = options_.first_step;
  thread_ = std::thread([this] { run(); });
}

CoordinatorClient::~CoordinatorClient() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

// ---------------------------------------------------------------- the training thread's side

void CoordinatorClient::set_rank_state(int64_t step, int64_t rss_bytes,
                                       int64_t device_memory_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  step_ = step;
  rss_ = rss_bytes;
  device_memory_ = device_memory_bytes;
}

void CoordinatorClient::set_total_steps(int64_t total_steps) {
  std::lock_guard<std::mutex> lock(mu_);
  total_steps_ = total_steps;
}

void CoordinatorClient::add_progress(const v1::Progress& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  progress_.push_back(progress);
  if (progress_.size() > kMaxQueuedProgress) {
    progress_.pop_front();
    ++progress_dropped_;
  }
}

void CoordinatorClient::report_checkpoint(v1::ReportCheckpointRequest report) {
  if (report.unix_s() == 0) report.set_unix_s(unix_now());
  std::lock_guard<std::mutex> lock(mu_);
  Outgoing outgoing;
  outgoing.is_checkpoint = true;
  outgoing.checkpoint = std::move(report);
  outgoing.sequence = next_sequence_++;
  outgoing_.push_back(std::move(outgoing));
  wake_ = true;
  cv_.notify_all();
}

void CoordinatorClient::report_event(v1::ReportEventRequest report) {
  std::lock_guard<std::mutex> lock(mu_);
  Outgoing outgoing;
  outgoing.event = std::move(report);
  outgoing.sequence = next_sequence_++;
  outgoing_.push_back(std::move(outgoing));
  wake_ = true;
  cv_.notify_all();
}

bool CoordinatorClient::report_commit(v1::ReportCheckpointRequest report, double timeout_s) {
  report_checkpoint(std::move(report));
  std::unique_lock<std::mutex> lock(mu_);
  // While the coordinator is known to be down, the commit does not wait for it.
  if (!connected_ && !last_failure_.empty()) return false;
  const uint64_t target = next_sequence_ - 1;
  // Waits for the delivery, or until the coordinator turns out to be down.
  delivered_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] {
    return delivered_sequence_ >= target || (!connected_ && !last_failure_.empty());
  });
  return delivered_sequence_ >= target;
}

bool CoordinatorClient::flush(double timeout_s) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = next_sequence_ - 1;
  ++flushing_;
  wake_ = true;
  cv_.notify_all();
  const bool delivered =
      delivered_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s),
                             [&] { return delivered_sequence_ >= target && progress_.empty(); });
  --flushing_;
  return delivered;
}

CoordinatorClient::CommandVote CoordinatorClient::command_vote() const {
  std::lock_guard<std::mutex> lock(mu_);
  CommandVote vote;
  vote.newest = newest_command_;
  for (const v1::Command& command : commands_) {
    if (command.id() <= handled_command_) continue;
    vote.checkpoint |= command.kind() == v1::Command::CHECKPOINT;
    vote.stop |= command.kind() == v1::Command::STOP;
  }
  return vote;
}

int64_t CoordinatorClient::handled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return handled_command_;
}

void CoordinatorClient::set_handled(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  handled_command_ = std::max(handled_command_, id);
  newest_command_ = std::max(newest_command_, id);
  commands_.erase(std::remove_if(commands_.begin(), commands_.end(),
                                 [&](const v1::Command& c) { return c.id() <= handled_command_; }),
                  commands_.end());
}

int CoordinatorClient::attempt() const {
  std::lock_guard<std::mutex> lock(mu_);
  return attempt_;
}

bool CoordinatorClient::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connected_;
}

// ---------------------------------------------------------------- the client thread

void CoordinatorClient::run() {
  std::mt19937_64 jitter(std::random_device{}() ^ static_cast<uint64_t>(options_.rank));
  auto next_heartbeat = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const bool need_register = attempt_ == 0 || reregister_;
    lock.unlock();
    const bool ok = (!need_register || register_rank()) && deliver(next_heartbeat);
    lock.lock();
    double delay;
    if (ok) {
      backoff_s_ = 0;
      delay =
          std::chrono::duration<double>(next_heartbeat - std::chrono::steady_clock::now()).count();
    } else {
      backoff_s_ = backoff_s_ == 0 ? kFirstBackoff : std::min(kMaxBackoff, backoff_s_ * 2);
      delay = backoff_s_ * std::uniform_real_distribution<double>(0.75, 1.25)(jitter);
      // Someone waits for a delivery (the end of a run): retry often rather than back off.
      if (flushing_ > 0) delay = std::min(delay, kFlushRetry);
      delivered_cv_.notify_all();  // a commit waiting on a coordinator that is down stops waiting
    }
    if (delay > 0)
      cv_.wait_for(lock, std::chrono::duration<double>(delay), [&] { return stop_ || wake_; });
    wake_ = false;
  }
  // Stopping: what is still to send gets one more try while the coordinator answers.
  if (connected_) {
    lock.unlock();
    deliver(next_heartbeat);
    lock.lock();
  }
  delivered_cv_.notify_all();
}

bool CoordinatorClient::deliver(std::chrono::steady_clock::time_point& next_heartbeat) {
  bool has_progress;
  {
    std::lock_guard<std::mutex> lock(mu_);
    has_progress = !progress_.empty() && !outgoing_.empty();
  }
  // The steps before the reports (every queued one, a thousand a call): the end of an attempt
  // then finds its last steps recorded.
  bool ok = true;
  while (ok && has_progress) {
    ok = heartbeat();
    std::lock_guard<std::mutex> lock(mu_);
    has_progress = !progress_.empty();
  }
  while (ok) {  // the queue, in order
    Outgoing outgoing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (outgoing_.empty()) break;
      outgoing = outgoing_.front();
    }
    ok = send(outgoing);
    if (ok) {
      std::lock_guard<std::mutex> lock(mu_);
      outgoing_.pop_front();
      delivered_sequence_ = outgoing.sequence;
      delivered_cv_.notify_all();
    }
  }
  bool flushing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    flushing = flushing_ > 0 && !progress_.empty();
  }
  if (ok && (flushing || std::chrono::steady_clock::now() >= next_heartbeat)) {
    ok = heartbeat();
    next_heartbeat = std::chrono::steady_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(interval_s_ * 1e6));
  }
  return ok;
}

bool CoordinatorClient::register_rank() {
  v1::RegisterRankRequest request;
  request.set_job_id(options_.job_id);
  request.set_launch_id(options_.launch_id);
  request.set_rank(options_.rank);
  request.set_world(options_.world);
  request.set_host(options_.host);
  request.set_pid(options_.pid);
  request.set_config_hash(options_.config_hash);
  request.set_first_step(options_.first_step);
  request.set_process_start_unix_s(options_.process_start_unix_s);
  request.set_resume_seconds(options_.resume_seconds);
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_total_steps(total_steps_);
  }
  v1::RegisterRankResponse response;
  const auto context = make_rpc_context(options_.rpc);
  const grpc::Status status = stub_->RegisterRank(context.get(), request, &response);
  if (!status.ok()) {
    failed("RegisterRank", status);
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  const bool first = attempt_ == 0;
  attempt_ = response.attempt();
  reregister_ = false;
  if (response.heartbeat_interval_s() > 0) interval_s_ = response.heartbeat_interval_s();
  if (first && options_.rank == 0)
    log_->info("registered with the coordinator at {}: attempt {}{}", options_.rpc.address,
               attempt_,
               response.last_committed().step() > 0
                   ? fmt::format(" (its last committed checkpoint: step {})",
                                 response.last_committed().step())
                   : "");
  if (!connected_ && !last_failure_.empty())
    log_->info("the coordinator at {} answers again", options_.rpc.address);
  connected_ = true;
  last_failure_.clear();
  return true;
}

bool CoordinatorClient::heartbeat() {
  v1::HeartbeatRequest request;
  int sent_progress = 0;
  uint64_t dropped_before = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_job_id(options_.job_id);
    request.set_attempt(attempt_);
    request.set_rank(options_.rank);
    request.set_step(step_);
    request.set_rss_bytes(rss_);
    request.set_device_memory_bytes(device_memory_);
    request.set_last_command_id(handled_command_);
    dropped_before = progress_dropped_;
    for (const v1::Progress& progress : progress_) {
      if (sent_progress == kProgressPerHeartbeat) break;
      *request.add_progress() = progress;
      ++sent_progress;
    }
  }
  v1::HeartbeatResponse response;
  const auto context = make_rpc_context(options_.rpc);
  const grpc::Status status = stub_->Heartbeat(context.get(), request, &response);
  if (!status.ok()) {
    failed("Heartbeat", status);
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Points dropped at the cap while the call was out were the oldest: some of those sent.
  const int64_t sent_left = std::max<int64_t>(
      0, sent_progress - static_cast<int64_t>(progress_dropped_ - dropped_before));
  progress_.erase(progress_.begin(), progress_.begin() + sent_left);
  for (const v1::Command& command : response.commands()) {
    if (command.id() <= handled_command_) continue;
    const bool known = std::any_of(commands_.begin(), commands_.end(),
                                   [&](const v1::Command& c) { return c.id() == command.id(); });
    if (!known) {
      commands_.push_back(command);
      log_->info("the coordinator asks for a {} (command {}{}{})",
                 command.kind() == v1::Command::STOP ? "stop" : "checkpoint", command.id(),
                 command.reason().empty() ? "" : ": ", command.reason());
    }
    newest_command_ = std::max(newest_command_, command.id());
  }
  if (!connected_ && !last_failure_.empty())
    log_->info("the coordinator at {} answers again", options_.rpc.address);
  connected_ = true;
  last_failure_.clear();
  if (progress_.empty()) delivered_cv_.notify_all();
  return true;
}

bool CoordinatorClient::send(Outgoing& outgoing) {
  grpc::Status status;
  const auto context = make_rpc_context(options_.rpc);
  int attempt;
  {
    std::lock_guard<std::mutex> lock(mu_);
    attempt = attempt_;
  }
  if (outgoing.is_checkpoint) {
    v1::ReportCheckpointRequest& request = outgoing.checkpoint;
    request.set_job_id(options_.job_id);
    if (request.attempt() == 0) request.set_attempt(attempt);
    request.set_rank(options_.rank);
    request.set_sequence(outgoing.sequence);
    v1::ReportCheckpointResponse response;
    status = stub_->ReportCheckpoint(context.get(), request, &response);
  } else {
    v1::ReportEventRequest& request = outgoing.event;
    request.set_job_id(options_.job_id);
    if (request.attempt() == 0) request.set_attempt(attempt);
    request.set_rank(options_.rank);
    request.set_sequence(outgoing.sequence);
    v1::ReportEventResponse response;
    status = stub_->ReportEvent(context.get(), request, &response);
  }
  if (status.ok()) return true;
  // A report the coordinator refuses for good (another attempt's, malformed) is dropped, or it
  // would block every report behind it.
  if (is_refusal(status.error_code()) && status.error_code() != grpc::StatusCode::UNAUTHENTICATED) {
    log_->warn("the coordinator refused a report: {}", describe_status(status));
    return true;
  }
  failed(outgoing.is_checkpoint ? "ReportCheckpoint" : "ReportEvent", status);
  return false;
}

void CoordinatorClient::failed(const char* call, const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) reregister_ = true;
  const std::string failure = describe_status(status);
  if (failure != last_failure_) {
    if (is_refusal(status.error_code()))
      log_->error("the coordinator at {} refuses {}: {} (training goes on without it)",
                  options_.rpc.address, call, failure);
    else if (connected_ || last_failure_.empty())
      log_->warn("the coordinator at {} does not answer ({}: {}); training goes on, retrying",
                 options_.rpc.address, call, failure);
    last_failure_ = failure;
  }
  connected_ = false;
}

}  // namespace ptrain
