// `ptrain generate`: continues prompts with a model directory, in one process. The model is
// --model, else the job config's (--config, --set) base_model; load_in_4bit likewise.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "launcher/model_loader.h"
#include "launcher/ptrain_commands.h"

namespace ptrain {

struct GenerateCommandOptions {
  ModelFlags model;
  std::vector<std::string> prompts;     // text, tokenized by the model's tokenizer
  std::vector<std::string> prompt_ids;  // "1,15043,3186": token ids, no tokenizer needed
  // Unset: the model's generation_config.json (do_sample, temperature, top_k, top_p), else
  // greedy.
  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  int64_t max_new_tokens = 128;
  uint64_t seed = 0;
  bool json = false;
};

void register_generate_command(CommandLine& cli);

// Generates a continuation of every prompt in turn. Plain output streams each prompt and its
// continuation to stdout, with timings on stderr; --json prints one object per prompt.
int run_generate_command(const GenerateCommandOptions& options, const ResolvedConfig& config);

}  // namespace ptrain
