// The edge between a job config and the libraries: each library takes only its own option
// struct, and these functions are the one place that reads JobConfig keys into them.
#pragma once

#include <optional>

#include "core/config.h"
#include "core/rank_context.h"
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

// Where a training rank computes and which backend moves its sharded tensors (docs/gpu.md).
struct Placement {
  at::Device device = at::kCPU;
  std::string backend = "mpi";  // of the sharded tensors; host collectives are always MPI's
};

// device auto is the GPU when every rank can use one (libtorch with CUDA, a visible device, the
// NCCL backend built, no more ranks on its host than devices), else the CPU; one answer agreed
// over ctx.comm (collective), so ranks never mix backends. device cuda where any rank cannot is
// a UserError naming the key and the reason, never a silent CPU run. The rank's GPU is
// local_rank % visible devices, as the NCCL communicator picks it. comm.backend must fit the
// device (nccl for cuda, mpi for cpu).
Placement training_placement(const ResolvedConfig& config, RankContext& ctx);

// The datasets and their preparation: datasets[], train_on_inputs, chat_template,
// sequence_len, sample_packing(_group_size), excess_length_strategy, skip_invalid_rows,
// val_set_size, seed.
DataPrepOptions data_prep_options(const JobConfig& job);

}  // namespace ptrain
