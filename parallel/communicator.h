// Communicator: the collective interface every parallel strategy (FSDP units, gradient reduction,
// metric all-reduce) is written against. One implementation per backend:
//   MpiCommunicator   (mpi_communicator.h)        CPU buffers, any MPI
//   NcclCommunicator  (nccl/nccl_communicator.h)  CUDA buffers; built when PTRAIN_WITH_CUDA
// make_communicator() (communicator_factory.h) is the single place that picks one.
//
// Contract (the same for every backend):
// - Every rank of the communicator issues the same collectives in the same order, from one thread
//   (the "issuing thread"); the calls themselves are not thread-safe against each other.
// - `*_async` enqueues the collective and returns at once with a Work handle. Collectives run in
//   issue order and make progress while the caller computes (MPI: a communication thread per
//   communicator; NCCL: the communicator's own CUDA stream).
// - Buffers are borrowed, never owned: the caller keeps every buffer alive and untouched (inputs
//   unmodified, outputs unread) until the Work completes. Blocking forms return when it has.
// - Work::wait() blocks the calling thread until the collective is complete on this rank and
//   rethrows its error (RuntimeFailure naming the call, rank and host). wait_for(t) returns false
//   if it is not complete after t.
// - Shapes: all_gather(out, in) needs out.numel == size() * in.numel, rank r's input landing at
//   out[r * in.numel, (r+1) * in.numel). reduce_scatter(out, in) needs in.numel == size() *
//   out.numel; rank r receives the reduction of chunk r. all_reduce and broadcast work in place on
//   any element count. All buffers of one call share a dtype.
// - kAvg divides the sum by size(); it is defined for floating-point dtypes only.
// - 16-bit precision: the MPI backend accumulates bf16/fp16 in fp32 and rounds once (the correctly
//   rounded sum, the same bits on every rank). The NCCL backend uses NCCL's own bf16/fp16
//   reductions, which round at each step of its ring/tree.
// - A collective that does not complete within the watchdog timeout aborts the whole job with a
//   message naming the collective, its sequence number, the training step and the rank.
#pragma once

#include <c10/core/ScalarType.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace ptrain {

enum class ReduceOp { kSum, kAvg, kMax };
enum class DeviceType { kCpu, kCuda };

const char* reduce_op_name(ReduceOp op);

// A contiguous buffer handed to a collective. Non-owning; see the contract above.
struct CommBuffer {
  void* data = nullptr;
  int64_t numel = 0;
  c10::ScalarType dtype = c10::ScalarType::Float;
  DeviceType device = DeviceType::kCpu;

  int64_t element_size() const { return static_cast<int64_t>(c10::elementSize(dtype)); }
  int64_t nbytes() const { return numel * element_size(); }
  // Elements [offset, offset + count) of this buffer.
  CommBuffer slice(int64_t offset, int64_t count) const;
};

template <class T>
CommBuffer comm_buffer(T* data, int64_t numel, DeviceType device = DeviceType::kCpu) {
  return CommBuffer{const_cast<std::remove_const_t<T>*>(data), numel,
                    c10::CppTypeToScalarType<std::remove_const_t<T>>::value, device};
}

// Handle of one enqueued collective.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool wait_for(std::chrono::milliseconds timeout) = 0;
  virtual bool is_completed() = 0;
};
using WorkHandle = std::shared_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend_name() const = 0;
  // A name for messages: "world", or "world/split(color=1)".
  virtual std::string name() const = 0;

  virtual WorkHandle all_gather_async(CommBuffer out, CommBuffer in) = 0;
  virtual WorkHandle reduce_scatter_async(CommBuffer out, CommBuffer in, ReduceOp op) = 0;
  virtual WorkHandle all_reduce_async(CommBuffer inout, ReduceOp op) = 0;
  virtual WorkHandle broadcast_async(CommBuffer inout, int root) = 0;
  virtual WorkHandle barrier_async() = 0;

  // Collective over this communicator (ordered with the others): ranks passing the same color
  // form a new communicator, ordered by key then by rank. Blocking.
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;

  // The training step that collectives issued from now on belong to (for watchdog messages).
  virtual void set_step(int64_t step) = 0;

  // For error paths that are about to end the process: collectives not yet started are never
  // started (their Work fails with RuntimeFailure), so no rank writes into buffers its unwinding
  // owner has freed. A collective already running is left to finish or to the watchdog.
  virtual void abandon() = 0;

  // Blocking forms: the same as *_async(...)->wait(); a backend may run them more cheaply (the MPI
  // backend runs them on the calling thread when nothing is queued).
  virtual void all_gather(CommBuffer out, CommBuffer in) { all_gather_async(out, in)->wait(); }
  virtual void reduce_scatter(CommBuffer out, CommBuffer in, ReduceOp op) {
    reduce_scatter_async(out, in, op)->wait();
  }
  virtual void all_reduce(CommBuffer inout, ReduceOp op) { all_reduce_async(inout, op)->wait(); }
  virtual void broadcast(CommBuffer inout, int root) { broadcast_async(inout, root)->wait(); }
  virtual void barrier() { barrier_async()->wait(); }
};

// Checks the shape rules of the contract for one call; UserError naming the collective otherwise.
void check_all_gather_shapes(const Communicator& comm, const CommBuffer& out, const CommBuffer& in);
void check_reduce_scatter_shapes(const Communicator& comm, const CommBuffer& out,
                                 const CommBuffer& in, ReduceOp op);
void check_reduction(const char* collective, const CommBuffer& buffer, ReduceOp op);

}  // namespace ptrain
