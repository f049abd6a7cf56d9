#include "core/cuda/cuda_check.h"

#include "core/error.h"

namespace ptrain {

void check_cuda(cudaError_t code, const char* call, const char* file, int line,
                const std::string& where) {
  if (code == cudaSuccess) return;
  throw RuntimeFailure(detail::with_location(
      fmt::format("CUDA call {} failed: {} ({})", call, cudaGetErrorString(code), where), file,
      line));
}

void check_nccl(ncclResult_t code, const char* call, const char* file, int line,
                const std::string& where) {
  if (code == ncclSuccess) return;
  throw RuntimeFailure(detail::with_location(
      fmt::format("NCCL call {} failed: {} ({})", call, ncclGetErrorString(code), where), file,
      line));
}

}  // namespace ptrain
