// What a checkpoint records about the run that wrote it, and whether a run may resume from it
// (docs/checkpoints.md, "Resuming").
#pragma once

#include <spdlog/logger.h>

#include <nlohmann/json.hpp>

#include "checkpoint/sharded_checkpoint.h"
#include "core/config.h"

namespace ptrain {

// The identity a manifest records: "config_hash", "config" (config_values), "model" (base_model
// and its model_fingerprint), "tokenizer" (its tokenizer_fingerprint), "mode" (full, lora, qlora).
nlohmann::json checkpoint_identity(const ResolvedConfig& config);

// Keys whose change makes a checkpoint meaningless for a run: the model's trained tensors (the
// adapter and its targets, quantization, dtype) and the data order the sampler's position counts
// in (how the datasets are prepared, the seed; their content is the sampler's own check).
const std::vector<std::string>& resume_binding_keys();

// UserError listing every binding key whose value differs between the checkpoint and this run
// (old and new values), and a base model or tokenizer with other contents; other differences
// (logging, save_steps, max_steps, learning rate) are allowed and each is logged.
void check_resume(const CheckpointManifest& manifest, const nlohmann::json& identity,
                  spdlog::logger& log);

}  // namespace ptrain
