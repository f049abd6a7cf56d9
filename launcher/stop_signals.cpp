#include "launcher/stop_signals.h"

#include <atomic>

namespace ptrain {
namespace {

// Set by the handlers, read at step boundaries: lock-free atomics are async-signal-safe.
std::atomic<int> requeue_signal{0};
std::atomic<int> interrupts{0};
static_assert(std::atomic<int>::is_always_lock_free);

void on_requeue_signal(int signal) {
  requeue_signal.store(signal);
}

void on_interrupt(int) {
  if (interrupts.fetch_add(1) >= 1) {
    // The second Ctrl-C: stop now, as without a handler.
    ::signal(SIGINT, SIG_DFL);
    ::raise(SIGINT);
  }
}

void install(int signal, void (*handler)(int), struct sigaction* previous) {
  struct sigaction action {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(signal, &action, previous);
}

}  // namespace

StopSignals::StopSignals(Communicator& world) : world_(world) {
  requeue_signal = 0;
  interrupts = 0;
  install(SIGUSR1, on_requeue_signal, &previous_usr1_);
  install(SIGTERM, on_requeue_signal, &previous_term_);
  install(SIGINT, on_interrupt, &previous_int_);
}

StopSignals::~StopSignals() {
  ::sigaction(SIGUSR1, &previous_usr1_, nullptr);
  ::sigaction(SIGTERM, &previous_term_, nullptr);
  ::sigaction(SIGINT, &previous_int_, nullptr);
}

StepDecision StopSignals::at_step_boundary(int64_t) {
  StepDecision decision;
  decision.stop = requeue_signal.load() != 0 || interrupts.load() != 0;
  decision.checkpoint = decision.stop;
  return decision;
}

void StopSignals::on_decision(int64_t, const StepDecision& agreed) {
  if (!agreed.stop) return;
  // Which signal, agreed by every rank: a requeue signal on any rank wins over an interrupt.
  int32_t mine =
      requeue_signal.load() != 0 ? kRequeue : (interrupts.load() != 0 ? kInterrupt : kNone);
  world_.all_reduce(comm_buffer(&mine, 1), ReduceOp::kMax);
  agreed_ = mine;
}

}  // namespace ptrain
