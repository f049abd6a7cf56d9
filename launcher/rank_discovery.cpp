#include "launcher/rank_discovery.h"

#include <mpi.h>

#include <cstdlib>

#include "core/error.h"
#include "parallel/mpi_runtime.h"

namespace ptrain {
namespace {

// The integer in environment variable `name`, or -1 when unset or not an integer.
int env_int(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return -1;
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  return *end == '\0' ? static_cast<int>(value) : -1;
}

void cross_check(RankInfo& info, const char* variable, int expected, const char* what) {
  int value = env_int(variable);
  if (value >= 0 && value != expected)
    info.warnings.push_back(fmt::format("{}={} but MPI says {} is {}; using MPI's value", variable,
                                        value, what, expected));
}

}  // namespace

RankInfo discover_ranks() {
  RankInfo info;
  PTRAIN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info.rank));
  PTRAIN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info.world));
  MPI_Comm local = MPI_COMM_NULL;
  PTRAIN_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &local));
  PTRAIN_MPI_CHECK(MPI_Comm_rank(local, &info.local_rank));
  PTRAIN_MPI_CHECK(MPI_Comm_size(local, &info.local_world));
  MPI_Comm_free(&local);
  info.host = host_name();

  if (env_int("OMPI_COMM_WORLD_RANK") >= 0) {
    info.launcher = "mpirun";
    cross_check(info, "OMPI_COMM_WORLD_RANK", info.rank, "the rank");
    cross_check(info, "OMPI_COMM_WORLD_LOCAL_RANK", info.local_rank, "the local rank");
    cross_check(info, "OMPI_COMM_WORLD_LOCAL_SIZE", info.local_world, "the local world size");
  } else if (env_int("SLURM_PROCID") >= 0) {
    info.launcher = "srun";
    cross_check(info, "SLURM_PROCID", info.rank, "the rank");
    cross_check(info, "SLURM_LOCALID", info.local_rank, "the local rank");
  } else if (env_int("PMIX_RANK") >= 0) {
    info.launcher = "pmix";
    cross_check(info, "PMIX_RANK", info.rank, "the rank");
  } else {
    info.launcher = "singleton";
  }
  return info;
}

}  // namespace ptrain
