// The training job's link to its coordinator (docs/coordinator.md): the in-process coordinator
// that rank 0 runs when the config names none, every rank's client, and the training observer
// that feeds the client and turns the coordinator's commands into the loop's checkpoint and stop
// votes. The trainer sees only the observer; gRPC stays in cluster/.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cluster/coordinator_client.h"
#include "core/config.h"
#include "core/rank_context.h"
#include "trainer/checkpointer.h"
#include "trainer/train_observer.h"

namespace ptrain {

class CoordinatorServer;
class CollectiveWatchdog;

class CoordinatorLink final : public TrainingObserver {
 public:
  // Collective. Under ptrain-launch (PTRAIN_COORDINATOR_ADDRESS, PTRAIN_LAUNCH_ID set) the
  // supervisor's coordinator and launch id are the job's. With no coordinator.address, rank 0
  // starts the in-process coordinator (state in <output_dir>/coordinator.db, its address written to
  // <output_dir>/coordinator.addr) and every rank learns the address from it. UserError for bad
  // coordinator settings (an unreadable token file, a TLS file, an address in use). When `watchdog`
  // fires, this rank's last collectives go to the coordinator (a hang report, docs/launch.md)
  // before the job is aborted.
  CoordinatorLink(const ResolvedConfig& config, const RankContext& ctx,
                  CollectiveWatchdog* watchdog = nullptr);
  // Stops the client (after one last try to send what is queued), then rank 0's coordinator.
  ~CoordinatorLink() override;

  const std::string& address() const { return address_; }

  // Registers this rank (in the background) for the attempt that starts at `first_step` and
  // plans `total_steps` (`resume_seconds`: how long loading its checkpoint took); from here on
  // the rank heartbeats. Add the link to the loop before the
  // checkpointer: its on_decision marks the commands a checkpoint carries out, which the
  // checkpoint's commit report then names.
  void start_attempt(int64_t first_step, int64_t total_steps, double resume_seconds);

  // The checkpointer's reports (CheckpointerOptions::on_rank_written / on_saved).
  void on_rank_written(int64_t step, uint64_t bytes, const std::string& xxh3,
                       const std::string& error);
  void on_saved(const SaveResult& result);

  // Rank 0: how the attempt ended ("finished", "stopped", "failed", ...); sent before returning
  // (waiting at most the rpc timeout).
  void end_attempt(const std::string& reason, const std::string& message, int64_t step);

  // TrainingObserver
  void on_step(const StepMetrics& metrics) override;
  void on_eval(const EvalMetrics& eval) override;
  StepDecision at_step_boundary(int64_t completed_steps) override;
  void on_decision(int64_t completed_steps, const StepDecision& agreed) override;

 private:
  const ResolvedConfig& config_;
  const RankContext& ctx_;
  std::string address_, launch_id_, auth_token_, job_id_;
  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<CoordinatorClient> client_;
  bool ended_ = false;
  // The client the watchdog's hang report goes through; the watchdog outlives the link, which
  // clears it on destruction (under its mutex, so never during a report).
  struct HangReporter;
  std::shared_ptr<HangReporter> hang_reporter_;
  CoordinatorClient::CommandVote vote_;  // this rank's, at the last step boundary
};

}  // namespace ptrain
