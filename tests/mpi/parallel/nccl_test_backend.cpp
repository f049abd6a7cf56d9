// The NCCL instantiation of the communicator contract tests (comm_test_backend.h), compiled when
// the build has CUDA and NCCL (PTRAIN_WITH_CUDA), plus what only a device backend promises: the
// compute stream it orders against. Every test skips, saying why, unless each rank of the job has
// a CUDA device of its own.
#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "core/cuda/cuda_check.h"
#include "parallel/mpi_runtime.h"
#include "parallel/nccl_backend.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/mpi/parallel/comm_test_backend.h"

namespace ptrain::test {
namespace {

class DeviceMemory final : public BackendMemory {
 public:
  DeviceMemory(int device, int64_t bytes, std::string where) : where_(std::move(where)) {
    PTRAIN_CUDA_CHECK(where_, cudaSetDevice(device));
    PTRAIN_CUDA_CHECK(where_, cudaMalloc(&data_, static_cast<size_t>(bytes)));
  }
  ~DeviceMemory() override { cudaFree(data_); }

  void* data() override { return data_; }
  // cudaMemcpy runs on the legacy default stream, the communicator's compute stream here.
  void upload(const void* host, int64_t bytes) override {
    PTRAIN_CUDA_CHECK(where_,
                      cudaMemcpy(data_, host, static_cast<size_t>(bytes), cudaMemcpyHostToDevice));
  }
  void download(void* host, int64_t bytes) override {
    PTRAIN_CUDA_CHECK(where_,
                      cudaMemcpy(host, data_, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost));
  }

 private:
  std::string where_;
  void* data_ = nullptr;
};

class NcclTestBackend final : public CommTestBackend {
 public:
  std::string name() const override { return "nccl"; }

  std::string unavailable_reason() override {
    if (!decided_) decide();
    return reason_;
  }

  Communicator& world() override {
    if (!world_)
      world_ = make_nccl_communicator(MPI_COMM_WORLD, device_, "world", test::job_watchdog());
    return *world_;
  }

  DeviceType device() const override { return DeviceType::kCuda; }
  std::unique_ptr<BackendMemory> allocate(int64_t bytes) override {
    return std::make_unique<DeviceMemory>(device_, bytes, world_rank_location());
  }
  bool rounds_once() const override { return false; }

  void release() { world_.reset(); }

 private:
  // Collective: every rank learns whether every rank has a device of its own.
  void decide() {
    decided_ = true;
    const int devices = cuda_device_count();
    MPI_Comm local = MPI_COMM_NULL;
    int local_rank = 0, local_size = 1;
    PTRAIN_MPI_CHECK(
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
    PTRAIN_MPI_CHECK(MPI_Comm_rank(local, &local_rank));
    PTRAIN_MPI_CHECK(MPI_Comm_size(local, &local_size));
    PTRAIN_MPI_CHECK(MPI_Comm_free(&local));
    const int mine = devices >= local_size ? 1 : 0;
    int everyone = 0;
    PTRAIN_MPI_CHECK(MPI_Allreduce(&mine, &everyone, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    device_ = devices > 0 ? local_rank % devices : 0;
    if (everyone) return;
    if (devices == 0)
      reason_ =
          "no CUDA device visible to this process: the NCCL communicator is built and linked, "
          "but cannot run here";
    else if (!mine)
      reason_ =
          fmt::format("{} ranks on this host share {} CUDA device(s); NCCL needs a device per rank",
                      local_size, devices);
    else
      reason_ = "another rank of this job has no CUDA device of its own";
  }

  bool decided_ = false;
  std::string reason_;
  int device_ = 0;
  std::shared_ptr<Communicator> world_;
};

NcclTestBackend& nccl_test_backend() {
  static NcclTestBackend backend;
  return backend;
}

// The NCCL world must be gone before mpi_test_main.cpp drops the watchdog and finalises MPI.
class ReleaseNcclWorld : public ::testing::Environment {
 public:
  void TearDown() override { nccl_test_backend().release(); }
};
::testing::Environment* const kReleaseNcclWorld =
    ::testing::AddGlobalTestEnvironment(new ReleaseNcclWorld);

INSTANTIATE_TEST_SUITE_P(Nccl, CollectiveTest,
                         ::testing::Combine(::testing::Values(&nccl_test_backend()),
                                            ::testing::ValuesIn(all_dtypes())),
                         dtype_test_name);
INSTANTIATE_TEST_SUITE_P(Nccl, CommContractTest, ::testing::Values(&nccl_test_backend()),
                         backend_test_name);

// ---------------------------------------------------------------- the compute stream

class NcclStreamTest : public CommContractTest {};

TEST_P(NcclStreamTest, CollectivesAreOrderedAgainstTheComputeStreamBothWays) {
  // A non-blocking stream: nothing but the communicator orders it against NCCL's stream.
  const int n = comm().size(), me = comm().rank();
  const std::string where = world_rank_location();
  const size_t count = size_t{1} << 24;
  cudaStream_t stream = nullptr;
  PTRAIN_CUDA_CHECK(where, cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  float* host = nullptr;
  float* device = nullptr;
  PTRAIN_CUDA_CHECK(where, cudaMallocHost(&host, count * sizeof(float)));
  PTRAIN_CUDA_CHECK(where, cudaMalloc(&device, count * sizeof(float)));
  for (size_t i = 0; i < count; ++i) host[i] = static_cast<float>(me + i % 7);
  comm().set_compute_stream(ComputeStream{stream});
  // The input is written on the compute stream right before the collective is issued ...
  PTRAIN_CUDA_CHECK(
      where, cudaMemcpyAsync(device, host, count * sizeof(float), cudaMemcpyHostToDevice, stream));
  WorkHandle work = comm().all_reduce_async(
      comm_buffer(device, static_cast<int64_t>(count), DeviceType::kCuda), ReduceOp::kSum);
  work->wait();  // ... and read back on it right after wait(), without the host waiting.
  PTRAIN_CUDA_CHECK(
      where, cudaMemcpyAsync(host, device, count * sizeof(float), cudaMemcpyDeviceToHost, stream));
  PTRAIN_CUDA_CHECK(where, cudaStreamSynchronize(stream));
  comm().set_compute_stream(ComputeStream{});
  EXPECT_TRUE(work->wait_for(std::chrono::seconds(60)));
  for (size_t i = 0; i < count; i += 4099) {
    float expected = 0;
    for (int r = 0; r < n; ++r) expected += static_cast<float>(r + i % 7);
    ASSERT_EQ(host[i], expected) << i;
  }
  cudaFree(device);
  cudaFreeHost(host);
  cudaStreamDestroy(stream);
}

TEST_P(NcclStreamTest, SynchronizeBlocksTheHostUntilComplete) {
  const int n = comm().size();
  const std::string where = world_rank_location();
  int* device = nullptr;
  PTRAIN_CUDA_CHECK(where, cudaMalloc(&device, sizeof(int)));
  const int one = 1;
  PTRAIN_CUDA_CHECK(where, cudaMemcpy(device, &one, sizeof(int), cudaMemcpyHostToDevice));
  WorkHandle work =
      comm().all_reduce_async(comm_buffer(device, 1, DeviceType::kCuda), ReduceOp::kSum);
  work->synchronize();
  EXPECT_TRUE(work->is_completed());
  // A stream that waited for nothing sees the result: the collective has ended on the device.
  cudaStream_t other = nullptr;
  PTRAIN_CUDA_CHECK(where, cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  int* pinned = nullptr;
  PTRAIN_CUDA_CHECK(where, cudaMallocHost(&pinned, sizeof(int)));
  PTRAIN_CUDA_CHECK(where,
                    cudaMemcpyAsync(pinned, device, sizeof(int), cudaMemcpyDeviceToHost, other));
  PTRAIN_CUDA_CHECK(where, cudaStreamSynchronize(other));
  EXPECT_EQ(*pinned, n);
  cudaFreeHost(pinned);
  cudaStreamDestroy(other);
  cudaFree(device);
}

INSTANTIATE_TEST_SUITE_P(Nccl, NcclStreamTest, ::testing::Values(&nccl_test_backend()),
                         backend_test_name);

}  // namespace
}  // namespace ptrain::test
