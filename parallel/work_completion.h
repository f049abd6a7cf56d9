// WorkCompletion: the host side of one collective's completion, shared by the backends' Work
// handles. The thread that observes the end (MPI: the thread that ran the collective; NCCL: the
// communicator's watcher, which blocks on the collective's end event) calls complete() once; any
// thread may block on it meanwhile, asleep on a condition variable rather than spinning. A hung
// collective never completes: the watchdog, on its own thread, ends the job instead.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>

namespace ptrain {

class WorkCompletion {
 public:
  // Marks the collective complete, failed when `error` is set; wakes every waiter. Once only.
  void complete(std::exception_ptr error);

  // Blocks until complete; rethrows the collective's error.
  void wait();
  // wait() for at most `timeout`: false if not complete by then.
  bool wait_for(std::chrono::milliseconds timeout);
  bool is_completed();
  // Rethrows the error of a collective already known to have failed; returns otherwise.
  void rethrow_if_failed();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

}  // namespace ptrain
