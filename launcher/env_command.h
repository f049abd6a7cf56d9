#pragma once

#include "launcher/rank_session.h"

namespace ptrain {

// `ptrain env`: every rank reports what it sees; rank 0 prints one line per rank, in rank order,
// to stdout. Collective over MPI_COMM_WORLD.
int run_env_command(RankSession& session);

}  // namespace ptrain
