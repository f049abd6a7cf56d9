// Checks for CUDA runtime and NCCL calls: the one check-macro header of these runtimes, for every
// folder with CUDA code (parallel/nccl/, quant/cuda/). Target ptrain_cuda_check, built only when
// PTRAIN_WITH_CUDA; it needs neither MPI nor libtorch.
//
// A failed call throws RuntimeFailure
//   "CUDA call <call> failed: <CUDA's message> (rank R on host H) (file:line)"
// (NCCL likewise). `where`, "rank R on host H" (parallel/mpi_runtime.h: rank_location), is
// captured once by the owner of the device work (a communicator, when it is built) and handed to
// every check, so an error path queries nothing.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

namespace ptrain {

void check_cuda(cudaError_t code, const char* call, const char* file, int line,
                const std::string& where);
void check_nccl(ncclResult_t code, const char* call, const char* file, int line,
                const std::string& where);

}  // namespace ptrain

#define PTRAIN_CUDA_CHECK(where, call) \
  ::ptrain::check_cuda((call), #call, __FILE__, __LINE__, (where))
#define PTRAIN_NCCL_CHECK(where, call) \
  ::ptrain::check_nccl((call), #call, __FILE__, __LINE__, (where))
