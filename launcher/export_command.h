// `ptrain export`: a model plus LoRA adapter out as a PEFT adapter directory or as a merged
// Hugging Face model (docs/qlora.md). The base model is --model, else the job config's (--config,
// --set) base_model; load_in_4bit likewise.
#pragma once

#include <cstdint>
#include <string>

#include "launcher/model_loader.h"
#include "launcher/ptrain_commands.h"

namespace ptrain {

struct ExportOptions {
  ModelFlags model;    // base model (--model, else the config's base_model), --adapter (required)
  std::string format;  // peft | merged
  std::string out;
  uint64_t max_shard_bytes = uint64_t{5} << 30;
  bool force = false;  // write into a non-empty output directory
};

void register_export_command(CommandLine& cli);

int run_export_command(const ExportOptions& options, const ResolvedConfig& config);

}  // namespace ptrain
