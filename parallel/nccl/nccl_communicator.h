// NcclCommunicator: the Communicator contract (communicator.h) over NCCL, for CUDA buffers.
//
// Streams: collectives run on the communicator's own non-blocking stream, in issue order. Each
// collective first waits (cudaStreamWaitEvent) for the work already queued on the compute stream
// (the legacy default stream unless set_compute_stream() says otherwise), so inputs written by
// earlier kernels are seen; its end is recorded in an event. Work::wait() polls that event (so a
// hung collective still lets the watchdog act) and then makes the compute stream wait on it.
//
// Failure: a watcher thread reports completed events to the watchdog; on timeout the watchdog's
// abort hook calls ncclCommAbort on every live NCCL communicator before ending the job.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>
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
  // Adopts `comm` (already initialised on `device`); used by the factory and by split().
  NcclCommunicator(ncclComm_t comm, int device, std::string name,
                   std::shared_ptr<CollectiveWatchdog> watchdog);
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
  // NCCL has no queue of unstarted work on the host: abandoning aborts the NCCL communicator.
  void abandon() override;

  void set_compute_stream(cudaStream_t stream) { compute_stream_ = stream; }

 private:
  class NcclWork;
  struct AbortState;  // shared with the watchdog's abort hook, outlives this object if needed

  template <class Launch>
  WorkHandle launch(const char* op, const CommBuffer* data, const char* reduce, int root,
                    Launch&& enqueue_on_stream);
  void watcher_loop();

  ncclComm_t comm_;
  int device_;
  int rank_ = 0;
  int size_ = 1;
  std::string name_;
  std::shared_ptr<CollectiveWatchdog> watchdog_;
  std::shared_ptr<AbortState> abort_state_;
  int64_t step_ = -1;
  uint64_t issued_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_stream_ = nullptr;
  int* barrier_word_ = nullptr;  // one device int for barrier()

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<NcclWork>> in_flight_;
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace ptrain
