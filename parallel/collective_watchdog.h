// CollectiveWatchdog: one per process, shared by every communicator. Each collective registers
// when it starts running and deregisters when it completes (a mutex, a map entry and a slot of a
// fixed ring: no thread wake-up and no allocation beyond the map entry on the hot path); a thread
// checks the oldest registration every `timeout / 8` (at most 1 s) and, if a collective is still
// registered past `timeout`, fires. It fires at most once:
//   1. the report (which collective, its sequence number on its communicator, the training step,
//      this rank and host) and then this rank's history (its last `history` collectives on every
//      communicator, finished or still running) go to stderr and to the log;
//   2. the fire hooks run (e.g. to send the history to the coordinator);
//   3. it waits until `grace` has passed since it fired (the fire hooks' time counts), so that the
//      other ranks stuck in the same collective fire too and write their own history before the
//      abort kills them (see default_grace()); destroying the watchdog cuts the wait short;
//   4. the abort hooks run (e.g. ncclCommAbort), then the abort action, which ends the whole job
//      (MPI_Abort) with ExitCode::kRuntimeFailure.
// Hooks run on the watchdog thread, in registration order; an exception from one is logged and
// the next runs. The watchdog does not bound them: hooks are trusted to bound themselves, since a
// hook that never returns keeps this rank from aborting (the job then ends only when another rank
// aborts it).
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace ptrain {

// One collective of the watchdog's history, with its names copied out of the ring.
struct CollectiveRecord {
  std::string communicator;  // "world"
  std::string op;            // "all_reduce"
  uint64_t seq = 0;
  int64_t step = -1;
  int64_t bytes = 0;
  double started_unix_s = 0;
  double finished_unix_s = 0;  // 0: still running (never completed)
};

class CollectiveWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  using Seconds = std::chrono::duration<double>;
  // Called once with the report; must not return normally in production (it ends the job).
  using AbortAction = std::function<void(const std::string& report)>;
  // Called once when the watchdog fires, with the report and this rank's history: recent(), and
  // in front of it the collective that timed out if later ones have pushed it out of the ring
  // (an NCCL rank may have enqueued many behind it), so that it is always there, still running.
  using FireHook =
      std::function<void(const std::string& report, const std::vector<CollectiveRecord>& recent)>;

  static constexpr size_t kDefaultHistory = 16;

  // Cheap to fill per call: names point at static strings or at the communicator's name, which
  // outlives its running collectives. The text is formatted only when a report is made.
  struct Collective {
    const std::string* communicator = nullptr;  // "world"
    const char* backend = "";                   // "mpi"
    const char* op = "";                        // "all_reduce"
    uint64_t seq = 0;                           // 1-based, per communicator, in issue order
    int64_t step = -1;                          // -1: no training step yet
    const char* reduce = nullptr;               // "sum", or null when not a reduction
    const char* dtype = nullptr;                // "BFloat16", or null when no data
    int64_t numel = 0;
    int64_t bytes = 0;  // numel x element size (of the same buffer as numel)
    int root = -1;      // broadcast root, else -1
  };

  // `grace`: how long after firing the abort hooks wait; default_grace(timeout) when unset.
  // `history`: how many collectives recent() keeps (at least 1).
  CollectiveWatchdog(Seconds timeout, int rank, int world, std::string host,
                     std::shared_ptr<spdlog::logger> log, AbortAction abort,
                     std::optional<Seconds> grace = std::nullopt, size_t history = kDefaultHistory);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Registers a collective that starts running now; returns the token for finish().
  uint64_t start(Collective collective);
  void finish(uint64_t token);

  // Runs after the report and the history are written, before the grace period.
  void add_fire_hook(FireHook hook);
  // Runs after the grace period, before the abort action, e.g. to abort NCCL communicators.
  void add_abort_hook(std::function<void()> hook);

  // This rank's last collectives over all communicators, oldest first, up to the history size.
  std::vector<CollectiveRecord> recent() const;
  // One line per record, for logs, e.g. "world all_reduce #57 step 12, 4096 B, started
  // 10:00:01.123, running 600.2 s" or "..., finished in 0.8 ms" (local time of day, like the log).
  static std::string format_history(const std::vector<CollectiveRecord>& records,
                                    double now_unix_s);

  // The grace between firing and aborting when none is given: timeout / 4, clamped to
  // [0.5 s, 5 s]. Another rank stuck in the same collective has a deadline later than ours by
  // the skew with which the ranks issued it (they left the previous collective together, so at
  // most their compute imbalance since) and notices it up to one tick (timeout / 8, at most
  // 1 s) after that; timeout / 4 covers twice that tick, 0.5 s leaves time to write the history
  // on a loaded host, and 5 s (a few percent of any production timeout) also covers seconds of
  // issue skew. A rank that fires later than that is killed by our abort without its history.
  static Seconds default_grace(Seconds timeout);

  double timeout_seconds() const { return timeout_.count(); }
  double grace_seconds() const { return grace_.count(); }
  // The report text for `c` (exposed for tests and for errors raised without aborting).
  std::string report(const Collective& c) const;
  // "sum, BFloat16, 4096 elements": what the collective moves.
  static std::string describe(const Collective& c);

 private:
  struct Running {
    Collective collective;
    Clock::time_point deadline;
    double started_unix_s;
  };
  // A slot of the history ring: the collective with token `token` lives at token % size. The
  // communicator's name is copied (a finished collective's communicator may be gone by the time
  // the history is read); assign() reuses the slot's capacity, so it allocates only while warming.
  struct Slot {
    uint64_t token = 0;  // 0: empty
    std::string communicator;
    const char* op = "";
    uint64_t seq = 0;
    int64_t step = -1;
    int64_t bytes = 0;
    double started_unix_s = 0;
    double finished_unix_s = 0;
  };
  void loop();
  void fire(std::unique_lock<std::mutex>& lock, uint64_t token, const Running& stuck);
  void run_hook(const char* what, const std::function<void()>& hook) const;
  std::vector<CollectiveRecord> recent_locked() const;

  const Seconds timeout_;
  const Seconds tick_;
  const Seconds grace_;
  const int rank_;
  const int world_;
  const std::string host_;
  std::shared_ptr<spdlog::logger> log_;
  AbortAction abort_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Running> running_;
  std::vector<Slot> ring_;  // sized once; start() and finish() only overwrite slots
  std::vector<FireHook> fire_hooks_;
  std::vector<std::function<void()>> hooks_;
  uint64_t next_token_ = 1;
  bool stopping_ = false;
  bool fired_ = false;
  std::thread thread_;
};

}  // namespace ptrain
