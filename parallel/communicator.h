// Communicator: the collective interface every parallel strategy (FSDP units, gradient reduction,
// metric all-reduce) is written against. One implementation per backend:
//   MpiCommunicator   (mpi_communicator.h)        CPU buffers, any MPI
//   NcclCommunicator  (nccl/nccl_communicator.h)  CUDA buffers; built when PTRAIN_WITH_CUDA
// make_world_communicator() (communicator_factory.h) is the single place that picks one.
//
// Contract (the same for every backend):
// - Every rank of the communicator issues the same collectives in the same order, from one thread
//   (the "issuing thread"); the calls themselves are not thread-safe against each other.
// - `*_async` enqueues the collective and returns at once with a Work handle. Collectives run in
//   issue order and make progress while the caller computes (MPI: a communication thread per
//   communicator; NCCL: the communicator's own CUDA stream).
// - The compute stream is where the caller's own work runs: for a device backend the stream its
//   kernels go to, named by set_compute_stream() (an opaque ComputeStream; NCCL: a cudaStream_t,
//   null meaning the legacy default stream); for a host backend the issuing thread itself, so the
//   MPI backend accepts the setting and ignores it (host work is ordered by the host). A
//   collective starts after the work already queued on the compute stream when it was issued, so
//   it sees inputs written by earlier kernels; its Work remembers that stream.
// - Completion has two consumers, and Work has a member for each:
//     wait()         orders the compute stream after the collective: work queued on it afterwards
//                    sees the results. NCCL: cudaStreamWaitEvent on the collective's end event;
//                    the host does not block. MPI: blocks the host until the collective is
//                    complete (the host is the compute stream), so CPU buffers may be read next.
//     synchronize()  blocks the calling thread until the collective is complete on this rank, on
//                    every backend; the host may then read and reuse its buffers.
//   wait_for(t) is synchronize() bounded by t: false if the collective is not complete after t.
//   is_completed() asks without blocking. wait(), synchronize() and wait_for() rethrow the
//   collective's error once it is known (RuntimeFailure naming the call, rank and host); NCCL's
//   wait() knows only the errors found by then (a failed launch, an abandoned communicator): later
//   ones surface in synchronize(), and a hang ends the job through the watchdog.
// - Buffers are borrowed, never owned: the caller keeps every buffer alive and untouched (inputs
//   unmodified, outputs unread) until the collective is complete: on the host once synchronize()
//   (MPI: wait()) returned, on the compute stream after wait().
// - Plain forms (all_gather(), ...) are `*_async(...)->wait()`: on MPI they return when the
//   collective is complete; on NCCL when it is ordered before later compute-stream work.
//   barrier() is `barrier_async()->synchronize()` on every backend: it returns on the host once
//   every rank has reached it.
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
// - Errors of the runtime (MPI, CUDA, NCCL) name the call, file:line and "rank R on host H": the
//   world rank and host, captured when the communicator is built (check macros:
//   parallel/mpi_runtime.h, core/cuda/cuda_check.h).
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

// The stream a device backend orders collectives against (see "compute stream" above), as an
// opaque handle so that this header needs no CUDA: NCCL reads `handle` as a cudaStream_t.
struct ComputeStream {
  void* handle = nullptr;  // null: the backend's default (NCCL: the legacy default stream)
};

// Handle of one enqueued collective; the members are those of the contract above.
class Work {
 public:
  virtual ~Work() = default;
  // Orders the compute stream after the collective; blocks the host only on a host backend.
  virtual void wait() = 0;
  // Blocks the calling thread until the collective is complete on this rank.
  virtual void synchronize() = 0;
  // synchronize() for at most `timeout`: false if the collective is not complete by then.
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
  // A name for messages: "world" ("world.nccl" for the NCCL one), or "world/split2(color=1)"
  // (the second split of "world", this rank's group of color 1).
  virtual std::string name() const = 0;

  virtual WorkHandle all_gather_async(CommBuffer out, CommBuffer in) = 0;
  virtual WorkHandle reduce_scatter_async(CommBuffer out, CommBuffer in, ReduceOp op) = 0;
  virtual WorkHandle all_reduce_async(CommBuffer inout, ReduceOp op) = 0;
  virtual WorkHandle broadcast_async(CommBuffer inout, int root) = 0;
  virtual WorkHandle barrier_async() = 0;

  // Collective over this communicator (ordered with the others): ranks passing the same color
  // form a new communicator, ordered by key then by rank, with this one's compute stream. Blocking.
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;

  // The training step that collectives issued from now on belong to (for watchdog messages).
  virtual void set_step(int64_t step) = 0;

  // The compute stream of collectives issued from now on (see the contract). Issuing thread only.
  virtual void set_compute_stream(ComputeStream stream) = 0;

  // For error paths that are about to end the process: collectives not yet started are never
  // started (their Work fails with RuntimeFailure), so no rank writes into buffers its unwinding
  // owner has freed. A collective already running is left to finish or to the watchdog.
  virtual void abandon() = 0;

  // Plain forms: the same as *_async(...)->wait(), and barrier() as barrier_async()->synchronize();
  // a backend may run them more cheaply (the MPI backend runs them on the calling thread when
  // nothing is queued).
  virtual void all_gather(CommBuffer out, CommBuffer in) { all_gather_async(out, in)->wait(); }
  virtual void reduce_scatter(CommBuffer out, CommBuffer in, ReduceOp op) {
    reduce_scatter_async(out, in, op)->wait();
  }
  virtual void all_reduce(CommBuffer inout, ReduceOp op) { all_reduce_async(inout, op)->wait(); }
  virtual void broadcast(CommBuffer inout, int root) { broadcast_async(inout, root)->wait(); }
  virtual void barrier() { barrier_async()->synchronize(); }
};

// Collective: `text` of rank `root`, whole, on every rank (its length, then its bytes).
std::string broadcast_string(Communicator& comm, const std::string& text, int root);

// Checks the shape rules of the contract for one call; UserError naming the collective otherwise.
void check_all_gather_shapes(const Communicator& comm, const CommBuffer& out, const CommBuffer& in);
void check_reduce_scatter_shapes(const Communicator& comm, const CommBuffer& out,
                                 const CommBuffer& in, ReduceOp op);
void check_reduction(const char* collective, const CommBuffer& buffer, ReduceOp op);

}  // namespace ptrain
