#include "parallel/mpi_communicator.h"

#include <fmt/format.h>

#include <climits>

#include "parallel/local_reduce.h"
#include "parallel/mpi_runtime.h"
#include "parallel/work_completion.h"

namespace ptrain {

// ---------------------------------------------------------------- work handle

class MpiCommunicator::MpiWork final : public Work {
 public:
  CollectiveWatchdog::Collective collective;
  std::function<void()> body;
  WorkCompletion completion;

  // The host is the compute stream: ordering it after the collective means waiting for it.
  void wait() override { completion.wait(); }
  void synchronize() override { completion.wait(); }
  bool wait_for(std::chrono::milliseconds timeout) override { return completion.wait_for(timeout); }
  bool is_completed() override { return completion.is_completed(); }
};

// ---------------------------------------------------------------- helpers

namespace {

MPI_Datatype mpi_type(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return MPI_FLOAT;
    case c10::ScalarType::Double:
      return MPI_DOUBLE;
    case c10::ScalarType::Int:
      return MPI_INT32_T;
    case c10::ScalarType::Long:
      return MPI_INT64_T;
    case c10::ScalarType::Byte:
      return MPI_UINT8_T;
    case c10::ScalarType::BFloat16:
    case c10::ScalarType::Half:
      return MPI_UINT16_T;  // moved as raw words; arithmetic happens in half_reduce
    default:
      throw UserError(
          fmt::format("MpiCommunicator does not support dtype {} (supported: Float, "
                      "Double, BFloat16, Half, Int, Long, Byte)",
                      c10::toString(dtype)));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM;
}

int mpi_count(int64_t n, const char* collective) {
  PTRAIN_CHECK(n <= INT_MAX, "{}: {} elements exceed MPI's count limit of {}; split the buffer",
               collective, n, INT_MAX);
  return static_cast<int>(n);
}

void check_cpu(const char* collective, const CommBuffer& buffer) {
  PTRAIN_CHECK(buffer.device == DeviceType::kCpu,
               "{}: MpiCommunicator works on CPU buffers; use the nccl backend for CUDA buffers",
               collective);
  PTRAIN_CHECK(buffer.data != nullptr || buffer.numel == 0, "{}: null buffer with {} elements",
               collective, buffer.numel);
  mpi_type(buffer.dtype);
}

uint16_t* words(const CommBuffer& buffer) {
  return static_cast<uint16_t*>(buffer.data);
}

}  // namespace

// ---------------------------------------------------------------- lifetime

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name,
                                 std::shared_ptr<CollectiveWatchdog> watchdog)
    : comm_(comm),
      owns_comm_(comm != MPI_COMM_WORLD),
      name_(std::move(name)),
      where_(world_rank_location()),
      watchdog_(std::move(watchdog)) {
  PTRAIN_MPI_CHECK_AT(where_, MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  PTRAIN_MPI_CHECK_AT(where_, MPI_Comm_rank(comm_, &rank_));
  PTRAIN_MPI_CHECK_AT(where_, MPI_Comm_size(comm_, &size_));
  worker_ = std::thread([this] { worker_loop(); });
}

MpiCommunicator::~MpiCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
  if (owns_comm_) MPI_Comm_free(&comm_);
}

std::shared_ptr<MpiCommunicator::MpiWork> MpiCommunicator::make_work(const char* op,
                                                                     const CommBuffer* data,
                                                                     const char* reduce, int root,
                                                                     std::function<void()> body) {
  auto work = std::make_shared<MpiWork>();
  CollectiveWatchdog::Collective& c = work->collective;
  c.communicator = &name_;
  c.backend = "mpi";
  c.op = op;
  c.seq = ++issued_;
  c.step = step_.load();
  c.reduce = reduce;
  c.root = root;
  if (data) {
    c.dtype = c10::toString(data->dtype);
    c.numel = data->numel;
    c.bytes = data->nbytes();
  }
  work->body = std::move(body);
  return work;
}

WorkHandle MpiCommunicator::enqueue(std::shared_ptr<MpiWork> work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (abandoned_) {
      work->completion.complete(std::make_exception_ptr(RuntimeFailure(
          fmt::format("{} on communicator '{}' was issued after the communicator was abandoned",
                      work->collective.op, name_))));
      return work;
    }
    queue_.push_back(work);
  }
  cv_.notify_one();
  return work;
}

void MpiCommunicator::abandon() {
  std::deque<std::shared_ptr<MpiWork>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned_ = true;
    dropped.swap(queue_);
  }
  for (auto& work : dropped) {
    work->completion.complete(std::make_exception_ptr(RuntimeFailure(fmt::format(
        "{} #{} on communicator '{}' was abandoned before it started (the job is ending)",
        work->collective.op, work->collective.seq, name_))));
  }
}

void MpiCommunicator::run_blocking(std::shared_ptr<MpiWork> work) {
  bool idle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle = queue_.empty() && !worker_busy_;
  }
  // Only the issuing thread enqueues, and it is here: the worker stays idle while this runs.
  if (idle) {
    execute(*work);
    work->synchronize();
  } else {
    enqueue(work)->synchronize();
  }
}

void MpiCommunicator::execute(MpiWork& work) {
  const auto& c = work.collective;
  std::exception_ptr error;
  bool abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned = abandoned_;
  }
  if (abandoned) {
    error = std::make_exception_ptr(RuntimeFailure(
        fmt::format("{} #{} on communicator '{}' was not run: the communicator was abandoned", c.op,
                    c.seq, name_)));
  } else if (!broken_by_.empty()) {
    error = std::make_exception_ptr(
        RuntimeFailure(fmt::format("{} #{} on communicator '{}' was not run: {} failed before it",
                                   c.op, c.seq, name_, broken_by_)));
  } else {
    uint64_t token = watchdog_ ? watchdog_->start(c) : 0;
    try {
      work.body();
    } catch (const std::exception& e) {
      error = std::current_exception();
      broken_by_ = fmt::format("{} #{} ({})", c.op, c.seq, e.what());
    } catch (...) {
      error = std::current_exception();
      broken_by_ = fmt::format("{} #{}", c.op, c.seq);
    }
    if (watchdog_) watchdog_->finish(token);
  }
  work.body = nullptr;
  work.completion.complete(error);
}

void MpiCommunicator::worker_loop() {
  for (;;) {
    std::shared_ptr<MpiWork> work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      worker_busy_ = false;
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything issued has run
      work = std::move(queue_.front());
      queue_.pop_front();
      worker_busy_ = true;
    }
    execute(*work);
  }
}

// ---------------------------------------------------------------- issuing side

std::shared_ptr<MpiCommunicator::MpiWork> MpiCommunicator::all_gather_work(CommBuffer out,
                                                                           CommBuffer in) {
  check_cpu("all_gather", out);
  check_cpu("all_gather", in);
  check_all_gather_shapes(*this, out, in);
  mpi_count(out.numel, "all_gather");
  return make_work("all_gather", &in, nullptr, -1, [this, out, in] { run_all_gather(out, in); });
}

std::shared_ptr<MpiCommunicator::MpiWork> MpiCommunicator::reduce_scatter_work(CommBuffer out,
                                                                               CommBuffer in,
                                                                               ReduceOp op) {
  check_cpu("reduce_scatter", out);
  check_cpu("reduce_scatter", in);
  check_reduce_scatter_shapes(*this, out, in, op);
  mpi_count(in.numel, "reduce_scatter");
  return make_work("reduce_scatter", &in, reduce_op_name(op), -1,
                   [this, out, in, op] { run_reduce_scatter(out, in, op); });
}

std::shared_ptr<MpiCommunicator::MpiWork> MpiCommunicator::all_reduce_work(CommBuffer inout,
                                                                           ReduceOp op) {
  check_cpu("all_reduce", inout);
  check_reduction("all_reduce", inout, op);
  mpi_count(inout.numel, "all_reduce");
  return make_work("all_reduce", &inout, reduce_op_name(op), -1,
                   [this, inout, op] { run_all_reduce(inout, op); });
}

std::shared_ptr<MpiCommunicator::MpiWork> MpiCommunicator::broadcast_work(CommBuffer inout,
                                                                          int root) {
  check_cpu("broadcast", inout);
  PTRAIN_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of '{}' (size {})",
               root, name_, size_);
  int count = mpi_count(inout.numel, "broadcast");
  return make_work("broadcast", &inout, nullptr, root, [this, inout, root, count] {
    PTRAIN_MPI_CHECK_AT(where_, MPI_Bcast(inout.data, count, mpi_type(inout.dtype), root, comm_));
  });
}

std::shared_ptr<MpiCommunicator::MpiWork> MpiCommunicator::barrier_work() {
  return make_work("barrier", nullptr, nullptr, -1,
                   [this] { PTRAIN_MPI_CHECK_AT(where_, MPI_Barrier(comm_)); });
}

WorkHandle MpiCommunicator::all_gather_async(CommBuffer out, CommBuffer in) {
  return enqueue(all_gather_work(out, in));
}
WorkHandle MpiCommunicator::reduce_scatter_async(CommBuffer out, CommBuffer in, ReduceOp op) {
  return enqueue(reduce_scatter_work(out, in, op));
}
WorkHandle MpiCommunicator::all_reduce_async(CommBuffer inout, ReduceOp op) {
  return enqueue(all_reduce_work(inout, op));
}
WorkHandle MpiCommunicator::broadcast_async(CommBuffer inout, int root) {
  return enqueue(broadcast_work(inout, root));
}
WorkHandle MpiCommunicator::barrier_async() {
  return enqueue(barrier_work());
}

void MpiCommunicator::all_gather(CommBuffer out, CommBuffer in) {
  run_blocking(all_gather_work(out, in));
}
void MpiCommunicator::reduce_scatter(CommBuffer out, CommBuffer in, ReduceOp op) {
  run_blocking(reduce_scatter_work(out, in, op));
}
void MpiCommunicator::all_reduce(CommBuffer inout, ReduceOp op) {
  run_blocking(all_reduce_work(inout, op));
}
void MpiCommunicator::broadcast(CommBuffer inout, int root) {
  run_blocking(broadcast_work(inout, root));
}
void MpiCommunicator::barrier() {
  run_blocking(barrier_work());
}

std::shared_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  PTRAIN_CHECK(color >= 0, "split: color must be >= 0, got {}", color);
  MPI_Comm child = MPI_COMM_NULL;
  run_blocking(make_work("split", nullptr, nullptr, -1, [this, color, key, &child] {
    PTRAIN_MPI_CHECK_AT(where_, MPI_Comm_split(comm_, color, key, &child));
  }));
  // Named by the split's ordinal on this communicator (the same on every rank) and the color, so
  // that the groups of two splits (shard and replica groups) never share a name in reports.
  return std::make_shared<MpiCommunicator>(
      child, fmt::format("{}/split{}(color={})", name_, ++splits_, color), watchdog_);
}

// ---------------------------------------------------------------- communication thread

void MpiCommunicator::run_all_gather(const CommBuffer& out, const CommBuffer& in) {
  const MPI_Datatype type = mpi_type(in.dtype);
  const int count = static_cast<int>(in.numel);
  const void* send = in.data == out.slice(rank_ * in.numel, in.numel).data ? MPI_IN_PLACE : in.data;
  PTRAIN_MPI_CHECK_AT(where_, MPI_Allgather(send, count, type, out.data, count, type, comm_));
}

void MpiCommunicator::run_reduce_scatter(const CommBuffer& out, const CommBuffer& in, ReduceOp op) {
  if (has_local_reduce(in.dtype) && in.nbytes() >= kSmallBytes)
    return run_chunked_reduce_scatter(out, in, op);
  if (is_16bit_float(in.dtype)) return run_widened_reduce_scatter(out, in, op);
  PTRAIN_MPI_CHECK_AT(where_,
                      MPI_Reduce_scatter_block(in.data, out.data, static_cast<int>(out.numel),
                                               mpi_type(in.dtype), mpi_op(op), comm_));
  if (op == ReduceOp::kAvg) divide_by_size(out);
}

void MpiCommunicator::run_all_reduce(const CommBuffer& inout, ReduceOp op) {
  const bool chunked = is_16bit_float(inout.dtype) ? inout.nbytes() >= kSmallBytes
                                                   : has_local_reduce(inout.dtype) &&
                                                         inout.nbytes() >= kLargeAllReduceBytes;
  if (chunked && inout.numel >= size_) return run_chunked_all_reduce(inout, op);
  if (is_16bit_float(inout.dtype)) return run_widened_all_reduce(inout, op);
  PTRAIN_MPI_CHECK_AT(where_, MPI_Allreduce(MPI_IN_PLACE, inout.data, static_cast<int>(inout.numel),
                                            mpi_type(inout.dtype), mpi_op(op), comm_));
  if (op == ReduceOp::kAvg) divide_by_size(inout);
}

void MpiCommunicator::run_chunked_reduce_scatter(const CommBuffer& out, const CommBuffer& in,
                                                 ReduceOp op) {
  // Segment by segment of our chunk: row r of scratch is rank r's copy of the segment.
  const MPI_Datatype type = mpi_type(in.dtype);
  const int64_t segment = std::max<int64_t>(1, kSegmentBytes / in.element_size() / size_);
  std::vector<int> counts(size_), displs(size_), recv_displs(size_);
  for (int64_t begin = 0; begin < out.numel; begin += segment) {
    const int len = static_cast<int>(std::min(segment, out.numel - begin));
    for (int r = 0; r < size_; ++r) {
      counts[r] = len;
      displs[r] = static_cast<int>(r * out.numel + begin);
      recv_displs[r] = r * len;
    }
    scratch_.resize(static_cast<size_t>(len) * size_ * in.element_size());
    PTRAIN_MPI_CHECK_AT(where_,
                        MPI_Alltoallv(in.data, counts.data(), displs.data(), type, scratch_.data(),
                                      counts.data(), recv_displs.data(), type, comm_));
    reduce_rows(scratch_.data(), size_, len, len, in.dtype, op, size_, out.slice(begin, len).data);
  }
}

void MpiCommunicator::run_chunked_all_reduce(const CommBuffer& inout, ReduceOp op) {
  // Independent segments bound the scratch memory and keep each step's working set cache-sized.
  const int64_t segment =
      std::max<int64_t>(size_, kSegmentBytes / inout.element_size() / size_ * size_);
  for (int64_t begin = 0; begin < inout.numel; begin += segment)
    run_chunked_all_reduce_segment(inout.slice(begin, std::min(segment, inout.numel - begin)), op);
}

void MpiCommunicator::run_chunked_all_reduce_segment(const CommBuffer& inout, ReduceOp op) {
  // Chunk j (balanced split) is reduced by rank j, then gathered back into place.
  const MPI_Datatype type = mpi_type(inout.dtype);
  const int64_t base = inout.numel / size_, extra = inout.numel % size_;
  const int mine = static_cast<int>(base + (rank_ < extra ? 1 : 0));
  const int64_t my_offset = rank_ * base + std::min<int64_t>(rank_, extra);
  scratch_.resize(static_cast<size_t>(mine) * size_ * inout.element_size());
  if (extra == 0) {
    // The reduced chunk lands in scratch's first row and is gathered from there: Open MPI's
    // in-place all-gather is markedly slower than the out-of-place one (docs/benchmarks.md).
    PTRAIN_MPI_CHECK_AT(where_,
                        MPI_Alltoall(inout.data, mine, type, scratch_.data(), mine, type, comm_));
    reduce_rows(scratch_.data(), size_, mine, mine, inout.dtype, op, size_, scratch_.data());
    PTRAIN_MPI_CHECK_AT(where_,
                        MPI_Allgather(scratch_.data(), mine, type, inout.data, mine, type, comm_));
    return;
  }
  std::vector<int> counts(size_), displs(size_), recv_counts(size_, mine), recv_displs(size_);
  for (int j = 0, offset = 0; j < size_; ++j) {
    counts[j] = static_cast<int>(base + (j < extra ? 1 : 0));
    displs[j] = offset;
    offset += counts[j];
    recv_displs[j] = j * mine;
  }
  PTRAIN_MPI_CHECK_AT(where_,
                      MPI_Alltoallv(inout.data, counts.data(), displs.data(), type, scratch_.data(),
                                    recv_counts.data(), recv_displs.data(), type, comm_));
  reduce_rows(scratch_.data(), size_, mine, mine, inout.dtype, op, size_,
              inout.slice(my_offset, mine).data);
  PTRAIN_MPI_CHECK_AT(where_, MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, inout.data,
                                             counts.data(), displs.data(), type, comm_));
}

void MpiCommunicator::run_widened_reduce_scatter(const CommBuffer& out, const CommBuffer& in,
                                                 ReduceOp op) {
  scratch32_.resize(static_cast<size_t>(in.numel + out.numel));
  float* send = scratch32_.data();
  float* recv = send + in.numel;
  widen_16bit(words(in), in.numel, in.dtype, send);
  PTRAIN_MPI_CHECK_AT(where_, MPI_Reduce_scatter_block(send, recv, static_cast<int>(out.numel),
                                                       MPI_FLOAT, mpi_op(op), comm_));
  narrow_to_16bit(recv, out.numel, out.dtype, op == ReduceOp::kAvg ? size_ : 1, words(out));
}

void MpiCommunicator::run_widened_all_reduce(const CommBuffer& inout, ReduceOp op) {
  scratch32_.resize(static_cast<size_t>(inout.numel));
  widen_16bit(words(inout), inout.numel, inout.dtype, scratch32_.data());
  PTRAIN_MPI_CHECK_AT(where_,
                      MPI_Allreduce(MPI_IN_PLACE, scratch32_.data(), static_cast<int>(inout.numel),
                                    MPI_FLOAT, mpi_op(op), comm_));
  narrow_to_16bit(scratch32_.data(), inout.numel, inout.dtype, op == ReduceOp::kAvg ? size_ : 1,
                  words(inout));
}

void MpiCommunicator::divide_by_size(const CommBuffer& buffer) {
  if (buffer.dtype == c10::ScalarType::Float) {
    auto* p = static_cast<float*>(buffer.data);
    const float d = static_cast<float>(size_);
    for (int64_t i = 0; i < buffer.numel; ++i) p[i] /= d;
  } else {
    PTRAIN_ASSERT(buffer.dtype == c10::ScalarType::Double, "avg on {}",
                  c10::toString(buffer.dtype));
    auto* p = static_cast<double*>(buffer.data);
    for (int64_t i = 0; i < buffer.numel; ++i) p[i] /= size_;
  }
}

}  // namespace ptrain
