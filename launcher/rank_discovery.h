// Who this process is in the job. Rank and world come from MPI (so mpirun, srun and any PMIx
// launcher work alike); local rank and local world from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED),
// cross-checked with the launcher's own variables when present: OMPI_COMM_WORLD_LOCAL_RANK,
// OMPI_COMM_WORLD_LOCAL_SIZE (Open MPI), SLURM_LOCALID (Slurm), PMIX_RANK (PMIx).
#pragma once

#include <string>
#include <vector>

namespace ptrain {

struct RankInfo {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_world = 1;
  std::string host;
  std::string launcher;               // "mpirun", "srun", "pmix" or "singleton"
  std::vector<std::string> warnings;  // disagreements between MPI and the launcher's variables
};

// Needs MPI initialised. Collective over MPI_COMM_WORLD.
RankInfo discover_ranks();

}  // namespace ptrain
