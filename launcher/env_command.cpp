#include "launcher/env_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "launcher/job_options.h"
#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"

namespace ptrain {

void register_env_command(CommandLine& cli) {
  cli.add_job_command(
      "env", "Print rank, local rank, world, host, backend and threads as each rank sees them",
      ConfigArgument::kOptional, JobRecord::kNone,
      [](RankSession& session, const ResolvedConfig& config) {
        return run_env_command(session, config);
      });
}

int run_env_command(RankSession& session, const ResolvedConfig& config) {
  RankContext& ctx = session.context();
  const RankInfo& info = session.info();
  // What training would use: the same agreed placement.
  const Placement placement = training_placement(config, ctx);
  constexpr int64_t kLine = 512;
  std::string line = fmt::format(
      "rank={} local_rank={} world={} local_world={} host={} launcher={} device={} backend={} "
      "threads={}",
      info.rank, info.local_rank, info.world, info.local_world, info.host, info.launcher,
      placement.device.str(), placement.backend, session.threads());
  std::vector<uint8_t> mine(kLine, 0);
  std::memcpy(mine.data(), line.data(), std::min<size_t>(line.size(), kLine - 1));
  // Host strings travel over MPI whatever the compute backend is (NCCL moves device buffers only).
  std::vector<uint8_t> all(kLine * ctx.world, 0);
  PTRAIN_MPI_CHECK(
      MPI_Gather(mine.data(), kLine, MPI_BYTE, all.data(), kLine, MPI_BYTE, 0, MPI_COMM_WORLD));
  if (ctx.rank == 0) {
    for (int r = 0; r < ctx.world; ++r)
      std::printf("%s\n", reinterpret_cast<const char*>(all.data() + r * kLine));
    std::fflush(stdout);
  }
  ctx.log->debug("env: {}", line);
  return 0;
}

}  // namespace ptrain
