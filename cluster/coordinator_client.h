// CoordinatorClient: a rank's connection to the job's coordinator.
//
// It owns one background thread that registers the rank, heartbeats at the coordinator's
// interval and delivers queued reports in order; the training thread only hands it values and
// reads the commands it learned, and never waits for the coordinator, except in
// report_commit() (bounded by its timeout). A coordinator that is down or restarting is retried
// with exponential backoff and jitter (0.2 s doubling to 10 s, +-25%); reports queue meanwhile (the
// newest 10,000 progress points, every checkpoint and event report) and are sent in order when it
// is back; a coordinator that forgot the attempt (NOT_FOUND) is registered with again. Every call
// carries a deadline. A refusal that retrying cannot fix (UNAUTHENTICATED, INVALID_ARGUMENT) is
// logged once and the client keeps trying quietly: training never stops over the coordinator.
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/rpc_channel.h"
#include "ptrain/v1/coordinator.grpc.pb.h"

namespace ptrain {

struct CoordinatorClientOptions {
  RpcClientOptions rpc;
  std::string job_id;
  std::string launch_id;  // the same on every rank of this launch
  int rank = 0, world = 1;
  std::string host;
  int64_t pid = 0;
  std::string config_hash;
  int64_t first_step = 0, total_steps = 0;
  double process_start_unix_s = 0;  // when this rank's process started (0: unknown)
  double resume_seconds = 0;        // how long its checkpoint load took
  double heartbeat_interval_s = 1;  // until the coordinator says otherwise
};

// A fresh launch id (16 hex digits): what every rank of one launch registers with.
std::string new_launch_id();

class CoordinatorClient {
 public:
  CoordinatorClient(CoordinatorClientOptions options, std::shared_ptr<spdlog::logger> log);
  // Sends what is queued (for at most the rpc timeout) and stops the thread.
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  // This rank's state for the next heartbeat.
  void set_rank_state(int64_t step, int64_t rss_bytes, int64_t device_memory_bytes);
  void set_total_steps(int64_t total_steps);
  // Rank 0: a logged step's metrics, sent with the next heartbeat.
  void add_progress(const v1::Progress& progress);
  // Queued, sent in order; job_id, attempt and rank are filled in here.
  void report_checkpoint(v1::ReportCheckpointRequest report);
  void report_event(v1::ReportEventRequest report);
  // Rank 0 after publishing a checkpoint: queues the commit and waits up to `timeout_s` for the
  // coordinator to record it (not at all while it is known to be unreachable). Answers whether it
  // was recorded; otherwise it is delivered when the coordinator is back.
  bool report_commit(v1::ReportCheckpointRequest report, double timeout_s);
  // Sends what is queued now and waits up to `timeout_s` for it (the end of a run).
  bool flush(double timeout_s);

  // What this rank knows of the coordinator's commands at a step boundary, taken at once: the
  // newest command id it has seen, and whether an unhandled checkpoint or stop is among them.
  // Every command arrives with all the pending ones, so a rank that has seen id N has seen every
  // pending command up to N, and votes for each.
  struct CommandVote {
    int64_t newest = 0;
    bool checkpoint = false, stop = false;
  };
  CommandVote command_vote() const;
  // Every command up to `id` has been carried out (the ranks agreed on it at a step boundary).
  void set_handled(int64_t id);
  int64_t handled() const;

  int attempt() const;     // 0 until registered
  bool connected() const;  // the last call reached the coordinator

 private:
  struct Outgoing {
    bool is_checkpoint = false;
    v1::ReportCheckpointRequest checkpoint;
    v1::ReportEventRequest event;
    uint64_t sequence = 0;
  };

  void run();
  // Sends the queued reports in order (the pending steps first), then a heartbeat when one is
  // due or a flush waits for the steps; false when a call failed.
  bool deliver(std::chrono::steady_clock::time_point& next_heartbeat);
  bool register_rank();
  bool heartbeat();
  bool send(Outgoing& outgoing);
  // A failed call: logs it (once per kind of failure) and marks the coordinator unreachable.
  void failed(const char* call, const grpc::Status& status);

  CoordinatorClientOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;

  mutable std::mutex mu_;
  std::condition_variable cv_, delivered_cv_;
  bool stop_ = false, wake_ = false;
  int flushing_ = 0;  // callers of flush() waiting
  int attempt_ = 0;
  bool connected_ = false;
  bool reregister_ = false;
  std::string last_failure_;
  double interval_s_;
  double backoff_s_ = 0;
  int64_t step_ = 0, rss_ = 0, device_memory_ = 0, total_steps_ = 0;
  std::deque<v1::Progress> progress_;
  std::deque<Outgoing> outgoing_;
  uint64_t next_sequence_ = 1, delivered_sequence_ = 0;
  int64_t handled_command_ = 0, newest_command_ = 0;
  uint64_t progress_dropped_ = 0;      // points dropped at the queue's cap (the oldest)
  std::vector<v1::Command> commands_;  // seen and not handled
  std::thread thread_;
};

}  // namespace ptrain
