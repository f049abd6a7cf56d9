// The single registration point of the NCCL backend. CMake compiles nccl/nccl_communicator.cpp
// when PTRAIN_WITH_CUDA is on and nccl_unavailable.cpp otherwise; shared code never #ifdefs CUDA.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"

namespace ptrain {

// True when this build contains the NCCL communicator.
bool nccl_backend_built();

// CUDA devices visible to this process; 0 without a CUDA build, driver or device.
int cuda_device_count();

// Collective over `bootstrap`: every rank picks device `device`, rank 0 creates the NCCL unique id
// and broadcasts it over MPI, and each rank joins the NCCL communicator. RuntimeFailure when the
// backend is not built or no device is visible.
std::shared_ptr<Communicator> make_nccl_communicator(MPI_Comm bootstrap, int device,
                                                     std::string name,
                                                     std::shared_ptr<CollectiveWatchdog> watchdog);

}  // namespace ptrain
