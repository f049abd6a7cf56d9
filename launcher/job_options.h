// The edge between a job config and the libraries: each library takes only its own option
// struct, and these functions are the one place that reads JobConfig keys into them.
#pragma once

#include <optional>

#include "core/config.h"
#include "data/prepared_data.h"
#include "model/llama.h"
#include "peft/lora.h"

namespace ptrain {

// The model a job config asks for on `rank`: compute dtype (bf16, else fp32), NF4 projections
// (load_in_4bit), activation checkpointing (gradient_checkpointing), and the seed of the model's
// own generator, derived from the job seed and the rank (rank_seed).
ModelOptions model_options_from_config(const JobConfig& config, int rank);

// A per-rank seed from the job seed: splitmix64 of (seed, rank), so ranks draw independent streams
// and the same (seed, rank) always draws the same one.
uint64_t rank_seed(int64_t seed, int rank);

// The LoRA adapter a job config asks for (adapter: lora | qlora), or none for full training:
// lora_r, lora_alpha, lora_dropout, peft_use_rslora, lora_target_linear, lora_target_modules,
// lora_modules_to_save, and the job seed for the initialisation.
std::optional<AdapterSpec> adapter_spec_from_config(const JobConfig& config);

// The datasets and their preparation: datasets[], train_on_inputs, chat_template,
// sequence_len, sample_packing(_group_size), excess_length_strategy, skip_invalid_rows,
// val_set_size, seed.
DataPrepOptions data_prep_options(const JobConfig& job);

}  // namespace ptrain
