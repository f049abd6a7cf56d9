// What one rank knows about itself and its job. Created once by the launcher and passed explicitly
// to every component (no globals): rank and world come from MPI, local rank/world from the ranks
// sharing this host, `comm` is the world communicator, `log` the rank-prefixed logger.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>

namespace ptrain {

class Communicator;

struct RankContext {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_world = 1;
  std::string host;
  std::shared_ptr<Communicator> comm;
  std::shared_ptr<spdlog::logger> log;
};

}  // namespace ptrain
