#include "cluster/job_state.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace ptrain {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kMaxWorld = 1 << 16;
constexpr int64_t kMaxStep = int64_t{1} << 48;  // a bound no job reaches
constexpr size_t kRanksPerFlush = 256;

grpc::Status invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

bool ended(const v1::Attempt& attempt) {
  return attempt.ended_unix_s() > 0;
}

bool step_in_range(int64_t step) {
  return step >= 0 && step <= kMaxStep;
}

// An attempt that ends this way is the job's end; any other end reason is a failure.
bool ends_well(const std::string& reason) {
  return reason == "finished" || reason == "stopped" || reason == "requeue";
}

}  // namespace

JobState::JobState(CoordinatorStore& store, JobStateOptions options)
    : store_(store), options_(std::move(options)), eval_loss_(kNaN) {
  const CoordinatorStore::Snapshot snapshot = store_.load();
  job_id_ = snapshot.job_id;
  config_hash_ = snapshot.config_hash;
  progress_ = snapshot.progress;
  eval_loss_ = snapshot.eval_loss;
  attempts_ = snapshot.attempts;
  commands_ = snapshot.commands;
  next_command_id_ = snapshot.next_command_id;
  if (!snapshot.checkpoints.empty()) last_checkpoint_ = snapshot.checkpoints.front();
  if (!attempts_.empty()) {
    // The ranks of the attempt that was running: each counts as just seen, since a coordinator
    // that was down cannot tell a silent rank from its own absence.
    ranks_.resize(static_cast<size_t>(attempts_.back().world()));
    const double t = now();
    for (size_t r = 0; r < ranks_.size(); ++r) {
      ranks_[r].health.set_rank(static_cast<int>(r));
      ranks_[r].last_seen = t;
    }
    for (const v1::RankHealth& health : snapshot.ranks) {
      if (health.rank() < 0 || health.rank() >= static_cast<int>(ranks_.size())) continue;
      ranks_[static_cast<size_t>(health.rank())].health = health;
      if (!health.host().empty()) ++registered_;
    }
    // A running attempt's ranks go on heartbeating without registering again.
    if (!ended(attempts_.back())) registered_ = attempts_.back().world();
  }
  updated_ = now();
}

double JobState::now() const {
  if (options_.clock) return options_.clock();
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void JobState::changed() {
  ++version_;
  updated_ = now();
  cv_.notify_all();
}

void JobState::add_event(const std::string& severity, const std::string& kind, int rank,
                         const std::string& message) {
  v1::Event event;
  event.set_unix_s(now());
  event.set_severity(severity);
  event.set_kind(kind);
  event.set_attempt(attempts_.empty() ? 0 : attempts_.back().number());
  event.set_rank(rank);
  event.set_message(message);
  store_.append_event(event);
}

v1::Attempt& JobState::current() {
  return attempts_.back();
}

grpc::Status JobState::check_job(const std::string& job_id) const {
  if (job_id.empty()) return invalid("job_id is empty");
  if (!job_id_.empty() && job_id != job_id_)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        fmt::format("this coordinator serves job '{}', not '{}'", job_id_, job_id));
  return grpc::Status::OK;
}

grpc::Status JobState::check_attempt(int attempt, int rank) const {
  if (attempts_.empty() || attempt > attempts_.back().number() || attempt < 1)
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        fmt::format("attempt {} is not known here: register again", attempt));
  if (attempt < attempts_.back().number())
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        fmt::format("attempt {} was superseded by attempt {}", attempt, attempts_.back().number()));
  if (rank < 0 || rank >= static_cast<int>(ranks_.size()))
    return invalid(fmt::format("rank {} is outside the world of attempt {} (size {})", rank,
                               attempt, ranks_.size()));
  return grpc::Status::OK;
}

// ---------------------------------------------------------------- ranks

grpc::Status JobState::register_rank(const v1::RegisterRankRequest& request,
                                     v1::RegisterRankResponse* response) {
  if (request.world() < 1 || request.world() > kMaxWorld)
    return invalid(fmt::format("world {} is outside [1, {}]", request.world(), kMaxWorld));
  if (request.rank() < 0 || request.rank() >= request.world())
    return invalid(
        fmt::format("rank {} is outside the world [0, {})", request.rank(), request.world()));
  if (request.launch_id().empty()) return invalid("launch_id is empty");
  if (!step_in_range(request.first_step()) || !step_in_range(request.total_steps()))
    return invalid("first_step and total_steps must lie in [0, 2^48]");
  std::lock_guard<std::mutex> lock(mu_);
  if (grpc::Status status = check_job(request.job_id()); !status.ok()) return status;
  CoordinatorStore::Transaction transaction(store_);
  if (job_id_.empty()) {
    job_id_ = request.job_id();
    store_.save_job(job_id_, request.config_hash());
  }

  auto known = std::find_if(attempts_.begin(), attempts_.end(), [&](const v1::Attempt& a) {
    return a.launch_id() == request.launch_id();
  });
  if (known != attempts_.end() && known->number() != attempts_.back().number())
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        fmt::format("launch {} was attempt {}, superseded by attempt {}", request.launch_id(),
                    known->number(), attempts_.back().number()));
  if (known == attempts_.end()) {
    if (!attempts_.empty() && !ended(current()))
      end_attempt("superseded", "a new launch registered before this attempt ended",
                  progress_.step());
    v1::Attempt attempt;
    attempt.set_number(attempts_.empty() ? 1 : attempts_.back().number() + 1);
    attempt.set_launch_id(request.launch_id());
    attempt.set_world(request.world());
    attempt.set_started_unix_s(now());
    attempt.set_first_step(request.first_step());
    attempt.set_last_step(request.first_step());
    attempts_.push_back(attempt);
    // The job's progress is the new attempt's from here (a resume may start before the last
    // attempt's step); its speed is measured afresh.
    progress_.set_step(attempt.first_step());
    seconds_per_step_ = 0;
    ranks_.assign(static_cast<size_t>(request.world()), Rank{});
    // A rank not registered yet counts as silent from the attempt's opening: one that never
    // registers is lost after heartbeat_timeout like one that stopped.
    for (size_t r = 0; r < ranks_.size(); ++r) {
      ranks_[r].health.set_rank(static_cast<int>(r));
      ranks_[r].last_seen = attempt.started_unix_s();
    }
    registered_ = 0;
    written_.clear();
    back_.clear();
    store_.save_attempt(attempt);
    add_event("info", "attempt_started", -1,
              fmt::format("attempt {} started: {} ranks from step {}", attempt.number(),
                          attempt.world(), attempt.first_step()));
  } else if (request.world() != current().world()) {
    return invalid(fmt::format("attempt {} has {} ranks, not {}", current().number(),
                               current().world(), request.world()));
  }

  Rank& rank = ranks_[static_cast<size_t>(request.rank())];
  if (rank.health.host().empty()) ++registered_;
  v1::Attempt& started = current();
  if (request.process_start_unix_s() > 0 &&
      (started.process_start_unix_s() == 0 ||
       request.process_start_unix_s() < started.process_start_unix_s()))
    started.set_process_start_unix_s(request.process_start_unix_s());
  started.set_resume_seconds(std::max(started.resume_seconds(), request.resume_seconds()));
  if (registered_ == started.world() && started.registered_unix_s() == 0)
    started.set_registered_unix_s(now());
  store_.save_attempt(started);
  rank.health.set_host(request.host());
  rank.health.set_pid(request.pid());
  rank.health.set_step(std::max(rank.health.step(), request.first_step()));
  rank.last_seen = now();
  rank.reported_lost = false;
  store_.save_ranks(current().number(), {rank.health});
  if (request.rank() == 0) {
    if (!request.config_hash().empty() && request.config_hash() != config_hash_) {
      if (!config_hash_.empty())
        add_event("info", "config_changed", 0,
                  fmt::format("the config hash changed from {} to {}", config_hash_,
                              request.config_hash()));
      config_hash_ = request.config_hash();
      store_.save_job(job_id_, config_hash_);
    }
    if (request.total_steps() > 0) progress_.set_total_steps(request.total_steps());
  }
  if (registered_ == current().world() && rank.health.heartbeats() == 0)
    add_event("info", "ranks_registered", -1,
              fmt::format("all {} ranks of attempt {} registered", current().world(),
                          current().number()));
  response->set_attempt(current().number());
  *response->mutable_last_committed() = last_checkpoint_;
  response->set_heartbeat_interval_s(options_.heartbeat_interval_s);
  changed();
  return grpc::Status::OK;
}

grpc::Status JobState::heartbeat(const v1::HeartbeatRequest& request,
                                 v1::HeartbeatResponse* response) {
  if (request.progress_size() > 1000)
    return invalid(
        fmt::format("{} progress points in one heartbeat (at most 1000)", request.progress_size()));
  if (!step_in_range(request.step())) return invalid("step must lie in [0, 2^48]");
  for (const v1::Progress& progress : request.progress())
    if (!step_in_range(progress.step()) || !step_in_range(progress.total_steps()))
      return invalid("a progress point's step and total_steps must lie in [0, 2^48]");
  std::lock_guard<std::mutex> lock(mu_);
  if (grpc::Status status = check_job(request.job_id()); !status.ok()) return status;
  if (grpc::Status status = check_attempt(request.attempt(), request.rank()); !status.ok())
    return status;
  Rank& rank = ranks_[static_cast<size_t>(request.rank())];
  rank.last_seen = now();
  rank.health.set_step(request.step());
  rank.health.set_rss_bytes(request.rss_bytes());
  rank.health.set_device_memory_bytes(request.device_memory_bytes());
  rank.health.set_heartbeats(rank.health.heartbeats() + 1);
  if (rank.reported_lost) {
    rank.reported_lost = false;
    back_.push_back(request.rank());  // said in flush(): one event for many
  }
  if (request.progress_size() > 0) {
    CoordinatorStore::Transaction transaction(store_);
    for (const v1::Progress& progress : request.progress()) record_progress(progress);
    store_.save_progress(progress_, eval_loss_);
  }
  // The attempt's first completed step, when no logged progress point dated it (logging_steps
  // above 1): this heartbeat's arrival, at most a heartbeat interval late.
  if (v1::Attempt& attempt = current();
      attempt.first_step_unix_s() == 0 && request.step() > attempt.first_step()) {
    attempt.set_first_step_unix_s(rank.last_seen);
    store_.save_attempt(attempt);
  }
  for (const v1::Command& command : commands_)
    if (command.id() > request.last_command_id()) *response->add_commands() = command;
  changed();
  return grpc::Status::OK;
}

void JobState::record_progress(const v1::Progress& progress) {
  const double t = now();
  // The speed for the ETA: the steps' own wall times (a heartbeat carries several steps at once,
  // so arrival times say nothing).
  if (progress.step_seconds() > 0)
    seconds_per_step_ = seconds_per_step_ > 0
                            ? 0.8 * seconds_per_step_ + 0.2 * progress.step_seconds()
                            : progress.step_seconds();
  if (progress.step() >= progress_.step()) {
    const int64_t total =
        progress.total_steps() > 0 ? progress.total_steps() : progress_.total_steps();
    progress_ = progress;
    progress_.set_total_steps(total);
    if (!attempts_.empty()) {
      v1::Attempt& attempt = current();
      attempt.set_last_step(std::max(attempt.last_step(), progress.step()));
      if (attempt.first_step_unix_s() == 0 && progress.step() > attempt.first_step()) {
        attempt.set_first_step_unix_s(progress.unix_s() > 0 ? progress.unix_s() : t);
        store_.save_attempt(attempt);
      }
    }
  }
  v1::MetricPoint point;
  point.set_step(progress.step());
  point.set_unix_s(t);
  point.set_loss(progress.loss());
  point.set_eval_loss(kNaN);
  point.set_learning_rate(progress.learning_rate());
  point.set_tokens_per_second(progress.tokens_per_second());
  point.set_mfu(progress.mfu());
  store_.append_metric(point);
}

// ---------------------------------------------------------------- checkpoints and events

grpc::Status JobState::report_checkpoint(const v1::ReportCheckpointRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (grpc::Status status = check_job(request.job_id()); !status.ok()) return status;
  if (request.step() < 0) return invalid("step must not be negative");
  const bool committed = request.kind() == v1::ReportCheckpointRequest::COMMITTED;
  // A commit is recorded whenever it arrives (the manifest is the truth), even from an attempt
  // that has ended since; the other reports only matter to the running attempt.
  grpc::Status status = check_attempt(request.attempt(), request.rank());
  const v1::Attempt* attempt = attempt_by_number(request.attempt());
  if (committed && status.error_code() == grpc::StatusCode::FAILED_PRECONDITION && attempt &&
      request.rank() >= 0 && request.rank() < attempt->world())
    status = {};
  if (!status.ok()) return status;
  if (is_repeat(request.attempt(), request.rank(), request.sequence())) return grpc::Status::OK;
  switch (request.kind()) {
    case v1::ReportCheckpointRequest::WRITTEN:
      if (request.step() > last_checkpoint_.step()) ++written_[request.step()];
      break;
    case v1::ReportCheckpointRequest::COMMITTED: {
      if (request.dir().empty()) return invalid("a commit needs its dir");
      v1::Checkpoint checkpoint;
      checkpoint.set_step(request.step());
      checkpoint.set_dir(request.dir());
      checkpoint.set_bytes(request.bytes());
      checkpoint.set_files(request.files());
      checkpoint.set_attempt(request.attempt());
      checkpoint.set_world(attempt->world());
      checkpoint.set_committed_unix_s(request.unix_s() > 0 ? request.unix_s() : now());
      CoordinatorStore::Transaction transaction(store_);
      store_.save_checkpoint(checkpoint);
      if (checkpoint.step() >= last_checkpoint_.step()) last_checkpoint_ = checkpoint;
      written_.erase(written_.begin(), written_.upper_bound(request.step()));
      add_event(
          "info", "checkpoint_committed", request.rank(),
          fmt::format("checkpoint of step {} committed: {} files, {} bytes in {}",
                      checkpoint.step(), checkpoint.files(), checkpoint.bytes(), checkpoint.dir()));
      finish_commands(v1::Command::CHECKPOINT, request.handled_command());
      break;
    }
    case v1::ReportCheckpointRequest::FAILED:
      written_.erase(request.step());
      add_event("error", "checkpoint_failed", request.rank(),
                fmt::format("checkpoint of step {} failed: {}", request.step(), request.error()));
      break;
    default:
      return invalid("kind must be WRITTEN, COMMITTED or FAILED");
  }
  changed();
  return grpc::Status::OK;
}

grpc::Status JobState::report_event(const v1::ReportEventRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (grpc::Status status = check_job(request.job_id()); !status.ok()) return status;
  if (grpc::Status status = check_attempt(request.attempt(), request.rank()); !status.ok())
    return status;
  if (is_repeat(request.attempt(), request.rank(), request.sequence())) return grpc::Status::OK;
  CoordinatorStore::Transaction transaction(store_);
  switch (request.kind()) {
    case v1::ReportEventRequest::EVAL: {
      if (!std::isfinite(request.eval_loss()) && !std::isnan(request.eval_loss()))
        return invalid("eval_loss is infinite");
      eval_loss_ = request.eval_loss();
      v1::MetricPoint point;
      point.set_step(request.step());
      point.set_unix_s(now());
      // Only the evaluation: the store keeps the step's training metrics, whichever came first.
      point.set_loss(kNaN);
      point.set_learning_rate(kNaN);
      point.set_tokens_per_second(kNaN);
      point.set_mfu(kNaN);
      point.set_eval_loss(request.eval_loss());
      store_.append_metric(point);
      store_.save_progress(progress_, eval_loss_);
      add_event("info", "eval", request.rank(),
                fmt::format("eval loss {:.4f} at step {}", request.eval_loss(), request.step()));
      break;
    }
    case v1::ReportEventRequest::ATTEMPT_END:
      if (request.reason().empty()) return invalid("an attempt end needs its reason");
      end_attempt(request.reason(), request.message(), request.step());
      break;
    case v1::ReportEventRequest::HANG:
      add_event("error", "hang", request.rank(), request.message());
      break;
    default:
      return invalid("kind must be EVAL, ATTEMPT_END or HANG");
  }
  changed();
  return grpc::Status::OK;
}

void JobState::end_attempt(const std::string& reason, const std::string& message, int64_t step) {
  v1::Attempt& attempt = current();
  if (ended(attempt)) return;
  attempt.set_ended_unix_s(now());
  attempt.set_end_reason(reason);
  attempt.set_end_message(message);
  attempt.set_last_step(std::max(attempt.last_step(), step));
  // The end's step is the attempt's last, whether or not its last heartbeat arrived.
  if (step > progress_.step()) progress_.set_step(step);
  store_.save_attempt(attempt);
  written_.clear();
  add_event(ends_well(reason) ? "info" : "error", "attempt_ended", -1,
            fmt::format("attempt {} ended ({}) after step {}{}{}", attempt.number(), reason,
                        attempt.last_step(), message.empty() ? "" : ": ", message));
  finish_commands(v1::Command::STOP, std::numeric_limits<int64_t>::max());
}

// ---------------------------------------------------------------- commands

// ---------------------------------------------------------------- the supervisor

grpc::Status JobState::report_launch(const v1::ReportLaunchRequest& request,
                                     v1::ReportLaunchResponse* response) {
  if (request.launch_id().empty()) return invalid("launch_id is empty");
  if (request.cause().empty()) return invalid("a launch's end needs its cause");
  if (!step_in_range(request.step())) return invalid("step must lie in [0, 2^48]");
  std::lock_guard<std::mutex> lock(mu_);
  if (!request.job_id().empty())
    if (grpc::Status status = check_job(request.job_id()); !status.ok()) return status;
  CoordinatorStore::Transaction transaction(store_);
  auto known = std::find_if(attempts_.begin(), attempts_.end(), [&](const v1::Attempt& a) {
    return a.launch_id() == request.launch_id();
  });
  if (known == attempts_.end()) {
    // The launch ended before any of its ranks registered (a bad config, a crash at start): it
    // is an attempt of its own, with no ranks. A report that names no job must not end the
    // running attempt of whatever job this coordinator serves.
    if (request.job_id().empty() && !attempts_.empty() && !ended(current()))
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          fmt::format("launch {} is not known here and attempt {} is running",
                                      request.launch_id(), current().number()));
    if (!attempts_.empty() && !ended(current()))
      end_attempt("superseded", "a new launch ended before this attempt did", progress_.step());
    v1::Attempt attempt;
    attempt.set_number(attempts_.empty() ? 1 : attempts_.back().number() + 1);
    attempt.set_launch_id(request.launch_id());
    attempt.set_started_unix_s(request.started_unix_s() > 0 ? request.started_unix_s() : now());
    attempt.set_first_step(last_checkpoint_.step());
    attempt.set_last_step(last_checkpoint_.step());
    attempts_.push_back(attempt);
    ranks_.clear();
    registered_ = 0;
    written_.clear();
    back_.clear();
    known = attempts_.end() - 1;
  }
  v1::Attempt& attempt = *known;
  const bool is_current = attempt.number() == current().number();
  if (is_current && !ended(attempt))
    end_attempt(request.cause(), request.message(), request.step());
  // A stop asked of this launch is done with it, however the launch ended: it must not stop the
  // next one.
  if (is_current) finish_commands(v1::Command::STOP, std::numeric_limits<int64_t>::max());
  attempt.set_cause(request.cause());
  attempt.set_cause_message(request.message());
  attempt.set_exit_code(request.exit_code());
  attempt.set_restart(request.restart() && is_current);
  store_.save_attempt(attempt);
  std::string next;
  if (!is_current)
    next = "; a later launch has superseded it";
  else if (attempt.restart())
    next = fmt::format("; restarting in {:.1f} s (restart {} of {})", request.restart_in_s(),
                       request.restarts(), request.max_restarts());
  else if (!ends_well(request.cause()))
    next = fmt::format("; the supervisor gives up after {} restarts", request.restarts());
  add_event(
      ends_well(request.cause()) ? "info" : "error", "launch_ended", -1,
      fmt::format("launch {} (attempt {}) ended: {}{}{}{}", request.launch_id(), attempt.number(),
                  request.cause(), request.message().empty() ? "" : ": ", request.message(), next));
  response->set_attempt(attempt.number());
  changed();
  return grpc::Status::OK;
}

v1::Command JobState::request_command(v1::Command::Kind kind, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  // A request while one of its kind is still pending is that one (requests do not pile up).
  for (const v1::Command& command : commands_)
    if (command.kind() == kind) return command;
  v1::Command command;
  command.set_id(next_command_id_++);
  command.set_kind(kind);
  command.set_reason(reason);
  command.set_requested_unix_s(now());
  CoordinatorStore::Transaction transaction(store_);
  store_.save_command(command);
  commands_.push_back(command);
  add_event("info", kind == v1::Command::STOP ? "stop_requested" : "checkpoint_requested", -1,
            reason.empty() ? std::string("requested") : reason);
  changed();
  return command;
}

void JobState::finish_commands(v1::Command::Kind kind, int64_t up_to) {
  auto done = [&](const v1::Command& command) {
    return command.kind() == kind && command.id() <= up_to;
  };
  for (const v1::Command& command : commands_)
    if (done(command)) store_.finish_command(command.id());
  commands_.erase(std::remove_if(commands_.begin(), commands_.end(), done), commands_.end());
}

bool JobState::is_repeat(int attempt, int rank, uint64_t sequence) {
  if (sequence == 0) return false;
  uint64_t& last = last_report_[{attempt, rank}];
  if (sequence <= last) return true;
  last = sequence;
  return false;
}

const v1::Attempt* JobState::attempt_by_number(int number) const {
  for (const v1::Attempt& attempt : attempts_)
    if (attempt.number() == number) return &attempt;
  return nullptr;
}

// ---------------------------------------------------------------- status

v1::JobState JobState::derive_state() const {
  if (attempts_.empty()) return v1::STARTING;
  const v1::Attempt& attempt = attempts_.back();
  if (ended(attempt)) {
    // The supervisor's word on a launch decides: it starts the job again, or it is done.
    if (attempt.restart()) return v1::RESTARTING;
    const std::string& why = attempt.cause().empty() ? attempt.end_reason() : attempt.cause();
    // Stopped for a requeue (a scheduler's signal): the job goes on in its next attempt.
    if (why == "requeue") return v1::RESTARTING;
    return ends_well(why) ? v1::FINISHED : v1::FAILED;
  }
  if (registered_ < attempt.world() || progress_.step() <= attempt.first_step())
    return v1::STARTING;
  if (!written_.empty()) return v1::CHECKPOINTING;
  return v1::RUNNING;
}

v1::JobStatus JobState::status(int max_ranks) const {
  std::lock_guard<std::mutex> lock(mu_);
  const double t = now();
  v1::JobStatus status;
  status.set_job_id(job_id_);
  status.set_state(derive_state());
  status.set_step(progress_.step());
  status.set_total_steps(progress_.total_steps());
  status.set_epoch(progress_.epoch());
  status.set_loss(progress_.loss());
  status.set_eval_loss(eval_loss_);
  status.set_learning_rate(progress_.learning_rate());
  status.set_tokens_per_second(progress_.tokens_per_second());
  status.set_mfu(progress_.mfu());
  const int64_t left = progress_.total_steps() - progress_.step();
  const bool running = !attempts_.empty() && !ended(attempts_.back());
  status.set_eta_s(running && seconds_per_step_ > 0 && left >= 0
                       ? static_cast<double>(left) * seconds_per_step_
                       : (left == 0 && progress_.total_steps() > 0 ? 0.0 : kNaN));
  status.set_config_hash(config_hash_);
  status.set_world(attempts_.empty() ? 0 : attempts_.back().world());

  std::vector<const Rank*> shown;
  int lost = 0;
  for (const Rank& rank : ranks_) {
    const bool is_lost = running && t - rank.last_seen > options_.heartbeat_timeout_s;
    lost += is_lost ? 1 : 0;
    shown.push_back(&rank);
  }
  if (max_ranks > 0 && static_cast<int>(shown.size()) > max_ranks) {
    std::stable_partition(shown.begin(), shown.end(), [&](const Rank* rank) {
      return running && t - rank->last_seen > options_.heartbeat_timeout_s;
    });
    shown.resize(static_cast<size_t>(max_ranks));
    std::sort(shown.begin(), shown.end(), [&](const Rank* a, const Rank* b) {
      const bool a_lost = running && t - a->last_seen > options_.heartbeat_timeout_s;
      const bool b_lost = running && t - b->last_seen > options_.heartbeat_timeout_s;
      return a_lost != b_lost ? a_lost : a->health.rank() < b->health.rank();
    });
  }
  for (const Rank* rank : shown) {
    v1::RankHealth& health = *status.add_ranks();
    health = rank->health;
    health.set_heartbeat_age_s(std::max(0.0, t - rank->last_seen));
    health.set_lost(running && t - rank->last_seen > options_.heartbeat_timeout_s);
  }
  status.set_lost_ranks(lost);
  for (const v1::Attempt& attempt : attempts_) *status.add_attempts() = attempt;
  *status.mutable_last_checkpoint() = last_checkpoint_;
  for (v1::Event& event : store_.recent_events(options_.recent_events))
    *status.add_recent_events() = std::move(event);
  status.set_updated_unix_s(updated_);
  status.set_now_unix_s(t);
  for (const v1::Command& command : commands_) *status.add_pending_commands() = command;
  status.set_grad_norm(progress_.grad_norm());
  status.set_step_seconds(progress_.step_seconds());
  status.set_heartbeat_timeout_s(options_.heartbeat_timeout_s);
  status.set_registered_ranks(registered_);
  return status;
}

std::vector<v1::Checkpoint> JobState::checkpoints() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.checkpoints();
}

std::vector<v1::Event> JobState::events(int64_t after_id, int limit) const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.events(after_id, limit);
}

std::vector<v1::MetricPoint> JobState::metrics(int max_points) const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.metrics(max_points);
}

void JobState::flush(bool all) {
  std::lock_guard<std::mutex> lock(mu_);
  if (attempts_.empty()) return;
  const double t = now();
  const bool running = !ended(current());
  std::vector<int> newly_lost;
  for (Rank& rank : ranks_) {
    if (running && !rank.reported_lost && t - rank.last_seen > options_.heartbeat_timeout_s) {
      rank.reported_lost = true;
      newly_lost.push_back(rank.health.rank());
    }
  }
  // At most kRanksPerFlush ranks' health per call, round robin: heartbeats wait while this holds
  // the lock, so the pause stays a few milliseconds however many ranks there are (at 1 call a
  // second, 4,096 ranks are each recorded every 16 s).
  std::vector<v1::RankHealth> health;
  const size_t n = all ? ranks_.size() : std::min(ranks_.size(), kRanksPerFlush);
  health.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const Rank& rank = ranks_[(flush_cursor_ + i) % ranks_.size()];
    health.push_back(rank.health);
    health.back().set_heartbeat_age_s(t - rank.last_seen);
  }
  flush_cursor_ = ranks_.empty() ? 0 : (flush_cursor_ + n) % ranks_.size();
  CoordinatorStore::Transaction transaction(store_);
  store_.save_ranks(current().number(), health);
  if (!back_.empty()) {
    add_event("info", "rank_back", back_.size() == 1 ? back_.front() : -1,
              back_.size() == 1 ? fmt::format("rank {} heartbeats again", back_.front())
                                : fmt::format("{} ranks heartbeat again (first: rank {})",
                                              back_.size(), back_.front()));
    back_.clear();
    changed();
  }
  if (newly_lost.empty()) return;
  if (newly_lost.size() <= 8) {
    for (int r : newly_lost)
      add_event("warning", "rank_lost", r,
                fmt::format("rank {} ({}) sent no heartbeat for {:.0f} s", r,
                            ranks_[static_cast<size_t>(r)].health.host(),
                            t - ranks_[static_cast<size_t>(r)].last_seen));
  } else {
    add_event("warning", "rank_lost", -1,
              fmt::format("{} ranks sent no heartbeat for {:.0f} s (first: rank {})",
                          newly_lost.size(), options_.heartbeat_timeout_s, newly_lost.front()));
  }
  changed();
}

// ---------------------------------------------------------------- watching

uint64_t JobState::version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return version_;
}

uint64_t JobState::wait_for_change(uint64_t version, double timeout_s) const {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::duration<double>(timeout_s),
               [&] { return closed_ || version_ != version; });
  return version_;
}

bool JobState::wait_until_closed(double timeout_s) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return closed_; });
}

void JobState::close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

}  // namespace ptrain
