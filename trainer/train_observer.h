// The training loop's observer seam: what the loop reports (start, each logged step, each
// evaluation, the end) and the one question it asks at every step boundary (checkpoint now? stop?).
// The loop knows nothing of files beyond its own outputs, nor of gRPC: the metrics file, the
// console, and later the coordinator client and the checkpoint writer are observers.
//
// Every rank calls every observer with the same values (metrics are all-reduced first); an
// observer that writes files does so on rank 0 only. at_step_boundary() is asked on every rank;
// the loop combines the answers with one small all-reduce (max), so when any rank asks for a
// checkpoint or a stop (a signal, a coordinator request) every rank acts at the same step, in
// on_decision().
#pragma once

#include <cstdint>
#include <string>

#include "trainer/train_step.h"

namespace ptrain {

struct TrainStart {
  int64_t total_steps = 0;      // optimizer steps of the whole run (from the packed rows)
  int64_t first_step = 0;       // 0, or the step a resume continues from
  int64_t steps_per_epoch = 0;  // optimizer steps in one pass over the training rows
  int64_t micro_batches_per_epoch = 0;
  int world = 1;
  int shard_size = 1;
  double gemm_peak_gflops = 0;  // this rank's bf16 GEMM peak, measured at start-up
  int64_t ideal_bytes = 0;      // the memory pre-flight's estimate of a rank's peak RSS
};

struct StepMetrics {
  StepResult result;
  int64_t epoch = 0;
  double seconds = 0;            // wall time of the step
  double tokens_per_second = 0;  // learned tokens of the global batch per second
  double mfu = 0;                // achieved model FLOP/s per rank over the GEMM peak
  double exposed_comm_seconds = 0, exposed_comm_fraction = 0;  // max over ranks
  int64_t peak_rss_bytes = 0;                                  // max over ranks
  int64_t skipped_steps = 0;  // non-finite steps skipped so far in the run
};

struct EvalMetrics {
  int64_t step = 0;  // optimizer steps completed when it ran
  double loss = 0, perplexity = 0;
  double accuracy = 0;  // share of learned tokens whose most likely prediction is the label
  int64_t tokens = 0;
};

struct TrainEnd {
  int64_t steps = 0;  // optimizer steps completed
  double seconds = 0;
  std::string reason;  // "finished", "stopped", "max_nonfinite_steps"
};

struct StepDecision {
  bool checkpoint = false;  // save a checkpoint after this step
  bool stop = false;        // end the run after this step
  bool writing = false;     // a background checkpoint write of this rank is still running
};

class TrainingObserver {
 public:
  virtual ~TrainingObserver() = default;
  // Optional slots: the defaults do nothing.
  virtual void on_start(const TrainStart&) {}
  virtual void on_step(const StepMetrics&) {}
  virtual void on_eval(const EvalMetrics&) {}
  virtual void on_end(const TrainEnd&) {}
  // This rank's answer after optimizer step `step` (1-based count of completed steps).
  virtual StepDecision at_step_boundary(int64_t /*completed_steps*/) { return {}; }
  // Called on every rank after every step with the agreed decision (each field the OR over ranks
  // and observers): collectives are allowed here, every rank makes the same calls.
  virtual void on_decision(int64_t /*completed_steps*/, const StepDecision& /*agreed*/) {}
};

}  // namespace ptrain
