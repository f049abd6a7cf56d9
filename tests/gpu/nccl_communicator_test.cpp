// NcclCommunicator on real devices, against values each rank computes itself. Skips (reported as
// skipped by ctest) when this process sees no CUDA device.
#include <c10/util/BFloat16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <vector>

#include "parallel/communicator_factory.h"
#include "parallel/mpi_runtime.h"
#include "parallel/nccl_backend.h"
#include "tests/mpi/mpi_test_env.h"

namespace ptrain {
namespace {

template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : numel_(static_cast<int64_t>(host.size())) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&data_), host.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(data_); }
  CommBuffer buffer() { return comm_buffer(data_, numel_, DeviceType::kCuda); }
  std::vector<T> to_host() {
    std::vector<T> host(numel_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), data_, host.size() * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }

 private:
  T* data_ = nullptr;
  int64_t numel_;
};

std::shared_ptr<Communicator> nccl_world() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return make_nccl_communicator(MPI_COMM_WORLD, rank % cuda_device_count(), "world", nullptr);
}

#define SKIP_WITHOUT_GPU()                                                                      \
  if (cuda_device_count() == 0)                                                                 \
  GTEST_SKIP() << "no CUDA device visible to this process: the NCCL communicator is built and " \
                  "linked, but cannot run here"

TEST(NcclCommunicator, AllReduceSumFloatAndBFloat16) {
  SKIP_WITHOUT_GPU();
  auto comm = nccl_world();
  const int n = comm->size(), me = comm->rank();
  std::vector<float> f(1001);
  std::vector<c10::BFloat16> h(1001);
  for (int i = 0; i < 1001; ++i) {
    f[i] = static_cast<float>(me + i);
    h[i] = c10::BFloat16(static_cast<float>((me + i) % 7));
  }
  DeviceBuffer<float> df(f);
  DeviceBuffer<c10::BFloat16> dh(h);
  comm->all_reduce(df.buffer(), ReduceOp::kSum);
  comm->all_reduce(dh.buffer(), ReduceOp::kSum);
  auto rf = df.to_host();
  auto rh = dh.to_host();
  for (int i = 0; i < 1001; ++i) {
    float ef = 0, eh = 0;
    for (int r = 0; r < n; ++r) {
      ef += static_cast<float>(r + i);
      eh += static_cast<float>((r + i) % 7);
    }
    ASSERT_EQ(rf[i], ef);
    ASSERT_EQ(static_cast<float>(rh[i]), eh);
  }
}

TEST(NcclCommunicator, AllGatherReduceScatterBroadcast) {
  SKIP_WITHOUT_GPU();
  auto comm = nccl_world();
  const int n = comm->size(), me = comm->rank();
  const int count = 257;
  std::vector<float> in(count), scatter_in(count * n);
  for (int i = 0; i < count; ++i) in[i] = static_cast<float>(me * 1000 + i);
  for (int i = 0; i < count * n; ++i) scatter_in[i] = static_cast<float>(me + i);
  const std::vector<float> gathered_zeros(count * n), scattered_zeros(count);
  DeviceBuffer<float> din(in), dout(gathered_zeros), dsin(scatter_in), dsout(scattered_zeros);
  comm->all_gather(dout.buffer(), din.buffer());
  comm->reduce_scatter(dsout.buffer(), dsin.buffer(), ReduceOp::kAvg);
  comm->broadcast(din.buffer(), n - 1);
  auto gathered = dout.to_host();
  auto scattered = dsout.to_host();
  auto broadcast = din.to_host();
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < count; ++i) ASSERT_EQ(gathered[r * count + i], r * 1000 + i);
  for (int k = 0; k < count; ++k) {
    double sum = 0;
    for (int r = 0; r < n; ++r) sum += r + me * count + k;
    ASSERT_NEAR(scattered[k], sum / n, 1e-3);
  }
  for (int i = 0; i < count; ++i) ASSERT_EQ(broadcast[i], (n - 1) * 1000 + i);
}

}  // namespace
}  // namespace ptrain
