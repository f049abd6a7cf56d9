#include "core/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <filesystem>

#include "core/error.h"

namespace ptrain {

std::shared_ptr<spdlog::logger> make_rank_logger(const LogSettings& settings, int rank,
                                                 const std::string& host) {
  const spdlog::level::level_enum level = parse_log_level(settings.level);
  std::vector<spdlog::sink_ptr> sinks;
  if (settings.console == "all" || (settings.console == "rank0" && rank == 0))
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!settings.log_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(settings.log_dir, ec);
    if (ec)
      throw UserError(
          fmt::format("cannot create log directory '{}': {}", settings.log_dir, ec.message()));
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(
        fmt::format("{}/rank-{}.log", settings.log_dir, rank), /*truncate=*/false));
  }
  auto logger =
      std::make_shared<spdlog::logger>(fmt::format("rank{}", rank), sinks.begin(), sinks.end());
  logger->set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {} {}] [%^%l%$] %v", rank, host));
  logger->set_level(level);
  // Lines must reach the file even when the job is aborted a moment later.
  logger->flush_on(spdlog::level::trace);
  return logger;
}

spdlog::level::level_enum parse_log_level(const std::string& name) {
  for (const auto& [text, level] : {std::pair{"trace", spdlog::level::trace},
                                    {"debug", spdlog::level::debug},
                                    {"info", spdlog::level::info},
                                    {"warn", spdlog::level::warn},
                                    {"error", spdlog::level::err}})
    if (name == text) return level;
  throw UserError(
      fmt::format("unknown log level '{}': expected trace, debug, info, warn or error", name));
}

std::string counted(int64_t count, const std::string& noun, const std::string& plural) {
  if (count == 1) return fmt::format("1 {}", noun);
  return fmt::format("{} {}", count, plural.empty() ? noun + "s" : plural);
}

}  // namespace ptrain
