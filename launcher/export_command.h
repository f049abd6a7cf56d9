// `ptrain export`: a model plus LoRA adapter out as a PEFT adapter directory or as a merged
// Hugging Face model (docs/qlora.md). The base model is --model, else the job config's (--config,
// --set) base_model; load_in_4bit likewise.
// With --checkpoint DIR (docs/checkpoints.md) the checkpoint, verified first, gives what is
// exported: a LoRA/QLoRA checkpoint's adapter/ (peft: copied as it is; merged: onto --model, else
// the base model it trained, with its load_in_4bit), or a full-training checkpoint's model
// rebuilt from its fp32 masters (merged only, in the dtype it trained in unless --dtype says).
#pragma once

#include <cstdint>
#include <string>

#include "launcher/model_loader.h"
#include "launcher/ptrain_commands.h"

namespace ptrain {

struct ExportOptions {
  ModelFlags model;          // base model (--model, else the config's base_model), --adapter
  bool dtype_given = false;  // --dtype was on the command line (else a checkpoint's dtype)
  std::string checkpoint;    // --checkpoint DIR: export from it instead of --adapter
  std::string format;        // peft | merged
  std::string out;
  uint64_t max_shard_bytes = uint64_t{5} << 30;
  bool force = false;  // write into a non-empty output directory
};

void register_export_command(CommandLine& cli);

int run_export_command(const ExportOptions& options, const ResolvedConfig& config);

}  // namespace ptrain
