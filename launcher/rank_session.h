// RankSession: everything one rank sets up before a job command runs, torn down in the right
// order. Construction: MPI (thread-multiple), rank discovery, the rank-prefixed logger (console,
// and <output_dir>/logs/rank-N.log when the command's JobRecord keeps log files), compute threads,
// the collective watchdog and the world communicator. Nothing else is written: the resolved config
// is recorded only by a command that asks for it when it registers (JobRecord::kLogsAndConfig)
// and calls record_config() once its inputs are validated, so a command that fails, or only reads,
// never rewrites an earlier job's record in the same output_dir. Destruction: communicator,
// watchdog, then MPI_Finalize; but when an exception is unwinding through it, the session leaves
// MPI and its threads alone (a peer may be blocked in a collective, so joining or finalising could
// hang) for run_guarded() to end the job.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/config.h"
#include "core/error.h"
#include "core/rank_context.h"
#include "launcher/rank_discovery.h"
#include "parallel/collective_watchdog.h"
#include "parallel/mpi_runtime.h"

namespace ptrain {

// What a job command's session writes under output_dir besides the command's own results. Only a
// job that trains records itself; a command that only reads writes nothing there.
enum class JobRecord {
  kNone,           // nothing (env, eval)
  kLogs,           // logs/rank-N.log on every rank (preprocess)
  kLogsAndConfig,  // the logs, and config.resolved.yaml through record_config() (train)
};

class RankSession {
 public:
  RankSession(int* argc, char*** argv, const ResolvedConfig& config, JobRecord record);
  ~RankSession();
  RankSession(const RankSession&) = delete;
  RankSession& operator=(const RankSession&) = delete;

  RankContext& context() { return context_; }
  const RankInfo& info() const { return info_; }
  int threads() const { return threads_; }
  // <output_dir>/logs when this session keeps log files, else "".
  const std::string& log_dir() const { return log_dir_; }

  // Rank 0 writes <output_dir>/config.resolved.yaml (atomically, headed by the config hash); the
  // other ranks do nothing. Only for a command registered with JobRecord::kLogsAndConfig, once
  // its inputs are validated.
  void record_config();

  // `message` into this rank's log file (not the console), when the session keeps one.
  void log_error(const std::string& message);

  // A world communicator of `backend` ("mpi" or "nccl"): the session's own (context().comm) when
  // it is of that backend, else one made here under the same watchdog and kept for the session
  // (collective: every rank asks in the same order). Training on GPUs uses NCCL for the sharded
  // tensors and MPI for the small host-side reductions.
  std::shared_ptr<Communicator> world_communicator(const std::string& backend);

  // The job's collective watchdog (every communicator of the session reports to it).
  CollectiveWatchdog& watchdog() { return *watchdog_; }

 private:
  void set_up();
  // The error path of construction and destruction: see the class comment.
  void leave_for_abort();

  const int uncaught_at_start_;
  const ResolvedConfig& config_;
  const JobRecord record_;
  std::unique_ptr<MpiRuntime> mpi_;
  RankInfo info_;
  int threads_ = 1;
  std::string log_dir_;
  std::shared_ptr<spdlog::logger> file_log_;  // the log file alone, for log_error()
  std::shared_ptr<CollectiveWatchdog> watchdog_;
  RankContext context_;
  std::vector<std::shared_ptr<Communicator>> other_comms_;  // world_communicator()'s
};

// An error that another rank reports (rank 0 could not prepare the data, and prints why): the rank
// that throws it ends with its exit code without printing, so the job's error appears once.
class PeerReportedError : public UserError {
 public:
  using UserError::UserError;
};

// Runs `body` and turns any escaping error into the documented exit code. The message goes to
// stderr with this rank and host: a runtime failure from every rank that has one, a user error
// once per job (the first process to claim it, error_report.h), a PeerReportedError never. In a
// multi-rank job the whole job is then ended (MPI_Abort) so the other ranks do not hang in their
// next collective; a rank that stayed silent leaves that to the rank that printed (one MPI_Abort,
// so mpirun prints its notice once), and ends the job itself only if it is still running a few
// seconds later.
int run_guarded(const std::function<int()>& body);

}  // namespace ptrain
