// Supervisor: what ptrain-launch does (docs/launch.md). It runs the job command (mpirun, srun or
// ptrain) in a session of its own and watches it and the coordinator; when an attempt fails — a
// non-zero exit, a rank silent past the coordinator's heartbeat_timeout, no step completed within
// stall_timeout — it kills the whole session, records the launch's cause at the coordinator,
// waits (exponential backoff) and starts the command again, whose ranks resume from the last
// committed checkpoint (PTRAIN_RESTART; also the first launch of a job whose coordinator state
// already holds attempts: a requeued job). Exit code 2 (bad input) is never retried; 4 (stopped for
// a requeue) and 0 end the supervision. After max_restarts it gives up: a summary (every launch,
// its cause, the last step) and exit code 3.
//
// Every launch's ranks get PTRAIN_COORDINATOR_ADDRESS, PTRAIN_LAUNCH_ID (the coordinator's attempt
// is found by it) and PTRAIN_RESTART (0 on the first launch). The time from a failure to the next
// launch's first completed step is logged with its parts.
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/job_process.h"
#include "cluster/rpc_channel.h"
#include "ptrain/v1/coordinator.pb.h"

namespace ptrain {

struct SupervisorOptions {
  std::vector<std::string> command;  // argv of the job command
  RpcClientOptions rpc;              // the coordinator (address, token, TLS)
  int max_restarts = 3;
  double stall_timeout_s = 1800;  // no step completed for this long (from the launch on): stalled
  double backoff_s = 5;           // before the first restart; doubled for each further one
  double max_backoff_s = 300;
  double poll_interval_s = 0.2;  // how often it looks at the job and the coordinator
  double srun_grace_s = 10;      // srun's own teardown of its step before SIGKILL
  std::string host;              // this machine's name: its ranks' pids are checked directly
};

// The time from a failure to the restarted job's next completed step, in parts.
struct Recovery {
  double failure_unix_s = 0;   // the failure as first seen (a rank's pid gone, its last heartbeat)
  double detection_s = 0;      // failure -> the supervisor noticed
  double teardown_s = 0;       // noticed -> the old launch's processes all gone
  double backoff_s = 0;        // -> the next launch started
  double process_start_s = 0;  // -> every rank registered, less the checkpoint load
  double checkpoint_load_s = 0;  // the slowest rank's
  double first_step_s = 0;       // registered -> the first step completed
  double total_s = 0;            // failure -> the first step completed
};

struct LaunchRecord {
  int number = 0;  // 1 for the first launch
  std::string launch_id;
  int attempt = 0;          // the coordinator's attempt number
  bool registered = false;  // its ranks registered with the coordinator
  double started_unix_s = 0, ended_unix_s = 0;
  double failure_unix_s = 0, detected_unix_s = 0, torn_down_unix_s = 0;
  std::string cause;    // finished, requeue, bad_input, exit, signal, rank_lost, stall, hang, ...
  std::string message;  // what happened, in a line
  int exit_code = 0;    // the command's (128 + N for signal N)
  bool restart = false;
  int64_t first_step = -1, last_step = -1;
  std::vector<std::string> triage;  // hang triage findings
  bool recovered = false;           // this launch completed a step after the one before failed
  Recovery recovery;
};

class Supervisor {
 public:
  // The signals the supervisor takes synchronously (SIGCHLD, SIGINT, SIGTERM, SIGUSR1, SIGUSR2,
  // SIGHUP). Block them in the main thread before any other thread starts (gRPC's), so that all
  // of them inherit the mask.
  static void block_signals();

  Supervisor(SupervisorOptions options, std::shared_ptr<spdlog::logger> log);
  // Supervises the job to its end; answers ptrain-launch's exit code: 0 finished (or stopped
  // after a SIGINT), 2 bad input (the job's exit 2, or a first launch that cannot be started), 3
  // gave up (restarts exhausted, a stop signal after a failed launch, SIGINT twice), 4 stopped for
  // a requeue (the job's own exit 4; or a stop signal while waiting to restart).
  int run();

  const std::vector<LaunchRecord>& launches() const { return launches_; }
  // The launches, their causes and the outcome, for --summary-json.
  nlohmann::json summary() const;
  // The same for people: a few lines.
  std::string summary_text() const;

  // Exposed for tests: the cause of an ended command's wait status, and whether a restart can
  // fix it.
  struct Verdict {
    std::string cause, message;
    bool retry = false;
    int exit_code = 0;  // the supervisor's when it stops here
  };
  static Verdict judge_exit(int wait_status);

 private:
  struct Watch;
  // The job's attempts the coordinator knew before this supervisor began (a requeued job's).
  void read_earlier_attempts();
  // False when the command could not be started (the launch is recorded as failed, "spawn").
  bool start_launch();
  // Watches the running launch until it ends or is judged failed, then kills what is left.
  void watch(Watch& watch);
  void teardown(Watch& watch);
  // One look at the coordinator: the launch's attempt, its progress, lost ranks; and at the
  // ranks' processes on this host. May judge the launch failed (rank_lost, stall).
  void poll(Watch& watch);
  Verdict judge(Watch& watch);
  // Names the rank that fell behind from the ranks' hang reports, when there are any.
  void triage(Watch& watch, Verdict& verdict);
  // Restart or stop: sets outcome_ when the supervision ends; reports the launch.
  void decide(LaunchRecord& launch, const Verdict& verdict);
  void report_launch(const LaunchRecord& launch, double restart_in_s);
  void note_recovery(Watch& watch, const v1::Attempt& attempt);
  // The wait before restart number restarts_: backoff_s doubled per earlier restart, capped.
  double backoff() const;
  // Waits up to `seconds`, handling signals; false when a signal stopped the supervision.
  bool wait_backoff(double seconds);
  bool handle_signal(int signal, Watch* watch);
  // Passes a stop on to the job: ranks checkpoint, then exit 4 (or 0 for SIGINT).
  void forward(int signal, Watch* watch);
  bool request_stop(const std::string& reason);

  SupervisorOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<LaunchRecord> launches_;
  std::string job_id_;  // learned from the coordinator once a launch registered
  int restarts_ = 0;
  int earlier_attempts_ = 0;  // the job's attempts before this supervisor (a requeued job's)
  int stop_signal_ = 0;       // SIGTERM, SIGUSR1, ... sent to the supervisor: no more restarts
  int interrupts_ = 0;        // SIGINTs
  int outcome_ = -1;          // the exit code once decided
  std::unique_ptr<JobProcess> process_;
};

}  // namespace ptrain
