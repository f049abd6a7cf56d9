#pragma once

#include <string>
#include <vector>

namespace ptrain::bench {

struct CoordinatorBenchOptions {
  std::vector<int> ranks = {1024, 4096, 16384};  // simulated ranks, one result line each
  int pollers = 10;                              // dashboards calling GetJobStatus
  int poll_max_ranks = 16;                       // what each asks for (ptrain-status's default)
  double interval_s = 1;    // heartbeat period of a rank, and poll period of a dashboard
  double warmup_s = 5;      // after the ranks registered, untimed
  double seconds = 20;      // the measured window, for the heartbeats and for the baseline
  int coordinator_cpu = 0;  // the one core ptrain-coordinator is pinned to; -1: not pinned
  int threads = 2;          // the simulator's completion-queue threads
  std::string work_dir;     // coordinator state; empty: a new directory under $TMPDIR, removed
};

// ptrain-bench coordinator: ptrain-coordinator (the binary beside ptrain-bench) as a child
// process pinned to one core, driven by cluster/rank_simulator.h from this process on the other
// cores. For each rank count, on a fresh coordinator: the baseline first, the standard health
// check (an empty unary RPC) from as many connections at the same rate; then the ranks register
// and heartbeat at 1 Hz while `pollers` dashboards poll the job status. Each phase reports p50/p99
// of the call latency over the measured window and the coordinator's CPU time over that window
// per wall second (utime + stime from /proc: 1.0 is the whole pinned core).
int run_coordinator_bench(const CoordinatorBenchOptions& options);

}  // namespace ptrain::bench
