// Rank-aware logging on spdlog: every line carries the rank; rank 0 (by default) logs to the
// console, and every rank logs to <log_dir>/rank-N.log when the job keeps log files. Loggers are
// objects handed around in RankContext, never looked up by name.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
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

// The level a log-level name gives: trace, debug, info, warn or error. UserError naming the
// accepted names otherwise.
spdlog::level::level_enum parse_log_level(const std::string& name);

// A count and its noun for messages: "1 row", "3 rows", "0 rows". `plural` defaults to noun + "s".
std::string counted(int64_t count, const std::string& noun, const std::string& plural = "");

}  // namespace ptrain
