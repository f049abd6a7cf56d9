// The CUDA and NCCL check macros (core/cuda/cuda_check.h): compiled when the build has CUDA and
// NCCL; no device needed (the failing calls fail on their arguments).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/cuda/cuda_check.h"
#include "core/error.h"
#include "parallel/mpi_runtime.h"

namespace ptrain {
namespace {

TEST(CudaCheck, AFailedCudaCallNamesTheCallFileLineRankAndHost) {
  const std::string where = rank_location(3, "gpu07");
  EXPECT_THAT([&] { PTRAIN_CUDA_CHECK(where, cudaSetDevice(-1)); },
              ::testing::ThrowsMessage<RuntimeFailure>(::testing::AllOf(
                  ::testing::StartsWith("CUDA call cudaSetDevice(-1) failed: "),
                  ::testing::HasSubstr(
                      "(rank 3 on host gpu07) (tests/mpi/parallel/cuda_check_test.cpp:"))));
  int version = 0;
  EXPECT_NO_THROW(PTRAIN_CUDA_CHECK(where, cudaRuntimeGetVersion(&version)));
}

TEST(CudaCheck, AFailedNcclCallNamesTheCallFileLineRankAndHost) {
  const std::string where = rank_location(-1, "gpu07");
  int count = 0;
  EXPECT_THAT([&] { PTRAIN_NCCL_CHECK(where, ncclCommCount(nullptr, &count)); },
              ::testing::ThrowsMessage<RuntimeFailure>(::testing::AllOf(
                  ::testing::StartsWith("NCCL call ncclCommCount(nullptr, &count) failed: "),
                  ::testing::HasSubstr(
                      "(rank unknown on host gpu07) (tests/mpi/parallel/cuda_check_test.cpp:"))));
}

}  // namespace
}  // namespace ptrain
