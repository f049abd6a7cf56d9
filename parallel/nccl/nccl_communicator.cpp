#include "parallel/nccl/nccl_communicator.h"

#include <fmt/format.h>

#include "core/cuda/cuda_check.h"
#include "parallel/mpi_runtime.h"
#include "parallel/nccl_backend.h"
#include "parallel/work_completion.h"

namespace ptrain {

namespace {

ncclDataType_t nccl_type(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return ncclFloat32;
    case c10::ScalarType::Double:
      return ncclFloat64;
    case c10::ScalarType::BFloat16:
      return ncclBfloat16;
    case c10::ScalarType::Half:
      return ncclFloat16;
    case c10::ScalarType::Int:
      return ncclInt32;
    case c10::ScalarType::Long:
      return ncclInt64;
    case c10::ScalarType::Byte:
      return ncclUint8;
    default:
      throw UserError(
          fmt::format("NcclCommunicator does not support dtype {}", c10::toString(dtype)));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

void check_cuda_buffer(const char* collective, const CommBuffer& buffer) {
  PTRAIN_CHECK(buffer.device == DeviceType::kCuda,
               "{}: NcclCommunicator works on CUDA buffers; use the mpi backend for CPU buffers",
               collective);
  PTRAIN_CHECK(buffer.data != nullptr || buffer.numel == 0, "{}: null buffer with {} elements",
               collective, buffer.numel);
  nccl_type(buffer.dtype);
}

}  // namespace

// ---------------------------------------------------------------- work and abort state

struct NcclCommunicator::AbortState {
  std::mutex mu;
  ncclComm_t comm = nullptr;  // null once destroyed
};

class NcclCommunicator::NcclWork final : public Work {
 public:
  cudaEvent_t done = nullptr;  // recorded on the communicator's stream after the collective
  cudaStream_t compute_stream = nullptr;
  uint64_t watchdog_token = 0;
  const char* op = "";
  uint64_t seq = 0;
  std::shared_ptr<const std::string> where;
  WorkCompletion completion;  // completed by the watcher

  ~NcclWork() override {
    if (done) cudaEventDestroy(done);
  }

  void wait() override {
    completion.rethrow_if_failed();
    PTRAIN_CUDA_CHECK(*where, cudaStreamWaitEvent(compute_stream, done, 0));
  }
  void synchronize() override { completion.wait(); }
  bool wait_for(std::chrono::milliseconds timeout) override { return completion.wait_for(timeout); }
  bool is_completed() override { return completion.is_completed(); }
};

// ---------------------------------------------------------------- registration point

bool nccl_backend_built() {
  return true;
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

std::shared_ptr<Communicator> make_nccl_communicator(MPI_Comm bootstrap, int device,
                                                     std::string name,
                                                     std::shared_ptr<CollectiveWatchdog> watchdog) {
  const std::string where = world_rank_location();
  PTRAIN_CHECK(cuda_device_count() > 0,
               "comm.backend 'nccl' needs a CUDA device, and this process sees none ({})", where);
  PTRAIN_CUDA_CHECK(where, cudaSetDevice(device));
  int rank = 0, size = 1;
  PTRAIN_MPI_CHECK_AT(where, MPI_Comm_rank(bootstrap, &rank));
  PTRAIN_MPI_CHECK_AT(where, MPI_Comm_size(bootstrap, &size));
  ncclUniqueId id;
  if (rank == 0) PTRAIN_NCCL_CHECK(where, ncclGetUniqueId(&id));
  PTRAIN_MPI_CHECK_AT(where, MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, bootstrap));
  ncclComm_t comm = nullptr;
  PTRAIN_NCCL_CHECK(where, ncclCommInitRank(&comm, size, id, rank));
  return std::make_shared<NcclCommunicator>(comm, device, std::move(name), std::move(watchdog),
                                            where);
}

// ---------------------------------------------------------------- lifetime

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device, std::string name,
                                   std::shared_ptr<CollectiveWatchdog> watchdog, std::string where)
    : comm_(comm),
      device_(device),
      name_(std::move(name)),
      where_(std::make_shared<const std::string>(std::move(where))),
      watchdog_(std::move(watchdog)) {
  PTRAIN_CUDA_CHECK(*where_, cudaSetDevice(device_));
  PTRAIN_NCCL_CHECK(*where_, ncclCommUserRank(comm_, &rank_));
  PTRAIN_NCCL_CHECK(*where_, ncclCommCount(comm_, &size_));
  PTRAIN_CUDA_CHECK(*where_, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  PTRAIN_CUDA_CHECK(*where_, cudaMalloc(reinterpret_cast<void**>(&barrier_word_), sizeof(int)));
  abort_state_ = std::make_shared<AbortState>();
  abort_state_->comm = comm_;
  if (watchdog_) {
    std::weak_ptr<AbortState> weak = abort_state_;
    watchdog_->add_abort_hook([weak] {
      if (auto state = weak.lock()) {
        std::lock_guard<std::mutex> lock(state->mu);
        if (state->comm) ncclCommAbort(state->comm);
        state->comm = nullptr;
      }
    });
  }
  watcher_ = std::thread([this] { watcher_loop(); });
}

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  watcher_.join();
  std::lock_guard<std::mutex> lock(abort_state_->mu);
  if (abort_state_->comm) {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(abort_state_->comm);
    abort_state_->comm = nullptr;
  }
  cudaFree(barrier_word_);
  cudaStreamDestroy(stream_);
}

void NcclCommunicator::abandon() {
  std::lock_guard<std::mutex> lock(abort_state_->mu);
  if (abort_state_->comm) ncclCommAbort(abort_state_->comm);
  abort_state_->comm = nullptr;
}

void NcclCommunicator::watcher_loop() {
  // Completes the Work handles oldest first (the stream completes in issue order), sleeping in
  // cudaEventSynchronize on each blocking-sync end event. A hung collective keeps this thread
  // asleep; the watchdog's abort ends its kernel, and so the wait. The device is set first: CUDA
  // calls on a thread otherwise create a context on device 0.
  cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !in_flight_.empty(); });
    if (in_flight_.empty()) return;  // stopping, and every issued collective has ended
    std::shared_ptr<NcclWork> work = std::move(in_flight_.front());
    in_flight_.pop_front();
    lock.unlock();
    cudaError_t state = cudaEventSynchronize(work->done);
    if (watchdog_) watchdog_->finish(work->watchdog_token);
    work->completion.complete(failure_of(*work, state));
    lock.lock();
  }
}

std::exception_ptr NcclCommunicator::failure_of(const NcclWork& work, cudaError_t state) {
  try {
    check_cuda(state, "cudaEventSynchronize(end event)", __FILE__, __LINE__, *where_);
  } catch (const std::exception& e) {
    return std::make_exception_ptr(RuntimeFailure(
        fmt::format("{} #{} on communicator '{}' failed: {}", work.op, work.seq, name_, e.what())));
  }
  std::lock_guard<std::mutex> lock(abort_state_->mu);
  if (abort_state_->comm) return nullptr;
  // It may have ended just before the abort, but nothing tells: its result is not trusted.
  return std::make_exception_ptr(RuntimeFailure(
      fmt::format("{} #{} on communicator '{}' was abandoned: the NCCL communicator was aborted "
                  "before the collective was seen complete ({})",
                  work.op, work.seq, name_, *where_)));
}

// ---------------------------------------------------------------- collectives

template <class Launch>
WorkHandle NcclCommunicator::launch(const char* op, const CommBuffer* data, const char* reduce,
                                    int root, Launch&& enqueue_on_stream) {
  auto work = std::make_shared<NcclWork>();
  work->op = op;
  work->seq = ++issued_;
  work->where = where_;
  work->compute_stream = compute_stream_;
  {
    std::lock_guard<std::mutex> lock(abort_state_->mu);
    if (!abort_state_->comm) {
      work->completion.complete(std::make_exception_ptr(RuntimeFailure(
          fmt::format("{} #{} on communicator '{}' was issued after the communicator was abandoned",
                      op, work->seq, name_))));
      return work;
    }
  }
  const std::string& where = *where_;
  PTRAIN_CUDA_CHECK(where, cudaSetDevice(device_));
  cudaEvent_t ready;
  PTRAIN_CUDA_CHECK(where, cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  cudaError_t recorded = cudaEventRecord(ready, compute_stream_);
  if (recorded == cudaSuccess) recorded = cudaStreamWaitEvent(stream_, ready, 0);
  cudaEventDestroy(ready);
  PTRAIN_CUDA_CHECK(where, recorded);
  enqueue_on_stream();
  // Blocking sync: the watcher sleeps in cudaEventSynchronize instead of spinning.
  PTRAIN_CUDA_CHECK(
      where, cudaEventCreateWithFlags(&work->done, cudaEventDisableTiming | cudaEventBlockingSync));
  PTRAIN_CUDA_CHECK(where, cudaEventRecord(work->done, stream_));
  // Registered only once enqueued: a call that failed to launch must not trip the watchdog later.
  CollectiveWatchdog::Collective c;
  c.communicator = &name_;
  c.backend = "nccl";
  c.op = op;
  c.seq = work->seq;
  c.step = step_;
  c.reduce = reduce;
  c.root = root;
  if (data) {
    c.dtype = c10::toString(data->dtype);
    c.numel = data->numel;
    c.bytes = data->nbytes();
  }
  if (watchdog_) work->watchdog_token = watchdog_->start(c);
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_.push_back(work);
  }
  cv_.notify_all();
  return work;
}

WorkHandle NcclCommunicator::all_gather_async(CommBuffer out, CommBuffer in) {
  check_cuda_buffer("all_gather", out);
  check_cuda_buffer("all_gather", in);
  check_all_gather_shapes(*this, out, in);
  return launch("all_gather", &in, nullptr, -1, [&] {
    PTRAIN_NCCL_CHECK(*where_, ncclAllGather(in.data, out.data, static_cast<size_t>(in.numel),
                                             nccl_type(in.dtype), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::reduce_scatter_async(CommBuffer out, CommBuffer in, ReduceOp op) {
  check_cuda_buffer("reduce_scatter", out);
  check_cuda_buffer("reduce_scatter", in);
  check_reduce_scatter_shapes(*this, out, in, op);
  return launch("reduce_scatter", &in, reduce_op_name(op), -1, [&] {
    PTRAIN_NCCL_CHECK(*where_, ncclReduceScatter(in.data, out.data, static_cast<size_t>(out.numel),
                                                 nccl_type(in.dtype), nccl_op(op), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::all_reduce_async(CommBuffer inout, ReduceOp op) {
  check_cuda_buffer("all_reduce", inout);
  check_reduction("all_reduce", inout, op);
  return launch("all_reduce", &inout, reduce_op_name(op), -1, [&] {
    PTRAIN_NCCL_CHECK(*where_,
                      ncclAllReduce(inout.data, inout.data, static_cast<size_t>(inout.numel),
                                    nccl_type(inout.dtype), nccl_op(op), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::broadcast_async(CommBuffer inout, int root) {
  check_cuda_buffer("broadcast", inout);
  PTRAIN_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of '{}' (size {})",
               root, name_, size_);
  return launch("broadcast", &inout, nullptr, root, [&] {
    PTRAIN_NCCL_CHECK(*where_,
                      ncclBroadcast(inout.data, inout.data, static_cast<size_t>(inout.numel),
                                    nccl_type(inout.dtype), root, comm_, stream_));
  });
}

WorkHandle NcclCommunicator::barrier_async() {
  return launch("barrier", nullptr, nullptr, -1, [&] {
    PTRAIN_NCCL_CHECK(*where_, ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum,
                                             comm_, stream_));
  });
}

std::shared_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  PTRAIN_CHECK(color >= 0, "split: color must be >= 0, got {}", color);
  {
    std::lock_guard<std::mutex> lock(abort_state_->mu);
    if (!abort_state_->comm)
      throw RuntimeFailure(fmt::format(
          "split of communicator '{}' was issued after the communicator was abandoned", name_));
  }
  PTRAIN_CUDA_CHECK(*where_, cudaSetDevice(device_));
  PTRAIN_CUDA_CHECK(*where_, cudaStreamSynchronize(stream_));
  ncclComm_t child = nullptr;
  PTRAIN_NCCL_CHECK(*where_, ncclCommSplit(comm_, color, key, &child, nullptr));
  auto sub = std::make_shared<NcclCommunicator>(
      child, device_, fmt::format("{}/split{}(color={})", name_, ++splits_, color), watchdog_,
      *where_);
  sub->compute_stream_ = compute_stream_;
  return sub;
}

}  // namespace ptrain
