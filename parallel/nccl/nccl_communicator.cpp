#include "parallel/nccl/nccl_communicator.h"

#include <fmt/format.h>

#include <chrono>

#include "parallel/mpi_runtime.h"
#include "parallel/nccl_backend.h"

namespace ptrain {

// ---------------------------------------------------------------- checks

namespace {

std::string where_am_i() {
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return fmt::format("rank {} on host {}", rank, host_name());
}

void check_cuda(cudaError_t code, const char* call, const char* file, int line) {
  if (code == cudaSuccess) return;
  throw RuntimeFailure(detail::with_location(
      fmt::format("CUDA call {} failed: {} ({})", call, cudaGetErrorString(code), where_am_i()),
      file, line));
}

void check_nccl(ncclResult_t code, const char* call, const char* file, int line) {
  if (code == ncclSuccess) return;
  throw RuntimeFailure(detail::with_location(
      fmt::format("NCCL call {} failed: {} ({})", call, ncclGetErrorString(code), where_am_i()),
      file, line));
}

}  // namespace

#define PTRAIN_CUDA_CHECK(call) check_cuda((call), #call, __FILE__, __LINE__)
#define PTRAIN_NCCL_CHECK(call) check_nccl((call), #call, __FILE__, __LINE__)

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
  cudaEvent_t done = nullptr;
  cudaStream_t compute_stream = nullptr;
  uint64_t watchdog_token = 0;
  std::string label;

  ~NcclWork() override {
    if (done) cudaEventDestroy(done);
  }

  void wait() override {
    while (!is_completed()) std::this_thread::yield();
    PTRAIN_CUDA_CHECK(cudaStreamWaitEvent(compute_stream, done, 0));
  }

  bool wait_for(std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!is_completed()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::yield();
    }
    PTRAIN_CUDA_CHECK(cudaStreamWaitEvent(compute_stream, done, 0));
    return true;
  }

  bool is_completed() override {
    cudaError_t state = cudaEventQuery(done);
    if (state == cudaErrorNotReady) return false;
    PTRAIN_CUDA_CHECK(state);
    return true;
  }
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
  PTRAIN_CHECK(cuda_device_count() > 0,
               "comm.backend 'nccl' needs a CUDA device, and this process sees none ({})",
               where_am_i());
  PTRAIN_CUDA_CHECK(cudaSetDevice(device));
  int rank = 0, size = 1;
  PTRAIN_MPI_CHECK(MPI_Comm_rank(bootstrap, &rank));
  PTRAIN_MPI_CHECK(MPI_Comm_size(bootstrap, &size));
  ncclUniqueId id;
  if (rank == 0) PTRAIN_NCCL_CHECK(ncclGetUniqueId(&id));
  PTRAIN_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, bootstrap));
  ncclComm_t comm = nullptr;
  PTRAIN_NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  return std::make_shared<NcclCommunicator>(comm, device, std::move(name), std::move(watchdog));
}

// ---------------------------------------------------------------- lifetime

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device, std::string name,
                                   std::shared_ptr<CollectiveWatchdog> watchdog)
    : comm_(comm), device_(device), name_(std::move(name)), watchdog_(std::move(watchdog)) {
  PTRAIN_CUDA_CHECK(cudaSetDevice(device_));
  PTRAIN_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  PTRAIN_NCCL_CHECK(ncclCommCount(comm_, &size_));
  PTRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  PTRAIN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&barrier_word_), sizeof(int)));
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
  // Reports completions to the watchdog, oldest first (the stream completes in order). The device
  // is set first: CUDA calls on a thread otherwise create a context on device 0.
  cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (in_flight_.empty()) {
      if (stopping_) return;
      cv_.wait(lock);
      continue;
    }
    auto work = in_flight_.front();
    lock.unlock();
    bool done = cudaEventQuery(work->done) != cudaErrorNotReady;
    if (done && watchdog_) watchdog_->finish(work->watchdog_token);
    if (!done) std::this_thread::sleep_for(std::chrono::microseconds(200));  // polling interval
    lock.lock();
    if (done) in_flight_.pop_front();
  }
}

// ---------------------------------------------------------------- collectives

template <class Launch>
WorkHandle NcclCommunicator::launch(const char* op, const CommBuffer* data, const char* reduce,
                                    int root, Launch&& enqueue_on_stream) {
  PTRAIN_CUDA_CHECK(cudaSetDevice(device_));
  auto work = std::make_shared<NcclWork>();
  work->compute_stream = compute_stream_;
  cudaEvent_t ready;
  PTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  cudaError_t recorded = cudaEventRecord(ready, compute_stream_);
  if (recorded == cudaSuccess) recorded = cudaStreamWaitEvent(stream_, ready, 0);
  cudaEventDestroy(ready);
  PTRAIN_CUDA_CHECK(recorded);
  enqueue_on_stream();
  PTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&work->done, cudaEventDisableTiming));
  PTRAIN_CUDA_CHECK(cudaEventRecord(work->done, stream_));
  // Registered only once enqueued: a call that failed to launch must not trip the watchdog later.
  CollectiveWatchdog::Collective c;
  c.communicator = &name_;
  c.backend = "nccl";
  c.op = op;
  c.seq = ++issued_;
  c.step = step_;
  c.reduce = reduce;
  c.root = root;
  if (data) {
    c.dtype = c10::toString(data->dtype);
    c.numel = data->numel;
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
    PTRAIN_NCCL_CHECK(ncclAllGather(in.data, out.data, static_cast<size_t>(in.numel),
                                    nccl_type(in.dtype), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::reduce_scatter_async(CommBuffer out, CommBuffer in, ReduceOp op) {
  check_cuda_buffer("reduce_scatter", out);
  check_cuda_buffer("reduce_scatter", in);
  check_reduce_scatter_shapes(*this, out, in, op);
  return launch("reduce_scatter", &in, reduce_op_name(op), -1, [&] {
    PTRAIN_NCCL_CHECK(ncclReduceScatter(in.data, out.data, static_cast<size_t>(out.numel),
                                        nccl_type(in.dtype), nccl_op(op), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::all_reduce_async(CommBuffer inout, ReduceOp op) {
  check_cuda_buffer("all_reduce", inout);
  check_reduction("all_reduce", inout, op);
  return launch("all_reduce", &inout, reduce_op_name(op), -1, [&] {
    PTRAIN_NCCL_CHECK(ncclAllReduce(inout.data, inout.data, static_cast<size_t>(inout.numel),
                                    nccl_type(inout.dtype), nccl_op(op), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::broadcast_async(CommBuffer inout, int root) {
  check_cuda_buffer("broadcast", inout);
  PTRAIN_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of '{}' (size {})",
               root, name_, size_);
  return launch("broadcast", &inout, nullptr, root, [&] {
    PTRAIN_NCCL_CHECK(ncclBroadcast(inout.data, inout.data, static_cast<size_t>(inout.numel),
                                    nccl_type(inout.dtype), root, comm_, stream_));
  });
}

WorkHandle NcclCommunicator::barrier_async() {
  return launch("barrier", nullptr, nullptr, -1, [&] {
    PTRAIN_NCCL_CHECK(
        ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_, stream_));
  });
}

std::shared_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  PTRAIN_CHECK(color >= 0, "split: color must be >= 0, got {}", color);
  PTRAIN_CUDA_CHECK(cudaSetDevice(device_));
  PTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  ncclComm_t child = nullptr;
  PTRAIN_NCCL_CHECK(ncclCommSplit(comm_, color, key, &child, nullptr));
  return std::make_shared<NcclCommunicator>(
      child, device_, fmt::format("{}/split(color={})", name_, color), watchdog_);
}

}  // namespace ptrain
