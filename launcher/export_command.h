// `ptrain export`: a model plus LoRA adapter out as a PEFT adapter directory or as a merged
// Hugging Face model (docs/qlora.md).
#pragma once

#include <cstdint>
#include <string>

#include "launcher/model_loader.h"
#include "launcher/ptrain_commands.h"

namespace ptrain {

struct ExportOptions {
  ModelLoadOptions model;  // base model, --load-in-4bit, --adapter (required)
  std::string format;      // peft | merged
  std::string out;
  uint64_t max_shard_bytes = uint64_t{5} << 30;
  bool force = false;  // write into a non-empty output directory
};

void register_export_command(CommandLine& cli);

int run_export_command(const ExportOptions& options);

}  // namespace ptrain
