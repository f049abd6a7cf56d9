// Rank-aware logging on spdlog: every line carries the rank; rank 0 (by default) logs to the
// console, every rank logs to <output_dir>/logs/rank-N.log. Loggers are objects handed around in
// RankContext, never looked up by name.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace ptrain {

struct LogSettings {
  std::string level = "info";     // trace | debug | info | warn | error
  std::string console = "rank0";  // rank0 | all | none
  std::string log_dir;            // empty: no log file
};

std::shared_ptr<spdlog::logger> make_rank_logger(const LogSettings& settings, int rank,
                                                 const std::string& host);

}  // namespace ptrain
