// `ptrain --version`: what this binary is and what it was built with.
#pragma once

#include <string>

namespace ptrain {

// Several lines: the ptrain version (CMake's project version) and git commit (read at build time;
// "unknown" outside a git checkout, "-dirty" when tracked files differ from it), the libtorch and
// CUDA versions CMake found, NCCL's from its header (when built with CUDA), and the MPI library's
// own description of itself (MPI_Get_library_version, callable before MPI_Init).
std::string version_text();

}  // namespace ptrain
