// `ptrain env`: every rank reports what it sees; rank 0 prints one line per rank, in rank order,
// to stdout. Collective over MPI_COMM_WORLD.
#pragma once

#include "launcher/ptrain_commands.h"
#include "launcher/rank_session.h"

namespace ptrain {

void register_env_command(CommandLine& cli);

int run_env_command(RankSession& session, const ResolvedConfig& config);

}  // namespace ptrain
