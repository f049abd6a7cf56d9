// StopSignals: the job's answer to the signals a scheduler or a person sends a rank.
//
// SIGUSR1 (Slurm's warning before the time limit, `sbatch --signal=USR1@120`) and SIGTERM
// (preemption, scancel) ask for a requeue: every rank agrees at the next step boundary, a
// checkpoint is written, and the job exits 4 so the batch script requeues it. SIGINT once (Ctrl-C)
// does the same and exits 0; SIGINT a second time stops the rank at once (the default action).
// The handlers only set a flag; the checkpoint is written by the training loop, never inside a
// handler. The handlers are installed for the object's lifetime, on every rank, and the previous
// ones restored after.
#pragma once

#include <signal.h>

#include <cstdint>

#include "parallel/communicator.h"
#include "trainer/train_observer.h"

namespace ptrain {

class StopSignals final : public TrainingObserver {
 public:
  explicit StopSignals(Communicator& world);
  ~StopSignals() override;
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // After the loop: whether it stopped for a signal, and for which exit code (4 requeue, 0 an
  // interrupt); the same on every rank.
  bool stopped() const { return agreed_ != kNone; }
  int exit_code() const { return agreed_ == kRequeue ? 4 : 0; }
  const char* reason() const { return agreed_ == kRequeue ? "requeue" : "interrupted"; }

  StepDecision at_step_boundary(int64_t completed_steps) override;
  void on_decision(int64_t completed_steps, const StepDecision& agreed) override;

 private:
  enum : int32_t { kNone = 0, kInterrupt = 1, kRequeue = 2 };
  Communicator& world_;
  int32_t agreed_ = kNone;
  struct sigaction previous_usr1_ {
  }, previous_term_{}, previous_int_{};
};

}  // namespace ptrain
