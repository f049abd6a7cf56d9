// RankSession: everything one rank sets up before a job command runs, torn down in the right
// order. Construction: MPI (thread-multiple), rank discovery, the rank-prefixed logger
// (<output_dir>/logs/rank-N.log), compute threads, the collective watchdog and the world
// communicator; rank 0 writes the resolved config to output_dir. Destruction: communicator,
// watchdog, then MPI_Finalize; but when an exception is unwinding through it, the session leaves
// MPI and its threads alone (a peer may be blocked in a collective, so joining or finalising could
// hang) for run_guarded() to end the job.
#pragma once

#include <memory>

#include "core/config.h"
#include "core/rank_context.h"
#include "launcher/rank_discovery.h"
#include "parallel/collective_watchdog.h"
#include "parallel/mpi_runtime.h"

namespace ptrain {

class RankSession {
 public:
  RankSession(int* argc, char*** argv, const ResolvedConfig& config);
  ~RankSession();
  RankSession(const RankSession&) = delete;
  RankSession& operator=(const RankSession&) = delete;

  RankContext& context() { return context_; }
  const RankInfo& info() const { return info_; }
  int threads() const { return threads_; }

 private:
  void set_up(const ResolvedConfig& config);
  // The error path of construction and destruction: see the class comment.
  void leave_for_abort();

  const int uncaught_at_start_;
  std::unique_ptr<MpiRuntime> mpi_;
  RankInfo info_;
  int threads_ = 1;
  std::shared_ptr<CollectiveWatchdog> watchdog_;
  RankContext context_;
};

// Runs `body` and turns any escaping error into the documented exit code: the message goes to
// stderr with this rank and host, and in a multi-rank job the whole job is ended (MPI_Abort) so the
// other ranks do not hang in their next collective.
int run_guarded(const std::function<int()>& body);

}  // namespace ptrain
