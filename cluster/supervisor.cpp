#include "cluster/supervisor.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "cluster/coordinator_client.h"
#include "cluster/hang_triage.h"
#include "core/clock.h"
#include "core/error.h"
#include "ptrain/v1/coordinator.grpc.pb.h"

namespace ptrain {
namespace {

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

// The launchers that pass SIGUSR1 on to every rank they started, on every host (Open MPI's mpirun
// does; so does srun). A SIGTERM or SIGHUP would make them tear the job down instead.
bool passes_usr1_on(const std::string& name) {
  return name == "mpirun" || name == "mpiexec" || name == "orterun" || name == "prterun" ||
         name == "srun";
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
  int64_t progress = -1;  // the furthest step any rank of the launch has completed
  int64_t events_after = 0;
  bool status_known = false, reachable = false, warned_unreachable = false;
  double unreachable_since = 0;
  bool registered = false;    // the launch's attempt is known to the coordinator
  bool stop_pending = false;  // a SIGINT's stop, sent once the launch registers
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
  PTRAIN_CHECK(pthread_sigmask(SIG_BLOCK, &set, nullptr) == 0, "cannot block signals");
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
  read_earlier_attempts();
  if (interrupts_ != 0 || stop_signal_ != 0) {
    log_->warn("{} before the first launch: nothing started",
               signal_name(stop_signal_ != 0 ? stop_signal_ : SIGINT));
    return stop_signal_ != 0 ? 4 : 3;
  }
  for (;;) {
    if (start_launch()) {
      Watch w;
      w.index = launches_.size() - 1;
      watch(w);
      Verdict verdict = judge(w);
      triage(w, verdict);
      decide(launches_[w.index], verdict);
    }
    if (outcome_ >= 0) break;
    if (!wait_backoff(backoff())) {
      // Stopped before the restart: the job rests on its last committed checkpoint. A SIGTERM or
      // SIGUSR1 (a preemption, a time limit) asks for the requeue that resumes from it.
      LaunchRecord& last = launches_.back();
      last.restart = false;
      --restarts_;
      if (stop_signal_ != 0) {
        outcome_ = 4;
        last.cause = "requeue";
        last.message += fmt::format("; {} before the restart: stopped for a requeue",
                                    signal_name(stop_signal_));
      } else {
        outcome_ = 3;
        last.message += "; SIGINT before the restart: not restarted";
      }
      log_->warn("{}", last.message);
      report_launch(last, 0);
      break;
    }
  }
  log_->info("{}", summary_text());
  return outcome_;
}

void Supervisor::read_earlier_attempts() {
  // A job requeued by its scheduler comes back to the same coordinator state: its first launch
  // here is a restart too, and resumes from the job's last committed checkpoint. An external
  // coordinator may take a moment to answer; a job must not silently start over without it.
  auto stub = v1::Coordinator::NewStub(channel_);
  grpc::Status rpc;
  for (int attempt = 0; attempt < 10; ++attempt) {
    v1::GetJobStatusRequest request;
    request.set_max_ranks(1);
    v1::JobStatus status;
    const auto context = make_rpc_context(options_.rpc);
    rpc = stub->GetJobStatus(context.get(), request, &status);
    if (rpc.ok()) {
      earlier_attempts_ = status.attempts_size();
      if (earlier_attempts_ > 0)
        log_->info(
            "the coordinator knows {} earlier attempt{} of job '{}' (state {}): the job "
            "continues from its last committed checkpoint",
            earlier_attempts_, earlier_attempts_ > 1 ? "s" : "", status.job_id(),
            v1::JobState_Name(status.state()));
      return;
    }
    const int signal = wait_signal(1.0);
    if (signal == SIGINT) ++interrupts_;
    if (signal != 0 && signal != SIGCHLD && signal != SIGINT) stop_signal_ = signal;
    if (interrupts_ != 0 || stop_signal_ != 0) return;  // run() stops before any launch
  }
  log_->warn(
      "the coordinator at {} does not answer ({}): the first launch starts as a new job (a "
      "requeued one needs resume_from_checkpoint: latest in its config)",
      options_.rpc.address, describe_status(rpc));
}

bool Supervisor::start_launch() {
  LaunchRecord launch;
  launch.number = static_cast<int>(launches_.size()) + 1;
  launch.launch_id = new_launch_id();
  launch.started_unix_s = unix_now();
  std::vector<std::string> argv = options_.command;
  if (is_mpirun(argv))
    // Open MPI passes its own environment to the ranks it starts on this host only.
    argv.insert(argv.begin() + 1, {"-x", "PTRAIN_COORDINATOR_ADDRESS", "-x", "PTRAIN_LAUNCH_ID",
                                   "-x", "PTRAIN_RESTART"});
  std::vector<std::pair<std::string, std::string>> env = {
      {"PTRAIN_COORDINATOR_ADDRESS", options_.rpc.address},
      {"PTRAIN_LAUNCH_ID", launch.launch_id},
      {"PTRAIN_RESTART", std::to_string(earlier_attempts_ + restarts_)}};
  // When a rank dies, mpirun sends the others SIGTERM and SIGKILL only a second later. ptrain
  // takes SIGTERM as "checkpoint, then stop", which ranks stuck in a collective with a dead peer
  // cannot do: the second is lost to every recovery. (A user's own setting stands.)
  if (is_mpirun(argv) && std::getenv("OMPI_MCA_odls_base_sigkill_timeout") == nullptr)
    env.emplace_back("OMPI_MCA_odls_base_sigkill_timeout", "0");
  launches_.push_back(launch);
  process_.reset();
  try {
    process_ = std::make_unique<JobProcess>(argv, env);
  } catch (const Error& e) {
    // The first launch's command is wrong (not found, not executable): bad input. Later, the
    // same command ran before: what stops it now (a full process table, a vanished file system)
    // may pass, so it is retried.
    LaunchRecord& failed = launches_.back();
    failed.detected_unix_s = failed.torn_down_unix_s = failed.ended_unix_s = unix_now();
    Verdict verdict;
    verdict.cause = "spawn";
    verdict.message = e.what();
    verdict.retry = launch.number > 1;
    verdict.exit_code = verdict.retry ? 3 : 2;
    failed.exit_code = 127;  // as a shell reports a command it cannot run
    decide(failed, verdict);
    return false;
  }
  if (launch.number == 1)
    log_->info("launch 1 ({}): pid {}", launch.launch_id, process_->pid());
  else
    log_->info(
        "launch {} ({}), restart {} of {}: pid {}; it resumes from the last committed "
        "checkpoint",
        launch.number, launch.launch_id, restarts_, options_.max_restarts, process_->pid());
  return true;
}

void Supervisor::watch(Watch& w) {
  LaunchRecord& launch = launches_[w.index];
  w.last_progress_unix_s = launch.started_unix_s;
  while (!process_->poll()) {
    const int signal = wait_signal(options_.poll_interval_s);
    if (signal != 0 && signal != SIGCHLD && !handle_signal(signal, &w)) break;
    if (process_->poll()) break;
    poll(w);
    if (!w.judged_cause.empty()) break;
  }
  launch.detected_unix_s = unix_now();
  if (!w.judged_cause.empty() && !process_->ended())
    log_->error("launch {}: {}: {}; killing its processes", launch.number, w.judged_cause,
                w.judged_message);
  teardown(w);
  poll(w);  // the attempt's last word (its end, its progress)
}

void Supervisor::teardown(Watch& w) {
  LaunchRecord& launch = launches_[w.index];
  if (!process_->ended() && is_srun(options_.command)) {
    // srun kills its step's tasks on every node when interrupted twice within a second (two
    // signals sent at once would merge into one); then SIGKILL takes what is left here.
    ::kill(process_->pid(), SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(process_->pid(), SIGINT);
    const double deadline = unix_now() + options_.srun_grace_s;
    while (!process_->poll() && unix_now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Whatever ended it, nothing of the launch may outlive it (a rank its launcher left behind).
  try {
    if (!process_->kill_all(30))
      log_->error("launch {}: some of its processes did not die within 30 s of SIGKILL",
                  launch.number);
  } catch (const Error& e) {
    log_->error("launch {}: its processes could not be killed: {}", launch.number, e.what());
  }
  launch.torn_down_unix_s = unix_now();
  launch.ended_unix_s = launch.torn_down_unix_s;
}

bool Supervisor::handle_signal(int signal, Watch* w) {
  if (signal == SIGINT) {
    ++interrupts_;
    if (interrupts_ == 1) {
      log_->warn("SIGINT: the job stops after a checkpoint (SIGINT again: kill it)");
      forward(SIGINT, w);
      return true;
    }
    if (w != nullptr) {
      w->judged_cause = "interrupted";
      w->judged_message = "SIGINT twice";
    }
    return false;
  }
  stop_signal_ = signal;
  log_->warn("{}: the job stops after a checkpoint for a requeue; no restart follows",
             signal_name(signal));
  forward(signal, w);
  return true;
}

bool Supervisor::request_stop(const std::string& reason) {
  auto stub = v1::Coordinator::NewStub(channel_);
  v1::RequestStopRequest request;
  request.set_reason(reason);
  v1::RequestStopResponse response;
  const auto context = make_rpc_context(options_.rpc);
  return stub->RequestStop(context.get(), request, &response).ok();
}

void Supervisor::forward(int signal, Watch* w) {
  if (!process_ || process_->ended()) return;
  if (signal == SIGINT) {
    // Through the coordinator: every rank stops at the same step after a checkpoint, exit 0.
    // Before the launch registered, the stop waits for it (poll() sends it then).
    if (w != nullptr && w->registered && w->end_reason.empty()) {
      if (!request_stop("SIGINT to ptrain-launch"))
        log_->warn("the coordinator did not take the stop; SIGINT again kills the job");
    } else if (w != nullptr) {
      w->stop_pending = true;
    }
    return;
  }
  // ptrain's ranks take SIGUSR1 (and SIGINT) as "checkpoint at the next step boundary, then
  // exit"; the launchers pass SIGUSR1 on to every rank on every host. Nothing else in the
  // session (a wrapper shell, MPI's daemons) is signalled: it would only die of it.
  process_->signal_members(SIGUSR1, [&](pid_t pid) {
    const std::string name = JobProcess::program_name(pid);
    return name == "ptrain" || passes_usr1_on(name);
  });
}

void Supervisor::poll(Watch& w) {
  LaunchRecord& launch = launches_[w.index];
  const double now = unix_now();
  auto stub = v1::Coordinator::NewStub(channel_);
  v1::GetJobStatusRequest request;
  request.set_max_ranks(256);
  v1::JobStatus status;
  const auto context = make_rpc_context(options_.rpc, std::min(options_.rpc.rpc_timeout_s, 2.0));
  const grpc::Status rpc = stub->GetJobStatus(context.get(), request, &status);
  w.reachable = rpc.ok();
  if (!rpc.ok()) {
    // Said once it lasts: a first connection on a loaded host can miss a deadline.
    if (w.unreachable_since == 0) w.unreachable_since = now;
    if (!w.warned_unreachable && now - w.unreachable_since > 5) {
      log_->warn(
          "the coordinator at {} does not answer ({}): until it does, only the command's exit "
          "ends this launch (no lost-rank or stall checks)",
          options_.rpc.address, describe_status(rpc));
      w.warned_unreachable = true;
    }
  } else {
    // Time the coordinator could not show progress is not time without it.
    if (w.unreachable_since > 0) w.last_progress_unix_s += now - w.unreachable_since;
    w.unreachable_since = 0;
    w.warned_unreachable = false;
    // Hang reports are looked for among the events after those already there.
    if (!w.status_known && !status.recent_events().empty())
      w.events_after = status.recent_events(status.recent_events_size() - 1).id();
    w.status_known = true;
    const v1::Attempt* ours = nullptr;
    for (const v1::Attempt& a : status.attempts())
      if (a.launch_id() == launch.launch_id) ours = &a;
    if (ours != nullptr) {
      w.registered = launch.registered = true;
      job_id_ = status.job_id();
      launch.attempt = ours->number();
      launch.first_step = ours->first_step();
      launch.last_step = std::max(launch.last_step, ours->last_step());
      w.end_reason = ours->end_reason();
      if (launch.number > 1 && !launch.recovered && ours->first_step_unix_s() > 0)
        note_recovery(w, *ours);
    }
    if (ours != nullptr && &status.attempts(status.attempts_size() - 1) == ours) {
      // Progress: the furthest step a rank reported in its heartbeats (every step boundary),
      // or the job's logged step.
      w.world = ours->world();
      // The ranks' health as it was while the launch ran: after the teardown a killed rank's
      // last words (a stopped one, continued to be killed) would hide its silence.
      if (!process_->ended()) w.ranks.assign(status.ranks().begin(), status.ranks().end());
      int64_t progress = status.step();
      for (const v1::RankHealth& h : status.ranks()) progress = std::max(progress, h.step());
      // Registering is not a step: the stall clock runs on from the launch until the first.
      if (w.progress < 0) w.progress = ours->first_step();
      launch.last_step = std::max(launch.last_step, progress);
      if (progress > w.progress) {
        w.progress = progress;
        w.last_progress_unix_s = now;
      }
      if (w.stop_pending && ours->ended_unix_s() == 0) {
        w.stop_pending = !request_stop("SIGINT to ptrain-launch");
      }
      if (ours->ended_unix_s() == 0 && !process_->ended() && status.lost_ranks() > 0 &&
          w.judged_cause.empty()) {
        std::vector<int> silent, unregistered;
        double oldest = 0;
        for (const v1::RankHealth& h : status.ranks())
          if (h.lost()) {
            (h.host().empty() ? unregistered : silent).push_back(h.rank());
            oldest = std::max(oldest, h.heartbeat_age_s());
          }
        w.judged_cause = "rank_lost";
        std::vector<std::string> parts;
        if (!silent.empty())
          parts.push_back(fmt::format("rank{} {} sent no heartbeat for {:.1f} s",
                                      silent.size() > 1 ? "s" : "", rank_ranges(silent), oldest));
        if (!unregistered.empty())
          parts.push_back(
              fmt::format("rank{} {} never registered (can {} reach the coordinator at {}?)",
                          unregistered.size() > 1 ? "s" : "", rank_ranges(unregistered),
                          unregistered.size() > 1 ? "they" : "it", options_.rpc.address));
        w.judged_message = fmt::format("{} (heartbeat_timeout {:g} s)", fmt::join(parts, "; "),
                                       status.heartbeat_timeout_s());
        if (status.lost_ranks() > static_cast<int>(silent.size() + unregistered.size()))
          w.judged_message += fmt::format("; {} ranks lost in all", status.lost_ranks());
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
  // A stall is judged only on what the coordinator shows: while it does not answer, a quiet job
  // is not a stalled one (the clock above stands still meanwhile).
  if (w.judged_cause.empty() && !process_->ended() && w.reachable &&
      now - w.last_progress_unix_s > options_.stall_timeout_s) {
    w.judged_cause = "stall";
    w.judged_message =
        fmt::format("no step completed for {:.0f} s (stall_timeout {:g} s){}",
                    now - w.last_progress_unix_s, options_.stall_timeout_s,
                    w.progress >= 0 ? fmt::format(", the last was step {}", w.progress)
                                    : std::string(", none yet (the ranks never registered)"));
    launch.failure_unix_s = w.last_progress_unix_s;
  }
}

void Supervisor::note_recovery(Watch& w, const v1::Attempt& attempt) {
  LaunchRecord& launch = launches_[w.index];
  // The failure this launch recovers from: the first of the failed launches before it (one that
  // could not even start adds to the wait, not to a new failure).
  size_t first = w.index - 1;
  while (first > 0 && launches_[first - 1].restart && !launches_[first].registered) --first;
  const LaunchRecord& before = launches_[first];
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
      "{:.2f} s, teardown {:.2f} s, backoff {:.2f} s, process start {:.2f} s (the ranks' "
      "processes began after {:.2f} s), checkpoint load {:.2f} s, first step {:.2f} s",
      r.total_s, attempt.first_step() + 1, r.detection_s, r.teardown_s, r.backoff_s,
      r.process_start_s,
      attempt.process_start_unix_s() > 0 ? attempt.process_start_unix_s() - launch.started_unix_s
                                         : 0.0,
      r.checkpoint_load_s, r.first_step_s);
}

Supervisor::Verdict Supervisor::judge(Watch& w) {
  LaunchRecord& launch = launches_[w.index];
  const int status = process_->wait_status();
  launch.exit_code = JobProcess::shell_code(status);
  Verdict verdict;
  // The supervisor's own verdict stands unless the command had ended by itself, cleanly, before
  // the kill (a verdict and an exit can cross).
  const bool ended_by_itself =
      WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 4);
  if (!w.judged_cause.empty() && !ended_by_itself) {
    verdict.cause = w.judged_cause;
    verdict.message = w.judged_message;
    verdict.retry = w.judged_cause != "interrupted";
    verdict.exit_code = 3;
  } else {
    verdict = judge_exit(status);
  }
  // The ranks' own account of a clean end outweighs a noisy exit after it (a crash in
  // MPI_Finalize, a launcher's complaint) or a verdict that crossed it.
  if (verdict.retry &&
      (w.end_reason == "finished" || w.end_reason == "stopped" || w.end_reason == "requeue")) {
    log_->warn("launch {}: {}, after its ranks had ended the attempt '{}': taken as that",
               launch.number, verdict.message, w.end_reason);
    verdict = judge_exit(W_EXITCODE(w.end_reason == "requeue" ? 4 : 0, 0));
  }
  if (verdict.cause == "finished" && w.end_reason == "stopped") verdict.cause = "stopped";
  if (launch.failure_unix_s == 0)
    launch.failure_unix_s = w.pid_gone_unix_s > 0 ? w.pid_gone_unix_s : launch.detected_unix_s;
  if (w.pid_gone_rank >= 0 && verdict.retry)
    verdict.message +=
        fmt::format("; rank {} was the first whose process was gone", w.pid_gone_rank);
  return verdict;
}

void Supervisor::triage(Watch& w, Verdict& verdict) {
  LaunchRecord& launch = launches_[w.index];
  if (!w.status_known || launch.attempt == 0 || !verdict.retry) return;
  // What the ranks whose watchdog fired reported before the job was aborted.
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
  const HangTriage found = triage_hang(hangs, w.world, w.ranks);
  if (!found.found) return;
  verdict.cause = "hang";
  verdict.message = found.summary + " (" + verdict.message + ")";
  launch.triage = found.details;
  // The job stopped making progress when the first rank began to wait.
  if (found.stuck_since_unix_s > 0) launch.failure_unix_s = found.stuck_since_unix_s;
  for (const std::string& line : found.details)
    log_->error("launch {} hang triage: {}", launch.number, line);
}

void Supervisor::decide(LaunchRecord& launch, const Verdict& verdict) {
  launch.cause = verdict.cause;
  launch.message = verdict.message;
  double restart_in = 0;
  if (verdict.retry && stop_signal_ == 0 && interrupts_ == 0 && restarts_ < options_.max_restarts) {
    launch.restart = true;
    ++restarts_;
    restart_in = backoff();
    log_->error("launch {} failed: {}: {}; restart {} of {} in {:.1f} s", launch.number,
                verdict.cause, verdict.message, restarts_, options_.max_restarts, restart_in);
  } else if (verdict.retry && stop_signal_ != 0) {
    // A stop for a requeue that met a launch still starting (no handler yet) or failing: the job
    // rests on its last committed checkpoint, which the requeue resumes from.
    outcome_ = 4;
    launch.cause = "requeue";
    launch.message +=
        fmt::format("; {} to ptrain-launch: stopped for a requeue", signal_name(stop_signal_));
    log_->warn("launch {}: {}", launch.number, launch.message);
  } else if (verdict.retry) {
    outcome_ = 3;
    log_->error(
        "launch {} failed: {}: {}; {}", launch.number, verdict.cause, verdict.message,
        stop_signal_ != 0 || interrupts_ != 0
            ? "stopped by a signal: no restart"
            : fmt::format("no restart left ({} of {} used)", restarts_, options_.max_restarts));
  } else {
    outcome_ = verdict.exit_code;
    if (verdict.exit_code == 0)
      log_->info("launch {}: {}", launch.number, verdict.message);
    else
      log_->warn("launch {}: {}: {}", launch.number, verdict.cause, verdict.message);
  }
  report_launch(launch, restart_in);
}

void Supervisor::report_launch(const LaunchRecord& launch, double restart_in_s) {
  v1::ReportLaunchRequest request;
  request.set_job_id(job_id_);
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
    if (status.ok()) {
      launches_[static_cast<size_t>(launch.number - 1)].attempt = response.attempt();
      return;
    }
    if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        status.error_code() == grpc::StatusCode::UNAUTHENTICATED)
      break;
  }
  log_->warn("the coordinator did not record how launch {} ended: {}", launch.number,
             describe_status(status));
}

double Supervisor::backoff() const {
  return std::min(options_.max_backoff_s, options_.backoff_s * std::pow(2.0, restarts_ - 1));
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
  const bool stopped_by_signal = stop_signal_ != 0 || interrupts_ != 0;
  switch (outcome_) {
    case 0:
      outcome = launches_.empty() || launches_.back().cause != "stopped"
                    ? "the job finished"
                    : "the job stopped after a checkpoint (SIGINT)";
      break;
    case 2:
      outcome = "bad input (exit 2): a permanent failure, not retried";
      break;
    case 4:
      outcome = "stopped for a requeue (exit 4): it resumes from its last checkpoint";
      break;
    default:
      outcome = stopped_by_signal
                    ? "stopped by a signal after a failed launch (exit 3)"
                    : fmt::format(
                          "gave up after {} restarts (exit 3): the last failure was a "
                          "runtime one, which a restart could fix, but none was left",
                          restarts_);
  }
  int64_t last_step = -1;
  for (const LaunchRecord& l : launches_) last_step = std::max(last_step, l.last_step);
  std::string text = fmt::format("ptrain-launch: {}; {} launch{}, last step {}", outcome,
                                 launches_.size(), launches_.size() == 1 ? "" : "es", last_step);
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
