// A committed checkpoint read by one process without MPI: `ptrain inspect` of a checkpoint (or of
// the directory that holds them) and `ptrain export --checkpoint` (docs/checkpoints.md). What a
// checkpoint holds is trainer/checkpointer.h's note; its files and manifest envelope are
// checkpoint/sharded_checkpoint.h. Every function here reads; none changes the checkpoint.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>

#include "checkpoint/sharded_checkpoint.h"

namespace ptrain {

// A directory holding manifest.json: a checkpoint (or something claiming to be one).
bool is_checkpoint_dir(const std::string& dir);
// A directory holding committed checkpoints (step-S with a manifest), e.g.
// <output_dir>/checkpoints.
bool is_checkpoint_root(const std::string& dir);

// The summary `ptrain inspect` prints (step, mode, world and shard size, base model, config hash,
// sampler position, flat parameters, every file with its size and checksum status), after
// verifying every file. `problems` receives each bad file's description ("" entries never).
std::string describe_checkpoint(const CheckpointManifest& manifest,
                                std::vector<std::string>& problems);

// The committed checkpoints under `root`, oldest first, one line each (not verified).
std::string describe_checkpoint_root(const std::string& root);

// read_manifest + verify_checkpoint: CorruptData naming the directory and the first bad file.
CheckpointManifest open_verified_checkpoint(const std::string& dir);

// "full", "lora" or "qlora"; CorruptData when the manifest holds none of them.
std::string checkpoint_mode(const CheckpointManifest& manifest);

// The manifest's config value of `key` (its YAML text), if it records one.
std::optional<std::string> checkpoint_config_value(const CheckpointManifest& manifest,
                                                   const std::string& key);

// The base model directory an export of `manifest` builds on: `model` when given, else the base
// model the checkpoint trained. UserError when that directory is missing or its weights are not
// the ones the checkpoint trained (another model fingerprint), suggesting --model.
std::string checkpoint_base_model(const CheckpointManifest& manifest, const std::string& model);

// Copies the checkpoint's adapter/ files (LoRA, QLoRA) into `out_dir`: a PEFT adapter directory.
// UserError for a full-training checkpoint (it holds no adapter).
void export_checkpoint_adapter(const CheckpointManifest& manifest, const std::string& out_dir);

// The model a full-training checkpoint holds, as a Hugging Face directory in `out_dir`: every
// tensor of the base model's architecture from the fp32 masters of the trainable flat parameters
// (each shard's run of the tensor, padding dropped), from a saved frozen shard, or (frozen and not
// saved, hence never changed) from the base model; cast to `dtype`; with the base model's
// config.json (torch_dtype set) and tokenizer files. One tensor is held at a time; the rank files
// are mapped. UserError for a LoRA checkpoint, CorruptData when the manifest's layouts disagree
// with the rank files or with the base model's architecture.
void export_full_checkpoint(const CheckpointManifest& manifest, const std::string& base_model,
                            const std::string& out_dir, c10::ScalarType dtype,
                            uint64_t max_shard_bytes);

}  // namespace ptrain
