// CoordinatorStore: the coordinator's durable state in one SQLite database (WAL journal).
//
// It owns the database file and holds what must survive a coordinator restart: the job, its
// attempts, the ranks' last known health, the committed checkpoints, the events and a downsampled
// metrics history (so a dashboard opened late still draws the whole loss curve), and the commands
// not yet carried out. The coordinator keeps the live job in memory (cluster/job_state.h) and
// writes here as things happen; on start it rebuilds itself from load().
//
// Durability: every write is its own transaction unless grouped by a Transaction; the journal is
// WAL with synchronous=NORMAL for heartbeat-rate writes (save_ranks) and FULL-strength commits for
// what is committed (checkpoints, attempts, events, commands): a killed coordinator loses at most
// the last seconds of heartbeat ages, never a recorded commit or event.
//
// Not thread-safe: the caller (JobState) serialises calls. SQLite errors throw RuntimeFailure
// naming the statement and the database file (cluster/sqlite_check.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ptrain/v1/coordinator.pb.h"

struct sqlite3;

namespace ptrain {

namespace v1 = ::ptrain::v1;

class CoordinatorStore {
 public:
  // Opens (creating when missing) the database at `path`; ":memory:" for tests. Takes
  // `<path>.lock` (UserError naming the holder's pid when another coordinator has it). Refuses a
  // file that is not a ptrain coordinator database, or one of a newer schema version, with a
  // UserError naming it. max_metric_points is at least 4.
  explicit CoordinatorStore(const std::string& path, int max_metric_points = 4096);
  ~CoordinatorStore();
  CoordinatorStore(const CoordinatorStore&) = delete;
  CoordinatorStore& operator=(const CoordinatorStore&) = delete;

  // What a restarted coordinator rebuilds the job from.
  struct Snapshot {
    std::string job_id;  // "" when no rank ever registered
    std::string config_hash;
    v1::Progress progress;                    // the last progress rank 0 reported
    double eval_loss = 0;                     // NaN when none
    std::vector<v1::Attempt> attempts;        // oldest first
    std::vector<v1::RankHealth> ranks;        // the newest attempt's, by rank
    std::vector<v1::Checkpoint> checkpoints;  // newest first
    std::vector<v1::Command> commands;        // not yet done, oldest first
    int64_t next_command_id = 1;
  };
  Snapshot load() const;

  void save_job(const std::string& job_id, const std::string& config_hash);
  void save_progress(const v1::Progress& progress, double eval_loss);
  // Inserts or replaces the attempt with the same number.
  void save_attempt(const v1::Attempt& attempt);
  // Replaces the stored health of these ranks of `attempt` (one transaction for all).
  void save_ranks(int attempt, const std::vector<v1::RankHealth>& ranks);
  // Records a commit; a second report of the same step keeps the first record.
  void save_checkpoint(const v1::Checkpoint& checkpoint);
  std::vector<v1::Checkpoint> checkpoints() const;  // newest first

  // Appends the event, setting its id (increasing over the database's life).
  void append_event(v1::Event& event);
  // Events with id > after_id, oldest first, at most `limit`.
  std::vector<v1::Event> events(int64_t after_id, int limit) const;
  // The newest `limit` events, oldest first.
  std::vector<v1::Event> recent_events(int limit) const;

  // Records a point of the metrics history. A point of a step already stored is merged into it:
  // its fields that are not NaN replace the stored ones (an evaluation and the step's training
  // metrics arrive apart, in either order). Over max_metric_points,
  // every other point is dropped (the first and the newest kept) and later points are kept at
  // that coarser grain, the newest always: the history spans the whole job evenly.
  void append_metric(const v1::MetricPoint& point);
  // The history by step; max_points > 0 thins it evenly to at most that many (first and last
  // points kept).
  std::vector<v1::MetricPoint> metrics(int max_points) const;

  // A command is stored when requested and marked done when carried out (or superseded).
  void save_command(const v1::Command& command);
  void finish_command(int64_t id);

  // Groups the writes made while it lives into one transaction (committed at destruction, rolled
  // back if an exception is in flight).
  class Transaction {
   public:
    explicit Transaction(CoordinatorStore& store);
    ~Transaction() noexcept(false);

   private:
    CoordinatorStore& store_;
    int uncaught_;
  };

  const std::string& path() const { return path_; }

 private:
  struct Statements;
  void exec(const char* sql);
  // A Transaction's level: the outermost is BEGIN IMMEDIATE ... COMMIT, an inner one a savepoint.
  // end() commits the level or rolls it back (quietly: it runs while an exception unwinds).
  void begin();
  void end(bool commit);
  void sync_journal();

  std::string path_;
  int max_metric_points_;
  sqlite3* db_ = nullptr;
  std::unique_ptr<Statements> statements_;
  int transaction_depth_ = 0;
  int lock_fd_ = -1;             // holds <path>.lock (flock) while the store lives
  bool durable_commit_ = false;  // the open transaction holds a write whose commit is fsynced
};

}  // namespace ptrain
