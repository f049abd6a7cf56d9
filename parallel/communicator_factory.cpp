#include "parallel/communicator_factory.h"

#include "core/error.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"
#include "parallel/nccl_backend.h"

namespace ptrain {

std::shared_ptr<CollectiveWatchdog> make_job_watchdog(double timeout_s, int rank, int world,
                                                      const std::string& host,
                                                      std::shared_ptr<spdlog::logger> log) {
  return std::make_shared<CollectiveWatchdog>(
      std::chrono::duration<double>(timeout_s), rank, world, host, std::move(log),
      [](const std::string&) { MpiRuntime::abort_job(ExitCode::kRuntimeFailure); });
}

std::shared_ptr<Communicator> make_world_communicator(
    const std::string& backend, int local_rank, std::shared_ptr<CollectiveWatchdog> watchdog) {
  if (backend == "nccl") {
    int devices = cuda_device_count();
    // Beside the MPI world of the same ranks: its own name in watchdog and hang reports.
    return make_nccl_communicator(MPI_COMM_WORLD, devices > 0 ? local_rank % devices : 0,
                                  "world.nccl", std::move(watchdog));
  }
  PTRAIN_CHECK(backend == "mpi", "unknown communicator backend '{}'", backend);
  return std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, "world", std::move(watchdog));
}

}  // namespace ptrain
