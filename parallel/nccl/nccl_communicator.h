// NcclCommunicator: the Communicator contract (communicator.h) over NCCL, for CUDA buffers.
//
// Streams: collectives run on the communicator's own non-blocking stream, in issue order. Each
// collective first waits (cudaStreamWaitEvent) for the work already queued on the compute stream
// (the legacy default stream unless set_compute_stream() names another), so inputs written by
// earlier kernels are seen; its end is recorded in an event.
//
// Completion: Work::wait() makes the compute stream wait on that event and returns at once.
// A watcher thread blocks on the end events in issue order (cudaEventSynchronize on blocking-sync
// events: it sleeps, it does not poll), reports each completion to the watchdog and completes the
// Work's WorkCompletion, on which synchronize() and wait_for() sleep. A collective that ends after
// the communicator was aborted fails its Work.
//
// Failure: on a timeout the watchdog (its own thread) runs its abort hooks, which call
// ncclCommAbort on every live NCCL communicator (ending their kernels, and so the watcher's wait),
// and then ends the job. Errors name the call, file:line and the world rank and host captured
// when the communicator was built.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"

namespace ptrain {

class NcclCommunicator final : public Communicator {
 public:
  // Adopts `comm` (already initialised on `device`); used by the factory and by split(). `where`
  // is "rank R on host H" (world rank), for error messages.
  NcclCommunicator(ncclComm_t comm, int device, std::string name,
                   std::shared_ptr<CollectiveWatchdog> watchdog, std::string where);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "nccl"; }
  std::string name() const override { return name_; }

  WorkHandle all_gather_async(CommBuffer out, CommBuffer in) override;
  WorkHandle reduce_scatter_async(CommBuffer out, CommBuffer in, ReduceOp op) override;
  WorkHandle all_reduce_async(CommBuffer inout, ReduceOp op) override;
  WorkHandle broadcast_async(CommBuffer inout, int root) override;
  WorkHandle barrier_async() override;
  std::shared_ptr<Communicator> split(int color, int key) override;
  void set_step(int64_t step) override { step_ = step; }
  // `stream.handle` is a cudaStream_t of this communicator's device; null: the legacy default.
  void set_compute_stream(ComputeStream stream) override {
    compute_stream_ = static_cast<cudaStream_t>(stream.handle);
  }
  // NCCL has no queue of unstarted work on the host: abandoning aborts the NCCL communicator;
  // collectives issued afterwards fail without reaching NCCL.
  void abandon() override;

 private:
  class NcclWork;
  struct AbortState;  // shared with the watchdog's abort hook, outlives this object if needed

  template <class Launch>
  WorkHandle launch(const char* op, const CommBuffer* data, const char* reduce, int root,
                    Launch&& enqueue_on_stream);
  // The error of a collective whose end event returned `state`; null when it succeeded.
  std::exception_ptr failure_of(const NcclWork& work, cudaError_t state);
  void watcher_loop();

  ncclComm_t comm_;
  int device_;
  int rank_ = 0;
  int size_ = 1;
  std::string name_;
  int splits_ = 0;                            // split() calls so far (issuing thread only)
  std::shared_ptr<const std::string> where_;  // shared with the Work handles, which may outlive us
  std::shared_ptr<CollectiveWatchdog> watchdog_;
  std::shared_ptr<AbortState> abort_state_;
  int64_t step_ = -1;
  uint64_t issued_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_stream_ = nullptr;
  int* barrier_word_ = nullptr;  // one device int for barrier()

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<NcclWork>> in_flight_;  // issued, not yet seen complete by the watcher
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace ptrain
