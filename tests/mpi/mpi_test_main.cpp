// main() for multi-rank GoogleTest binaries. Every rank runs every test; rank 0 prints the usual
// report, other ranks print only their failures (prefixed with the rank); the process exits
// non-zero on every rank when any rank failed.
#include <gtest/gtest.h>

#include <cstdio>

#include "parallel/communicator_factory.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"
#include "tests/mpi/mpi_test_env.h"

namespace ptrain::test {
namespace {

// Test-binary scope only; product code passes RankContext.
std::shared_ptr<Communicator> g_world;
std::shared_ptr<CollectiveWatchdog> g_watchdog;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, result.file_name(),
                 result.line_number(), result.summary());
  }

 private:
  int rank_;
};

}  // namespace

Communicator& world() {
  return *g_world;
}

std::shared_ptr<CollectiveWatchdog> job_watchdog() {
  return g_watchdog;
}

}  // namespace ptrain::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ptrain::MpiRuntime mpi(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new ptrain::test::RankFailurePrinter(rank));
  }
  auto& watchdog = ptrain::test::g_watchdog;
  watchdog = ptrain::make_job_watchdog(120.0, rank, size, ptrain::host_name(), nullptr);
  ptrain::test::g_world =
      std::make_shared<ptrain::MpiCommunicator>(MPI_COMM_WORLD, "world", watchdog);
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ptrain::test::g_world.reset();
  watchdog.reset();
  if (rank == 0 && any_failed && !failed) std::fprintf(stderr, "a test failed on another rank\n");
  return any_failed;
}
