// MpiCommunicator: the Communicator contract (communicator.h) over an MPI communicator, for CPU
// buffers of fp32, fp64, bf16, fp16, int32, int64 and uint8.
//
// Threading: `*_async` enqueues; one communication thread per communicator runs the queued
// collectives in issue order with blocking MPI calls, so a collective progresses while the issuing
// thread computes. A blocking call made while nothing is queued or running runs on the calling
// thread instead (same order, no thread hand-off latency). MPI must be initialised with
// MPI_THREAD_MULTIPLE (MpiRuntime does).
//
// Reductions: MPI has no bf16/fp16 arithmetic, and Open MPI's own large reduce-scatters are slow
// (docs/benchmarks.md), so for floating-point data reduce_scatter moves each rank's chunks with
// MPI_Alltoall and every rank reduces its own chunk locally (local_reduce.h: fp32 accumulation,
// one rounding); all_reduce is that reduce-scatter followed by an in-place all-gather. Each rank
// sends (n-1)/n of the buffer per phase, the traffic of a ring; large buffers go through in
// segments of kSegmentBytes, so scratch memory stays bounded. Small 16-bit buffers are widened
// to fp32 and reduced by MPI instead (fewer latency-bound steps, the same single rounding); small
// fp32/fp64 buffers and integers use MPI's own reductions.
//
// Work: wait() and synchronize() both block until the collective is complete (the host is the
// compute stream); set_compute_stream() is accepted and ignored.
//
// Errors: an MPI error fails the Work (RuntimeFailure naming the call, file:line and the world
// rank and host captured at construction) and every collective queued after it on this
// communicator, since the ranks no longer agree on the order.
#pragma once

#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"

namespace ptrain {

class MpiCommunicator final : public Communicator {
 public:
  // Below this size reductions go straight to MPI (latency-bound, one step is cheaper).
  static constexpr int64_t kSmallBytes = 64 * 1024;
  // fp32/fp64 all_reduce switches to the chunked path from this size (docs/benchmarks.md).
  static constexpr int64_t kLargeAllReduceBytes = 32 << 20;
  // The chunked paths work through buffers this many bytes at a time (bounded scratch memory).
  static constexpr int64_t kSegmentBytes = 4 << 20;

  // Uses `comm` (MPI_COMM_WORLD, or a communicator this object then owns and frees).
  MpiCommunicator(MPI_Comm comm, std::string name, std::shared_ptr<CollectiveWatchdog> watchdog);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "mpi"; }
  std::string name() const override { return name_; }

  WorkHandle all_gather_async(CommBuffer out, CommBuffer in) override;
  WorkHandle reduce_scatter_async(CommBuffer out, CommBuffer in, ReduceOp op) override;
  WorkHandle all_reduce_async(CommBuffer inout, ReduceOp op) override;
  WorkHandle broadcast_async(CommBuffer inout, int root) override;
  WorkHandle barrier_async() override;
  std::shared_ptr<Communicator> split(int color, int key) override;
  void set_step(int64_t step) override { step_.store(step); }
  // Host work is ordered by the issuing thread itself: there is no stream to order against.
  void set_compute_stream(ComputeStream) override {}
  void abandon() override;

  void all_gather(CommBuffer out, CommBuffer in) override;
  void reduce_scatter(CommBuffer out, CommBuffer in, ReduceOp op) override;
  void all_reduce(CommBuffer inout, ReduceOp op) override;
  void broadcast(CommBuffer inout, int root) override;
  void barrier() override;

 private:
  class MpiWork;

  // A work item for watchdog reports: `data` (may be null) is the buffer whose dtype and size
  // describe the call, `reduce` the reduction's name or null, `root` a broadcast root or -1.
  std::shared_ptr<MpiWork> make_work(const char* op, const CommBuffer* data, const char* reduce,
                                     int root, std::function<void()> body);
  WorkHandle enqueue(std::shared_ptr<MpiWork> work);
  // Runs `work` on the calling thread when the communication thread is idle, else queues it;
  // returns when it is complete (rethrowing its error).
  void run_blocking(std::shared_ptr<MpiWork> work);
  // Runs one collective (watchdog, poisoning) and completes its handle.
  void execute(MpiWork& work);
  void worker_loop();

  // Validated work items, shared by the blocking and async forms.
  std::shared_ptr<MpiWork> all_gather_work(CommBuffer out, CommBuffer in);
  std::shared_ptr<MpiWork> reduce_scatter_work(CommBuffer out, CommBuffer in, ReduceOp op);
  std::shared_ptr<MpiWork> all_reduce_work(CommBuffer inout, ReduceOp op);
  std::shared_ptr<MpiWork> broadcast_work(CommBuffer inout, int root);
  std::shared_ptr<MpiWork> barrier_work();

  // Bodies: run on the communication thread only.
  void run_all_gather(const CommBuffer& out, const CommBuffer& in);
  void run_reduce_scatter(const CommBuffer& out, const CommBuffer& in, ReduceOp op);
  void run_all_reduce(const CommBuffer& inout, ReduceOp op);
  void run_chunked_reduce_scatter(const CommBuffer& out, const CommBuffer& in, ReduceOp op);
  void run_chunked_all_reduce(const CommBuffer& inout, ReduceOp op);
  void run_chunked_all_reduce_segment(const CommBuffer& inout, ReduceOp op);
  void run_widened_reduce_scatter(const CommBuffer& out, const CommBuffer& in, ReduceOp op);
  void run_widened_all_reduce(const CommBuffer& inout, ReduceOp op);
  void divide_by_size(const CommBuffer& buffer);

  MPI_Comm comm_;
  bool owns_comm_;
  int rank_ = 0;
  int size_ = 1;
  std::string name_;
  int splits_ = 0;     // split() calls so far (issuing thread only)
  std::string where_;  // "rank R on host H" (world rank), for error messages
  std::shared_ptr<CollectiveWatchdog> watchdog_;
  std::atomic<int64_t> step_{-1};
  uint64_t issued_ = 0;  // issuing thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<MpiWork>> queue_;
  bool worker_busy_ = false;  // the communication thread is running a collective
  bool stopping_ = false;
  bool abandoned_ = false;

  // Touched only by whichever thread runs collectives at the time (handed over under mu_).
  std::string broken_by_;  // first failure; poisons later work
  std::vector<uint8_t> scratch_;
  std::vector<float> scratch32_;
  std::thread worker_;
};

}  // namespace ptrain
