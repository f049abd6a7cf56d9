// RankSimulator: thousands of simulated ranks (and dashboards) calling one coordinator, for the
// heartbeat load test and `ptrain-bench coordinator`.
//
// A real rank runs a CoordinatorClient with a thread of its own; that does not scale to 16k ranks
// in one process. Here every call is asynchronous on a few completion queues (`threads`, one
// thread each) and one scheduler thread issues the calls as they come due, so the cost per
// simulated rank is a few hundred bytes plus its connection.
//
// What a simulated rank does: RegisterRank (every rank the same job_id and launch_id, world =
// ranks; at most `max_registering` at once), then a Heartbeat every `interval_s`, the ranks'
// phases spread evenly over the interval (rank r's k-th heartbeat is due at
// start + (k + r / ranks) * interval_s). Heartbeat k carries step k (1, 2, ...), an rss that grows
// with the step, the commands seen so far, and on rank 0 one progress point. A rank has at most one
// call outstanding, as a real one: a heartbeat that comes due while the previous one is still out
// is sent when it returns and counted `late`. With RankCall::kEmpty the ranks instead call the
// standard health check (grpc.health.v1.Health/Check, an empty request) on the same schedule,
// without registering: the cost of a bare unary RPC at the same rate, the benchmark's baseline.
// `pollers` dashboards call GetJobStatus(max_ranks = poll_max_ranks) every poll_interval_s each,
// timed apart from the ranks.
//
// Connections: the ranks share `connections` TCP connections (0: one per rank, as real ranks
// have), each poller has its own; plaintext only. Every call carries make_rpc_context()'s deadline
// and token; a failed call is counted by status code and never retried.
//
// Lifetime: start() registers every rank (when heartbeating) and starts the schedule; stop() (or
// the destructor) stops issuing calls and waits for the outstanding ones (each bounded by its
// deadline). Counters can be read while it runs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/rpc_channel.h"

namespace ptrain {

enum class RankCall {
  kHeartbeat,  // RegisterRank, then Heartbeat
  kEmpty,      // grpc.health.v1.Health/Check: an empty unary RPC
};

struct RankSimulatorOptions {
  RpcClientOptions rpc;  // address, token and the deadline of every call (TLS is refused)
  std::string job_id = "simulated-job";
  std::string launch_id = "simulated-launch";
  int ranks = 1024;
  RankCall call = RankCall::kHeartbeat;
  double interval_s = 1;  // between one rank's calls
  int pollers = 0;        // dashboards calling GetJobStatus
  double poll_interval_s = 1;
  int poll_max_ranks = 16;  // GetJobStatusRequest.max_ranks (ptrain-status shows 16)
  int connections = 0;      // shared by the ranks; 0: one per rank
  int threads = 2;          // completion queues, one thread each
  int max_registering = 256;
};

// The calls of one kind (the ranks' or the pollers') finished within a window.
struct CallStats {
  int64_t ok = 0, failed = 0;
  int64_t late = 0;                         // came due while the caller's previous one was out
  std::map<std::string, int64_t> failures;  // by status code name
  std::vector<double> latencies_ms;         // of every finished call, ok or not
  // The q-quantile (0..1, nearest rank) of latencies_ms; NaN when there are none.
  double quantile_ms(double q) const;
};

struct SimulatorWindow {
  double seconds = 0;  // since the previous take_window() (or start())
  CallStats ranks, pollers;
};

// One rank's heartbeats since start() (RankCall::kHeartbeat; the health checks with kEmpty).
struct RankTally {
  bool registered = false;
  int64_t sent = 0, acknowledged = 0, failed = 0;
  int64_t last_sent_step = 0;          // the step of the newest heartbeat sent
  int64_t last_acknowledged_step = 0;  // ... and of the newest answered OK
};

class RankSimulator {
 public:
  explicit RankSimulator(RankSimulatorOptions options);
  ~RankSimulator();
  RankSimulator(const RankSimulator&) = delete;
  RankSimulator& operator=(const RankSimulator&) = delete;

  // Registers the ranks (kHeartbeat), then starts the schedule. Answers the ranks that
  // registered (all of them with kEmpty); a rank that did not never heartbeats.
  int start();
  void stop();

  // The calls finished since the previous take (or start()), handed over and forgotten here.
  SimulatorWindow take_window();
  std::vector<RankTally> tallies() const;
  int attempt() const;  // as RegisterRank answered (0 before start() or with kEmpty)

 private:
  struct Call;
  struct Connection;
  struct RankState;
  struct Queue;

  void schedule();
  void drain(Queue& queue);
  void finish(Call& call);
  void register_rank(int rank);
  void send_rank_call(int rank);  // with mu_ not held
  void poll(int poller);
  Queue& queue_for(int index);
  Connection& rank_connection(int rank);

  RankSimulatorOptions options_;
  std::vector<Connection> rank_connections_, poller_connections_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<std::thread> queue_threads_;
  std::thread scheduler_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false, started_ = false;
  int outstanding_ = 0;
  int attempt_ = 0;
  int next_registration_ = 0, registrations_done_ = 0;
  std::vector<RankState> ranks_;
  std::vector<bool> polling_, poll_late_;
  CallStats rank_stats_, poller_stats_;
  std::chrono::steady_clock::time_point window_start_;
};

}  // namespace ptrain
