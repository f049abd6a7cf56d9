// `ptrain preprocess`: builds (or verifies and reuses) the job's prepared dataset and prints its
// summary; with --debug N also N samples as text with the learned tokens highlighted. Collective
// (every rank of an mpirun calls it; rank 0 builds and prints).
#pragma once

#include <cstdint>
#include <string>

#include "launcher/ptrain_commands.h"
#include "launcher/rank_session.h"

namespace ptrain {

struct PreprocessOptions {
  int64_t debug_samples = 0;
  bool json = false;           // the summary as one JSON object
  std::string color = "auto";  // highlight learned tokens: auto (a terminal), always, never
};

void register_preprocess_command(CommandLine& cli);

int run_preprocess_command(RankSession& session, const ResolvedConfig& config,
                           const PreprocessOptions& options);

// Human-readable description of a prepared dataset directory (ptrain inspect), after verifying
// every file's checksum.
std::string describe_prepared_dataset(const std::string& dir);

// Whether `dir` is a prepared dataset directory (has a meta.json of that format).
bool is_prepared_dataset(const std::string& dir);

}  // namespace ptrain
