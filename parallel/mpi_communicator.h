// MpiCommunicator: the Communicator contract (communicator.h) over an MPI communicator, for CPU
// buffers of fp32, fp64, bf16, fp16, int32, int64 and uint8.
//
// Threading: the issuing thread only enqueues; one communication thread per communicator runs the
// collectives in issue order with blocking MPI calls, so a collective progresses while the issuing
// thread computes. MPI must be initialised with MPI_THREAD_MULTIPLE (MpiRuntime does).
//
// 16-bit floats: MPI has no bf16/fp16 arithmetic, so reduce_scatter moves the raw 16-bit chunks with
// MPI_Alltoall and each rank reduces its own chunk in fp32 (one rounding); all_reduce is that
// reduce-scatter followed by MPI_Allgatherv. Each rank sends (n-1)/n of the buffer per phase, the
// same traffic as a ring. Buffers under kSmall16BitBytes are widened to fp32 and reduced with
// MPI_Allreduce instead (fewer latency-bound steps; same single rounding).
//
// Errors: an MPI error fails the Work (RuntimeFailure naming the call, rank and host) and every
// collective queued after it on this communicator, since the ranks no longer agree on the order.
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
  static constexpr int64_t kSmall16BitBytes = 64 * 1024;

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

 private:
  class MpiWork;

  WorkHandle enqueue(const char* op, std::string detail, std::function<void()> body);
  void worker_loop();

  // Bodies: run on the communication thread only.
  void run_all_gather(const CommBuffer& out, const CommBuffer& in);
  void run_reduce_scatter(const CommBuffer& out, const CommBuffer& in, ReduceOp op);
  void run_all_reduce(const CommBuffer& inout, ReduceOp op);
  void run_16bit_reduce_scatter(const CommBuffer& out, const CommBuffer& in, ReduceOp op);
  void run_16bit_all_reduce(const CommBuffer& inout, ReduceOp op);
  void run_widened_all_reduce(const CommBuffer& inout, ReduceOp op);
  void divide_by_size(const CommBuffer& buffer);

  MPI_Comm comm_;
  bool owns_comm_;
  int rank_ = 0;
  int size_ = 1;
  std::string name_;
  std::shared_ptr<CollectiveWatchdog> watchdog_;
  std::atomic<int64_t> step_{-1};
  uint64_t issued_ = 0;  // issuing thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<MpiWork>> queue_;
  bool stopping_ = false;
  std::string broken_by_;  // communication thread only: first failure, poisons later work

  std::vector<uint16_t> scratch16_;  // communication thread only
  std::vector<float> scratch32_;     // communication thread only
  std::thread worker_;
};

}  // namespace ptrain
