// JobState: the coordinator's live model of one job, and every rule of the service.
//
// It owns the in-memory job (attempts, the current attempt's ranks, progress, commands, the last
// commit) and writes what must survive a restart to its CoordinatorStore as it changes; a new
// JobState over the same store continues where the last one stopped. The gRPC service
// (coordinator_service.h) authenticates and bounds each request and hands it here; every method
// answers a grpc::Status (INVALID_ARGUMENT for a rank outside the world, FAILED_PRECONDITION for
// another job's or a superseded attempt's request, NOT_FOUND for an attempt this coordinator never
// opened: the rank registers again). Thread-safe: one mutex; heartbeats only touch memory (rank
// health is flushed to the store by flush(), about every second, by the server's housekeeping).
//
// Attempts: every rank of one launch registers with the same launch_id; the first registration
// of a new launch_id opens the next attempt (an unfinished previous one ends as "superseded").
// Commands (checkpoint, stop) are answered in heartbeats to every rank until carried out: a
// checkpoint request by the commit that names it (ReportCheckpointRequest.handled_command), a
// stop by the end of the attempt. A request while one of its kind is pending is that one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

#include "cluster/coordinator_store.h"

namespace ptrain {

struct JobStateOptions {
  double heartbeat_interval_s = 1;  // told to ranks at registration
  double heartbeat_timeout_s = 30;  // silence after which a rank is shown lost
  int recent_events = 20;           // events carried in JobStatus
  std::function<double()> clock;    // unix seconds; empty: the system clock
};

class JobState {
 public:
  JobState(CoordinatorStore& store, JobStateOptions options);

  grpc::Status register_rank(const v1::RegisterRankRequest& request,
                             v1::RegisterRankResponse* response);
  grpc::Status heartbeat(const v1::HeartbeatRequest& request, v1::HeartbeatResponse* response);
  grpc::Status report_checkpoint(const v1::ReportCheckpointRequest& request);
  grpc::Status report_event(const v1::ReportEventRequest& request);
  v1::Command request_command(v1::Command::Kind kind, const std::string& reason);
  // The supervisor's account of a launch: ends its attempt if the ranks did not (opens one for a
  // launch none of whose ranks registered) and records the cause and whether a restart follows
  // (state RESTARTING; FAILED when the supervisor gave up).
  grpc::Status report_launch(const v1::ReportLaunchRequest& request,
                             v1::ReportLaunchResponse* response);

  // The status a dashboard shows; max_ranks > 0 keeps the lost ranks first, then the lowest.
  v1::JobStatus status(int max_ranks = 0) const;
  std::vector<v1::Checkpoint> checkpoints() const;
  std::vector<v1::Event> events(int64_t after_id, int limit) const;
  std::vector<v1::MetricPoint> metrics(int max_points) const;

  // Records ranks newly lost (an event each, or one for many) and writes some ranks' health to
  // the store (a few hundred per call, round robin). Called about every second.
  // `all`: every rank's health (the last flush before the coordinator stops).
  void flush(bool all = false);

  // Blocks until the status changes after `version` or `timeout_s` passes (or close()); answers
  // the version now. A WatchJobStatus stream waits here.
  uint64_t wait_for_change(uint64_t version, double timeout_s) const;
  uint64_t version() const;
  // Blocks for `timeout_s` or until close(); answers whether closed.
  bool wait_until_closed(double timeout_s) const;
  // Wakes every waiter for good (server shutdown).
  void close();

 private:
  struct Rank {
    v1::RankHealth health;
    double last_seen = 0;  // unix seconds of the last heartbeat or registration
    bool reported_lost = false;
  };

  double now() const;
  void changed();  // with mu_ held
  void add_event(const std::string& severity, const std::string& kind, int rank,
                 const std::string& message);
  grpc::Status check_job(const std::string& job_id) const;
  // The current attempt when `attempt` names it; otherwise the status to answer.
  grpc::Status check_attempt(int attempt, int rank) const;
  v1::Attempt& current();
  void end_attempt(const std::string& reason, const std::string& message, int64_t step);
  // Done: the pending commands of `kind` with ids up to `up_to`.
  void finish_commands(v1::Command::Kind kind, int64_t up_to);
  const v1::Attempt* attempt_by_number(int number) const;
  // Whether a report of this (attempt, rank) with this sequence number was already taken (a retry
  // after a lost answer); remembers it otherwise.
  bool is_repeat(int attempt, int rank, uint64_t sequence);
  void record_progress(const v1::Progress& progress);
  v1::JobState derive_state() const;

  CoordinatorStore& store_;
  JobStateOptions options_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  uint64_t version_ = 1;
  bool closed_ = false;

  std::string job_id_, config_hash_;
  std::vector<v1::Attempt> attempts_;
  std::vector<Rank> ranks_;  // the current attempt's, by rank
  int registered_ = 0;       // ranks of the current attempt that registered
  size_t flush_cursor_ = 0;
  std::vector<int> back_;  // ranks heard from again since they were lost, said in flush()
  std::map<std::pair<int, int>, uint64_t>
      last_report_;  // (attempt, rank) -> newest sequence             // the next rank whose health
                     // flush() records
  std::map<int64_t, int64_t> written_;  // step being saved -> ranks that reported their file
  v1::Progress progress_;
  double eval_loss_;
  double seconds_per_step_ = 0;        // for the ETA: a moving average of the steps' wall times
  std::vector<v1::Command> commands_;  // pending, oldest first
  int64_t next_command_id_ = 1;
  v1::Checkpoint last_checkpoint_;
  double updated_ = 0;
};

}  // namespace ptrain
