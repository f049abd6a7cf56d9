#include "cluster/supervisor.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "cluster/hang_triage.h"
#include "ptrain/v1/coordinator.grpc.pb.h"

namespace ptrain {
namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string program_of(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

bool is_srun(const std::vector<std::string>& argv) {
  return program_of(argv.front()) == "srun";
}

bool is_mpirun(const std::vector<std::string>& argv) {
  const std::string name = program_of(argv.front());
  return name == "mpirun" || name == "mpiexec" || name == "orterun";
}

// Launchers and their daemons: a SIGTERM to one of these tears the job down before the ranks'
// own handling (checkpoint, exit 4) can run, so it goes to the ranks directly.
bool is_launcher(const std::string& name) {
  static const std::set<std::string> launchers = {"mpirun",        "mpiexec",         "orterun",
                                                  "prterun",       "orted",           "prted",
                                                  "mpiexec.hydra", "hydra_pmi_proxy", "srun"};
  return launchers.count(name) > 0;
}

std::string random_launch_id() {
  std::random_device device;
  return fmt::format("{:08x}{:08x}", device(), device());
}

const char* signal_name(int signal) {
  switch (signal) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a signal";
  }
}

sigset_t supervised_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP}) sigaddset(&set, s);
  return set;
}

// Waits up to `seconds` for one of the supervised signals; 0 when none came.
int wait_signal(double seconds) {
  const sigset_t set = supervised_signals();
  timespec timeout;
  seconds = std::max(0.0, seconds);
  timeout.tv_sec = static_cast<time_t>(seconds);
  timeout.tv_nsec = static_cast<long>((seconds - std::floor(seconds)) * 1e9);
  const int got = sigtimedwait(&set, nullptr, &timeout);
  return got > 0 ? got : 0;
}

}  // namespace

struct Supervisor::Watch {
  size_t index = 0;  // into launches_
  double last_progress_unix_s = 0;
  int64_t last_step = -1;
  int64_t events_after = 0;
  bool status_known = false, warned_unreachable = false;
  double unreachable_since = 0;
  int world = 0;
  std::vector<v1::RankHealth> ranks;
  std::string end_reason;  // how the ranks ended the attempt ("" while running)
  // Set when the supervisor judged the launch failed while its command still ran.
  std::string judged_cause, judged_message;
  double pid_gone_unix_s = 0;  // when a rank's process on this host was first seen gone
  int pid_gone_rank = -1;
};

void Supervisor::block_signals() {
  const sigset_t set = supervised_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

Supervisor::Supervisor(SupervisorOptions options, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)), log_(std::move(log)) {
  channel_ = make_rpc_channel(options_.rpc);
}

Supervisor::Verdict Supervisor::judge_exit(int wait_status) {
  Verdict v;
  v.message = "the command ended with " + JobProcess::describe(wait_status);
  if (WIFEXITED(wait_status)) {
    switch (WEXITSTATUS(wait_status)) {
      case 0:
        v.cause = "finished";
        v.exit_code = 0;
        return v;
      case 2:
        v.cause = "bad_input";
        v.message += " (bad input: a config, data or file error that a restart cannot fix)";
        v.exit_code = 2;
        return v;
      case 4:
        v.cause = "requeue";
        v.message += " (stopped for a requeue after a checkpoint)";
        v.exit_code = 4;
        return v;
      case 3:
        v.cause = "runtime_failure";
        break;
      default:
        v.cause = "exit";
        break;
    }
  } else {
    v.cause = "signal";
  }
  v.retry = true;
  v.exit_code = 3;
  return v;
}

int Supervisor::run() {
  // A job requeued by its scheduler comes back to the same coordinator state: its first launch
  // here is a restart too, and resumes from the job's last committed checkpoint.
  {
    auto stub = v1::Coordinator::NewStub(channel_);
    v1::GetJobStatusRequest request;
    request.set_max_ranks(1);
    v1::JobStatus status;
    const auto context = make_rpc_context(options_.rpc);
    if (stub->GetJobStatus(context.get(), request, &status).ok() && status.attempts_size() > 0) {
      earlier_attempts_ = status.attempts_size();
      log_->info(
          "the coordinator knows {} earlier attempt{} of job '{}' (state {}): the job "
          "continues from its last committed checkpoint",
          earlier_attempts_, earlier_attempts_ > 1 ? "s" : "", status.job_id(),
          v1::JobState_Name(status.state()));
    }
  }
  for (;;) {
    start_launch();
    Watch watch_state;
    watch_state.index = launches_.size() - 1;
    watch(watch_state);
    end_launch(watch_state);
    if (outcome_ >= 0) break;
    const double wait =
        std::min(options_.max_backoff_s, options_.backoff_s * std::pow(2.0, restarts_ - 1));
    if (!wait_backoff(wait)) {
      outcome_ = stop_signal_ != 0 ? 4 : 3;
      log_->warn("{} during the wait before restart {}: not restarting",
                 signal_name(stop_signal_ != 0 ? stop_signal_ : SIGINT), restarts_);
      launches_.back().restart = false;
      report_launch(launches_.back(), 0);
      break;
    }
  }
  log_->info("{}", summary_text());
  return outcome_;
}

void Supervisor::start_launch() {
  LaunchRecord launch;
  launch.number = static_cast<int>(launches_.size()) + 1;
  launch.launch_id = random_launch_id();
  launch.started_unix_s = unix_now();
  std::vector<std::string> argv = options_.command;
  if (is_mpirun(argv))
    // Open MPI passes its own environment to the ranks it starts on this host only.
    argv.insert(argv.begin() + 1, {"-x", "PTRAIN_COORDINATOR_ADDRESS", "-x", "PTRAIN_LAUNCH_ID",
                                   "-x", "PTRAIN_RESTART"});
  const std::vector<std::pair<std::string, std::string>> env = {
      {"PTRAIN_COORDINATOR_ADDRESS", options_.rpc.address},
      {"PTRAIN_LAUNCH_ID", launch.launch_id},
      {"PTRAIN_RESTART", std::to_string(earlier_attempts_ + restarts_)}};
  launches_.push_back(launch);
  process_.reset();
  process_ = std::make_unique<JobProcess>(argv, env);
  if (restarts_ == 0)
    log_->info("launch 1 ({}): pid {}", launch.launch_id, process_->pid());
  else
    log_->info(
        "launch {} ({}), restart {} of {}: pid {}; it resumes from the last committed "
        "checkpoint",
        launch.number, launch.launch_id, restarts_, options_.max_restarts, process_->pid());
}

void Supervisor::watch(Watch& w) {
  LaunchRecord& launch = launches_[w.index];
  w.last_progress_unix_s = launch.started_unix_s;
  while (!process_->poll()) {
    const int signal = wait_signal(options_.poll_interval_s);
    if (signal != 0 && signal != SIGCHLD && !handle_signal(signal, &w)) break;
    if (process_->poll()) break;
    poll_coordinator(w);
    if (!w.judged_cause.empty()) break;
  }
  launch.detected_unix_s = unix_now();
  if (!w.judged_cause.empty()) {
    log_->error("launch {}: {}: {}; killing its processes", launch.number, w.judged_cause,
                w.judged_message);
  }
  if (!process_->ended() && is_srun(options_.command)) {
    // srun kills its step's tasks on every node when interrupted twice within a second; then
    // SIGKILL takes what is left here.
    // (Two signals sent at once would merge into one.)
    ::kill(process_->pid(), SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(process_->pid(), SIGINT);
    const double deadline = unix_now() + options_.srun_grace_s;
    while (!process_->poll() && unix_now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Whatever ended it, nothing of the launch may outlive it (a rank its launcher left behind).
  if (!process_->kill_all(30))
    log_->error("launch {}: some of its processes did not die within 30 s of SIGKILL",
                launch.number);
  launch.torn_down_unix_s = unix_now();
  launch.ended_unix_s = launch.torn_down_unix_s;
  poll_coordinator(w);  // the attempt's last word (its end, its hang reports)
}

bool Supervisor::handle_signal(int signal, Watch* w) {
  if (signal == SIGINT) {
    ++interrupts_;
    if (interrupts_ == 1) {
      log_->warn("SIGINT: passed to the job, which stops after a checkpoint (again: kill it)");
      forward(SIGINT);
      return true;
    }
    if (w != nullptr) {
      w->judged_cause = "interrupted";
      w->judged_message = "SIGINT twice";
    }
    return false;
  }
  stop_signal_ = signal;
  log_->warn("{}: passed to the job; no restart follows", signal_name(signal));
  forward(signal);
  return true;
}

void Supervisor::forward(int signal) {
  if (!process_ || process_->ended()) return;
  if (is_srun(options_.command)) {
    // srun passes signals to its step's tasks on every node.
    ::kill(process_->pid(), signal);
    return;
  }
  // The ranks on this host directly; launchers get only what they pass on (Open MPI forwards
  // SIGUSR1 and SIGUSR2 to every rank) and never a SIGTERM that would tear the job down first.
  const bool launchers_too = signal == SIGUSR1 || signal == SIGUSR2;
  process_->signal_members(signal, [&](pid_t pid) {
    return launchers_too || !is_launcher(JobProcess::program_name(pid));
  });
}

void Supervisor::poll_coordinator(Watch& w) {
  LaunchRecord& launch = launches_[w.index];
  const double now = unix_now();
  auto stub = v1::Coordinator::NewStub(channel_);
  v1::GetJobStatusRequest request;
  request.set_max_ranks(256);
  v1::JobStatus status;
  const auto context = make_rpc_context(options_.rpc, std::min(options_.rpc.rpc_timeout_s, 2.0));
  const grpc::Status rpc = stub->GetJobStatus(context.get(), request, &status);
  if (!rpc.ok()) {
    // Said once it lasts: a first connection on a loaded host can miss a deadline.
    if (w.unreachable_since == 0) w.unreachable_since = now;
    if (!w.warned_unreachable && now - w.unreachable_since > 5) {
      log_->warn("the coordinator at {} does not answer ({}): watching the command only",
                 options_.rpc.address, describe_status(rpc));
      w.warned_unreachable = true;
    }
  } else {
    w.unreachable_since = 0;
    w.warned_unreachable = false;
    // Hang reports are looked for among the events after those already there.
    if (!w.status_known && !status.recent_events().empty())
      w.events_after = status.recent_events(status.recent_events_size() - 1).id();
    w.status_known = true;
    const v1::Attempt* ours = nullptr;
    for (const v1::Attempt& a : status.attempts())
      if (a.launch_id() == launch.launch_id) ours = &a;
    const bool current = ours != nullptr && &status.attempts(status.attempts_size() - 1) == ours;
    if (ours != nullptr) {
      launch.attempt = ours->number();
      launch.first_step = ours->first_step();
      launch.last_step = std::max(launch.last_step, ours->last_step());
      w.end_reason = ours->end_reason();
      if (launch.number > 1 && !launch.recovered && ours->first_step_unix_s() > 0)
        note_recovery(w, *ours);
    }
    if (current) {
      w.world = ours->world();
      w.ranks.assign(status.ranks().begin(), status.ranks().end());
      if (status.step() > w.last_step) {
        w.last_step = status.step();
        w.last_progress_unix_s = now;
      }
      const bool running = ours->ended_unix_s() == 0 && !process_->ended();
      if (running && status.lost_ranks() > 0 && w.judged_cause.empty()) {
        std::vector<int> lost;
        double oldest = 0;
        for (const v1::RankHealth& h : status.ranks())
          if (h.lost()) {
            lost.push_back(h.rank());
            oldest = std::max(oldest, h.heartbeat_age_s());
          }
        w.judged_cause = "rank_lost";
        w.judged_message =
            fmt::format("{} rank{} ({}) sent no heartbeat for {:.1f} s (heartbeat_timeout {:g} s)",
                        status.lost_ranks(), status.lost_ranks() > 1 ? "s" : "", rank_ranges(lost),
                        oldest, status.heartbeat_timeout_s());
        launch.failure_unix_s = now - oldest;
      }
    }
  }
  // A rank process on this host that is gone: the moment of a death, seen directly.
  if (w.pid_gone_rank < 0 && !process_->ended())
    for (const v1::RankHealth& h : w.ranks)
      if (h.pid() > 0 && h.host() == options_.host && ::kill(static_cast<pid_t>(h.pid()), 0) != 0 &&
          errno == ESRCH) {
        w.pid_gone_unix_s = now;
        w.pid_gone_rank = h.rank();
        break;
      }
  if (w.judged_cause.empty() && !process_->ended() &&
      now - w.last_progress_unix_s > options_.stall_timeout_s) {
    w.judged_cause = "stall";
    w.judged_message = fmt::format("no step completed for {:.0f} s (stall_timeout {:g} s){}",
                                   now - w.last_progress_unix_s, options_.stall_timeout_s,
                                   w.last_step >= 0 ? fmt::format(", last at step {}", w.last_step)
                                                    : std::string(", none yet"));
    launch.failure_unix_s = w.last_progress_unix_s;
  }
}

void Supervisor::note_recovery(Watch& w, const v1::Attempt& attempt) {
  LaunchRecord& launch = launches_[w.index];
  const LaunchRecord& before = launches_[w.index - 1];
  launch.recovered = true;
  Recovery& r = launch.recovery;
  r.failure_unix_s = before.failure_unix_s > 0 ? before.failure_unix_s : before.detected_unix_s;
  r.detection_s = before.detected_unix_s - r.failure_unix_s;
  r.teardown_s = before.torn_down_unix_s - before.detected_unix_s;
  r.backoff_s = launch.started_unix_s - before.torn_down_unix_s;
  r.checkpoint_load_s = attempt.resume_seconds();
  const double registered =
      attempt.registered_unix_s() > 0 ? attempt.registered_unix_s() : attempt.started_unix_s();
  r.process_start_s = registered - launch.started_unix_s - r.checkpoint_load_s;
  r.first_step_s = attempt.first_step_unix_s() - registered;
  r.total_s = attempt.first_step_unix_s() - r.failure_unix_s;
  log_->info(
      "recovery: {:.2f} s from the failure to the next completed step (step {}): detection "
      "{:.2f} s, teardown {:.2f} s, backoff {:.2f} s, process start {:.2f} s, checkpoint load "
      "{:.2f} s, first step {:.2f} s",
      r.total_s, attempt.first_step() + 1, r.detection_s, r.teardown_s, r.backoff_s,
      r.process_start_s, r.checkpoint_load_s, r.first_step_s);
}

void Supervisor::end_launch(Watch& w) {
  LaunchRecord& launch = launches_[w.index];
  Verdict verdict;
  if (!w.judged_cause.empty()) {
    verdict.cause = w.judged_cause;
    verdict.message = w.judged_message;
    verdict.retry = w.judged_cause != "interrupted";
    verdict.exit_code = 3;
  } else {
    verdict = judge_exit(process_->wait_status());
    if (verdict.cause != "finished" && w.end_reason == "finished") {
      log_->warn("launch {}: {}, after its ranks finished the job: taken as finished",
                 launch.number, verdict.message);
      verdict = judge_exit(0);
    }
  }
  launch.exit_code = JobProcess::shell_code(process_->wait_status());
  if (launch.failure_unix_s == 0)
    launch.failure_unix_s = w.pid_gone_unix_s > 0 ? w.pid_gone_unix_s : launch.detected_unix_s;
  if (w.pid_gone_rank >= 0 && verdict.retry)
    verdict.message +=
        fmt::format("; rank {} was the first whose process was gone", w.pid_gone_rank);

  // Hang triage: what the ranks whose watchdog fired reported before the job was aborted.
  if (w.status_known && launch.attempt > 0 && verdict.retry) {
    auto stub = v1::Coordinator::NewStub(channel_);
    std::vector<v1::Event> hangs;
    for (int page = 0; page < 100; ++page) {
      v1::ListEventsRequest request;
      request.set_after_id(w.events_after);
      request.set_limit(1000);
      v1::ListEventsResponse response;
      const auto context = make_rpc_context(options_.rpc);
      if (!stub->ListEvents(context.get(), request, &response).ok() || response.events().empty())
        break;
      for (const v1::Event& e : response.events())
        if (e.kind() == "hang" && e.attempt() == launch.attempt) hangs.push_back(e);
      w.events_after = response.events(response.events_size() - 1).id();
    }
    const HangTriage triage = triage_hang(hangs, w.world, w.ranks);
    if (triage.found) {
      verdict.cause = "hang";
      verdict.message = triage.summary + " (" + verdict.message + ")";
      launch.triage = triage.details;
      // The job stopped making progress when the first rank began to wait.
      if (triage.stuck_since_unix_s > 0) launch.failure_unix_s = triage.stuck_since_unix_s;
      for (const std::string& line : triage.details)
        log_->error("launch {} hang triage: {}", launch.number, line);
    }
  }
  launch.cause = verdict.cause;
  launch.message = verdict.message;

  double restart_in = 0;
  if (verdict.retry && stop_signal_ == 0 && interrupts_ == 0 && restarts_ < options_.max_restarts) {
    launch.restart = true;
    ++restarts_;
    restart_in =
        std::min(options_.max_backoff_s, options_.backoff_s * std::pow(2.0, restarts_ - 1));
    log_->error("launch {} failed: {}: {}; restart {} of {} in {:.1f} s", launch.number,
                verdict.cause, verdict.message, restarts_, options_.max_restarts, restart_in);
  } else if (verdict.retry) {
    outcome_ = stop_signal_ != 0 ? 4 : 3;
    log_->error(
        "launch {} failed: {}: {}; {}", launch.number, verdict.cause, verdict.message,
        stop_signal_ != 0 || interrupts_ != 0
            ? "stopped by a signal: no restart"
            : fmt::format("no restart left ({} of {} used)", restarts_, options_.max_restarts));
  } else {
    outcome_ = stop_signal_ != 0 && verdict.exit_code == 3 ? 4 : verdict.exit_code;
    (verdict.cause == "finished" ? log_->info("launch {}: {}", launch.number, verdict.message)
                                 : log_->warn("launch {}: {}", launch.number, verdict.message));
  }
  report_launch(launch, restart_in);
}

void Supervisor::report_launch(const LaunchRecord& launch, double restart_in_s) {
  v1::ReportLaunchRequest request;
  request.set_launch_id(launch.launch_id);
  request.set_started_unix_s(launch.started_unix_s);
  request.set_cause(launch.cause);
  request.set_message(launch.message.substr(0, 4000));
  request.set_exit_code(launch.exit_code);
  request.set_restart(launch.restart);
  request.set_restart_in_s(restart_in_s);
  request.set_restarts(restarts_);
  request.set_max_restarts(options_.max_restarts);
  request.set_step(std::max<int64_t>(0, launch.last_step));
  auto stub = v1::Coordinator::NewStub(channel_);
  grpc::Status status;
  for (int attempt = 0; attempt < 3; ++attempt) {
    v1::ReportLaunchResponse response;
    const auto context = make_rpc_context(options_.rpc);
    status = stub->ReportLaunch(context.get(), request, &response);
    if (status.ok() || status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        status.error_code() == grpc::StatusCode::UNAUTHENTICATED)
      break;
  }
  if (!status.ok())
    log_->warn("the coordinator did not record how launch {} ended: {}", launch.number,
               describe_status(status));
}

bool Supervisor::wait_backoff(double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    const double left =
        std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return true;
    const int signal = wait_signal(left);
    if (signal == SIGCHLD || signal == 0) {
      if (process_) process_->poll();  // an orphan's exit
      continue;
    }
    if (signal == SIGINT)
      ++interrupts_;
    else
      stop_signal_ = signal;
    return false;
  }
}

nlohmann::json Supervisor::summary() const {
  nlohmann::json launches = nlohmann::json::array();
  for (const LaunchRecord& l : launches_) {
    nlohmann::json j = {{"launch", l.number},
                        {"launch_id", l.launch_id},
                        {"attempt", l.attempt},
                        {"started_unix_s", l.started_unix_s},
                        {"ended_unix_s", l.ended_unix_s},
                        {"failure_unix_s", l.failure_unix_s},
                        {"detected_unix_s", l.detected_unix_s},
                        {"torn_down_unix_s", l.torn_down_unix_s},
                        {"cause", l.cause},
                        {"message", l.message},
                        {"exit_code", l.exit_code},
                        {"restart", l.restart},
                        {"first_step", l.first_step},
                        {"last_step", l.last_step},
                        {"triage", l.triage}};
    if (l.recovered) {
      const Recovery& r = l.recovery;
      j["recovery"] = {
          {"failure_unix_s", r.failure_unix_s},   {"detection_s", r.detection_s},
          {"teardown_s", r.teardown_s},           {"backoff_s", r.backoff_s},
          {"process_start_s", r.process_start_s}, {"checkpoint_load_s", r.checkpoint_load_s},
          {"first_step_s", r.first_step_s},       {"total_s", r.total_s}};
    }
    launches.push_back(j);
  }
  return {{"exit_code", outcome_},
          {"restarts", restarts_},
          {"max_restarts", options_.max_restarts},
          {"launches", launches}};
}

std::string Supervisor::summary_text() const {
  std::string outcome;
  const LaunchRecord* last = launches_.empty() ? nullptr : &launches_.back();
  switch (outcome_) {
    case 0:
      outcome = "the job finished";
      break;
    case 2:
      outcome = "bad input (exit 2): a permanent failure, not retried";
      break;
    case 4:
      outcome = "stopped for a requeue (exit 4): it resumes from its last checkpoint";
      break;
    default:
      outcome = stop_signal_ != 0 || interrupts_ != 0
                    ? "stopped by a signal after a failed launch (exit 3)"
                    : fmt::format(
                          "gave up after {} restarts (exit 3): the last failure was a "
                          "runtime one, which a restart could fix, but none was left",
                          restarts_);
  }
  std::string text =
      fmt::format("ptrain-launch: {}; {} launch{}, last step {}", outcome, launches_.size(),
                  launches_.size() == 1 ? "" : "es", last ? last->last_step : -1);
  for (const LaunchRecord& l : launches_) {
    text +=
        fmt::format("\n  launch {} (attempt {}): steps {}..{}, {}: {}{}", l.number, l.attempt,
                    l.first_step, l.last_step, l.cause, l.message, l.restart ? "; restarted" : "");
    if (l.recovered)
      text += fmt::format(" [recovered {:.1f} s after the failure]", l.recovery.total_s);
  }
  return text;
}

}  // namespace ptrain
