#include "launcher/version.h"

#include <fmt/format.h>
#include <mpi.h>

#include "launcher/build_info.h"
#include "launcher/git_commit.h"

namespace ptrain {

std::string version_text() {
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING + 1] = {0};
  int length = 0;
  std::string mpi_version = "unknown";
  if (MPI_Get_library_version(mpi, &length) == MPI_SUCCESS) {
    mpi_version = mpi;  // its first line: Open MPI's length counts the terminating NUL
    mpi_version = mpi_version.substr(0, mpi_version.find_first_of("\r\n"));
  }
  return fmt::format("ptrain {}\ngit commit: {}\nlibtorch: {}\nMPI: {}\nNCCL: {}\nCUDA: {}\n",
                     kBuildVersion, kGitCommit, kBuildTorchVersion, mpi_version, kBuildNcclVersion,
                     kBuildCuda);
}

}  // namespace ptrain
