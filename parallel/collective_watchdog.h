// CollectiveWatchdog: one per process, shared by every communicator. Each collective registers
// when it starts running and deregisters when it completes (a mutex and a map entry: no thread
// wake-up on the hot path); a thread checks the oldest registration every `timeout / 8` (at most
// 1 s) and, if a collective is still registered past `timeout`, reports it (which collective,
// its sequence number on its communicator, the training step, this rank and host) on stderr and
// in the log, runs the abort hooks (e.g. ncclCommAbort) and then the abort action, which ends the
// whole job (MPI_Abort) with ExitCode::kRuntimeFailure. It fires at most once.
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ptrain {

class CollectiveWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  // Called once with the report; must not return normally in production (it ends the job).
  using AbortAction = std::function<void(const std::string& report)>;

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
    int root = -1;  // broadcast root, else -1
  };

  CollectiveWatchdog(std::chrono::duration<double> timeout, int rank, int world, std::string host,
                     std::shared_ptr<spdlog::logger> log, AbortAction abort);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Registers a collective that starts running now; returns the token for finish().
  uint64_t start(Collective collective);
  void finish(uint64_t token);

  // Runs before the abort action (in registration order), e.g. to abort NCCL communicators.
  void add_abort_hook(std::function<void()> hook);

  double timeout_seconds() const { return timeout_.count(); }
  // The report text for `c` (exposed for tests and for errors raised without aborting).
  std::string report(const Collective& c) const;
  // "sum, BFloat16, 4096 elements": what the collective moves.
  static std::string describe(const Collective& c);

 private:
  struct Running {
    Collective collective;
    Clock::time_point deadline;
  };
  void loop();

  const std::chrono::duration<double> timeout_;
  const std::chrono::duration<double> tick_;
  const int rank_;
  const int world_;
  const std::string host_;
  std::shared_ptr<spdlog::logger> log_;
  AbortAction abort_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Running> running_;
  std::vector<std::function<void()>> hooks_;
  uint64_t next_token_ = 1;
  bool stopping_ = false;
  bool fired_ = false;
  std::thread thread_;
};

}  // namespace ptrain
