// Built when PTRAIN_WITH_CUDA is off: the NCCL backend reports itself absent.
#include "core/error.h"
#include "parallel/nccl_backend.h"

namespace ptrain {

bool nccl_backend_built() {
  return false;
}

int cuda_device_count() {
  return 0;
}

std::shared_ptr<Communicator> make_nccl_communicator(MPI_Comm, int, std::string,
                                                     std::shared_ptr<CollectiveWatchdog>) {
  throw UserError(
      "comm.backend 'nccl' needs a build with CUDA and NCCL (PTRAIN_WITH_CUDA); this build has "
      "neither: use comm.backend 'mpi' or 'auto'");
}

}  // namespace ptrain
