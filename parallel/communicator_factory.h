// The one place that picks a collective backend.
#pragma once

#include <memory>
#include <string>

#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"

namespace ptrain {

// The job's watchdog: on timeout it reports and ends the whole job (MPI_Abort, exit code 3).
std::shared_ptr<CollectiveWatchdog> make_job_watchdog(double timeout_s, int rank, int world,
                                                      const std::string& host,
                                                      std::shared_ptr<spdlog::logger> log);

// The world communicator of `backend` ("mpi" or "nccl"; resolve "auto" first). NCCL uses CUDA
// device local_rank % visible devices.
std::shared_ptr<Communicator> make_world_communicator(const std::string& backend, int local_rank,
                                                      std::shared_ptr<CollectiveWatchdog> watchdog);

}  // namespace ptrain
