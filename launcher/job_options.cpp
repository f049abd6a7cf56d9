#include "launcher/job_options.h"

#include <torch/cuda.h>

#include "core/error.h"
#include "data/sampler.h"
#include "parallel/nccl_backend.h"

namespace ptrain {

uint64_t rank_seed(int64_t seed, int rank) {
  return splitmix64_output(static_cast<uint64_t>(seed), static_cast<uint64_t>(rank));
}

ModelOptions model_options_from_config(const JobConfig& config, int rank) {
  ModelOptions options;
  options.rng_seed = rank_seed(config.seed, rank);
  options.dtype = config.bf16 ? at::kBFloat16 : at::kFloat;
  options.nf4_base = config.load_in_4bit;
  options.activation_checkpointing = config.gradient_checkpointing;
  return options;
}

std::optional<AdapterSpec> adapter_spec_from_config(const JobConfig& config) {
  if (config.adapter.empty()) return std::nullopt;
  AdapterSpec spec;
  spec.lora.r = config.lora_r;
  spec.lora.alpha = config.lora_alpha;
  spec.lora.dropout = config.lora_dropout;
  spec.lora.rslora = config.peft_use_rslora;
  spec.target_linear = config.lora_target_linear;
  spec.target_modules = config.lora_target_modules;
  spec.modules_to_save = config.lora_modules_to_save;
  spec.seed = static_cast<uint64_t>(config.seed);
  return spec;
}

DataPrepOptions data_prep_options(const JobConfig& job) {
  DataPrepOptions options;
  for (const DatasetConfig& d : job.datasets) {
    DataSource source;
    source.path = d.path;
    source.type = d.type;
    if (d.type == "chat_template") {
      source.field = d.field_messages;
      source.role_field = d.message_field_role;
      source.content_field = d.message_field_content;
    }
    if (d.type == "completion") source.field = d.field;
    source.weight = d.weight;
    source.dtype = d.dtype;
    options.sources.push_back(source);
  }
  options.render.train_on_inputs = job.train_on_inputs;
  options.render.chat_template = job.chat_template;
  options.sequence_len = job.sequence_len;
  options.sample_packing = job.sample_packing;
  options.packing_group_size = job.sample_packing_group_size;
  options.length_policy = parse_length_policy(job.excess_length_strategy);
  options.skip_invalid_rows = job.skip_invalid_rows;
  options.val_set_size = job.val_set_size;
  options.seed = static_cast<uint64_t>(job.seed);
  return options;
}

Placement training_placement(const ResolvedConfig& config, RankContext& ctx) {
  const JobConfig& job = config.job;
  const int devices =
      torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  std::string why_not;  // why this rank cannot train on a GPU
  if (devices == 0) {
    why_not = fmt::format(
        "rank {} sees no GPU (this ptrain's libtorch has no CUDA, or no device "
        "is visible)",
        ctx.rank);
  } else if (!nccl_backend_built()) {
    why_not = "this ptrain was built without NCCL (nccl.h not found)";
  } else if (ctx.local_world > devices) {
    why_not = fmt::format("host {} runs {} ranks on {} GPUs (one rank per GPU)", ctx.host,
                          ctx.local_world, devices);
  }
  int missing = why_not.empty() ? 0 : 1;  // on any rank
  ctx.comm->all_reduce(comm_buffer(&missing, 1), ReduceOp::kMax);
  Placement p;
  if (job.device == "cuda" || (job.device == "auto" && missing == 0)) {
    PTRAIN_CHECK(missing == 0, "{}: 'device: cuda', but {}; see docs/gpu.md, or set 'device: cpu'",
                 config.source, why_not.empty() ? "another rank cannot use a GPU" : why_not);
    p.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(ctx.local_rank % devices));
  }
  p.backend = job.comm.backend != "auto" ? job.comm.backend : p.device.is_cuda() ? "nccl" : "mpi";
  PTRAIN_CHECK((p.backend == "nccl") == p.device.is_cuda(),
               "{}: 'comm.backend: {}' cannot move the sharded tensors of a job on {} ({} moves "
               "{} buffers); use 'comm.backend: auto'",
               config.source, p.backend, p.device.str(), p.backend,
               p.backend == "nccl" ? "GPU" : "host");
  return p;
}

}  // namespace ptrain
