#include "launcher/train_command.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "checkpoint/sharded_checkpoint.h"
#include "core/error.h"
#include "core/file_util.h"
#include "launcher/coordinator_link.h"
#include "launcher/data_preparation.h"
#include "launcher/job_options.h"
#include "launcher/model_loader.h"
#include "launcher/model_tools.h"
#include "launcher/rank_session.h"
#include "launcher/resume_check.h"
#include "launcher/stop_signals.h"
#include "model/llama_weights.h"
#include "parallel/communicator.h"
#include "parallel/fsdp_groups.h"
#include "peft/lora.h"
#include "trainer/checkpointer.h"
#include "trainer/hardware.h"
#include "trainer/metrics_log.h"
#include "trainer/train_loop.h"
#include "trainer/training_curves.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

// What only training needs of a config (validate-config checks the rest for every command).
void check_training_config(const ResolvedConfig& config) {
  const JobConfig& job = config.job;
  PTRAIN_CHECK(!job.base_model.empty(),
               "{}: 'base_model' is required for training (a Hugging Face model directory)",
               config.source);
  PTRAIN_CHECK(!job.datasets.empty(), "{}: 'datasets' is required for training", config.source);
  PTRAIN_CHECK(!job.load_in_4bit || job.adapter == "qlora",
               "{}: 'load_in_4bit: true' trains only with 'adapter: qlora' (a 4-bit base cannot "
               "be trained in full, and plain LoRA keeps a bf16 base)",
               config.source);
  PTRAIN_CHECK(job.adapter != "qlora" || job.load_in_4bit,
               "{}: 'adapter: qlora' needs 'load_in_4bit: true'", config.source);
}

int shard_group_size(const JobConfig& job, int world) {
  if (job.fsdp.sharding == "none") return 1;
  return job.fsdp.hybrid_shard_size > 0 ? static_cast<int>(job.fsdp.hybrid_shard_size) : world;
}

// Bytes one rank needs while training (the benchmark's "ideal"): the runtime before the model
// loads, what it holds (shards, masters, gradient shards, optimizer moments), the unsharded units
// in flight (the root, which stays gathered from its forward to its backward, and two layers: the
// running one and the prefetched one, at the largest layer's size; every layer when layers stay
// gathered until backward: without recompute, or ZeRO-2) and one micro-batch's activations.
struct MemoryPlan {
  int64_t runtime = 0, sharded = 0, optimizer = 0, gathered = 0, activations = 0;
  int64_t total() const { return runtime + sharded + optimizer + gathered + activations; }
};

MemoryPlan plan_memory(const JobConfig& job, const LlamaConfig& model, ShardedModel& sharded,
                       int64_t runtime_bytes) {
  MemoryPlan plan;
  plan.runtime = runtime_bytes;
  plan.sharded = sharded.sharded_bytes();
  for (FlatParameter* flat : sharded.trainable()) plan.optimizer += 2 * flat->master.nbytes();
  // checkpoint.async writes host tensors in place; device tensors are staged in host memory,
  // which this host-memory plan does not cover (it is not checked on a GPU: docs/gpu.md).
  int64_t largest_layer = 0, all_layers = 0;
  for (int u = 1; u < sharded.unit_count(); ++u) {
    largest_layer = std::max(largest_layer, sharded.unit_bytes(u));
    all_layers += sharded.unit_bytes(u);
  }
  const bool layers_released =
      job.gradient_checkpointing && job.fsdp.sharding == "full" && job.fsdp.reshard_after_forward;
  plan.gathered = sharded.unit_bytes(0) +
                  (layers_released ? std::min(all_layers, 2 * largest_layer) : all_layers);
  const int64_t bytes = job.bf16 ? 2 : 4;
  const int64_t tokens = job.micro_batch_size * job.sequence_len;
  // One layer's saved activations (norm outputs, q/k/v/o, residuals, the MLP's gate/up/product):
  // about 8 hidden-sized and 4 intermediate-sized tensors per token.
  const int64_t layer = tokens * (8 * model.hidden_size + 4 * model.intermediate_size) * bytes;
  plan.activations = job.gradient_checkpointing
                         ? model.num_hidden_layers * tokens * model.hidden_size * bytes + layer
                         : model.num_hidden_layers * layer;
  plan.activations += int64_t{128} << 20;  // the chunked loss's logits, forward and backward
  return plan;
}

std::string gigabytes(int64_t bytes) {
  return fmt::format("{:.2f} GB", static_cast<double>(bytes) / 1e9);
}

void check_memory(const JobConfig& job, const MemoryPlan& plan, const RankContext& ctx) {
  const int64_t available =
      available_memory_bytes() / std::max(1, ctx.local_world) + current_rss_bytes();
  const std::string text = fmt::format(
      "memory per rank: {} expected (runtime {}, shards {}, optimizer {}, gathered units {}, "
      "activations {}), {} available",
      gigabytes(plan.total()), gigabytes(plan.runtime), gigabytes(plan.sharded),
      gigabytes(plan.optimizer), gigabytes(plan.gathered), gigabytes(plan.activations),
      gigabytes(available));
  ctx.log->info("{}", text);
  PTRAIN_CHECK(available <= 0 || plan.total() <= available,
               "{}: this job will not fit; lower micro_batch_size ({}) or sequence_len ({}), set "
               "gradient_checkpointing: true, or run on more ranks",
               text, job.micro_batch_size, job.sequence_len);
}

// A checkpoint named explicitly must be the newest committed one in this run's checkpoints:
// this run's saves would meet the newer ones. Checked before anything is loaded.
void refuse_older_checkpoint(const std::string& resume, const std::string& root) {
  if (resume == "latest") return;
  int64_t step = -1;
  try {
    step = read_manifest(resume).step;
  } catch (const Error&) {
    return;  // resume_training names what is wrong with it
  }
  const std::vector<CommittedCheckpoint> all = committed_checkpoints(root);
  PTRAIN_CHECK(all.empty() || all.front().step <= step,
               "resume_from_checkpoint '{}' is step {}, but {} holds newer checkpoints (the newest "
               "is {}) that this run's saves would meet: resume from the newest ('latest'), or "
               "set another 'output_dir'",
               resume, step, root, all.front().dir);
}

// What this run resumes from: the config's resume_from_checkpoint, except that a restart by
// ptrain-launch (PTRAIN_RESTART > 0) continues from the newest committed checkpoint once the job
// has one (docs/launch.md).
// Rank 0 decides for all: ranks on other hosts may list a shared file system a moment apart.
std::string resume_spec(const JobConfig& job, const std::string& root, const RankContext& ctx) {
  const char* restart = std::getenv("PTRAIN_RESTART");
  std::string spec = job.resume_from_checkpoint;
  if (ctx.rank == 0 && restart != nullptr && std::atoi(restart) > 0 && spec != "latest" &&
      !committed_checkpoints(root).empty()) {
    ctx.log->info("restart {} by ptrain-launch: resuming from the newest committed checkpoint",
                  restart);
    spec = "latest";
  }
  return broadcast_string(*ctx.comm, spec, 0);
}

// Under `latest`, committed checkpoints newer than the one resumed from are those that failed
// their checks: set aside (step-S.rejected, kept to look at, never loaded) before this run's saves
// reach their steps.
void set_aside_rejected(const std::string& root, int64_t step, const RankContext& ctx) {
  std::vector<CommittedCheckpoint> newer;
  for (const CommittedCheckpoint& c : committed_checkpoints(root))
    if (c.step > step) newer.push_back(c);
  if (newer.empty()) return;
  ctx.comm->barrier();  // every rank has listed them before any is renamed
  if (ctx.rank == 0)
    for (const CommittedCheckpoint& c : newer)
      ctx.log->warn("set {} aside as {}: it failed its checks", c.dir, set_aside(c.dir));
  ctx.comm->barrier();
}

int train(RankSession& session, const ResolvedConfig& config, CoordinatorLink& coordinator) {
  RankContext& ctx = session.context();
  const JobConfig& job = config.job;
  // From here a stop signal only sets a flag (a preemption while the model loads included): the
  // loop stops after its first step, with a checkpoint.
  StopSignals signals(*ctx.comm);
  const Placement placement = training_placement(config, ctx);
  const std::string checkpoint_root = (fs::path(job.output_dir) / "checkpoints").string();
  const std::string resume = resume_spec(job, checkpoint_root, ctx);
  if (resume.empty()) {
    // A new run never mixes its checkpoints with an earlier run's (nor removes them).
    const std::vector<CommittedCheckpoint> earlier = committed_checkpoints(checkpoint_root);
    PTRAIN_CHECK(earlier.empty(),
                 "{} holds committed checkpoints of an earlier run (the newest is {}): set "
                 "'resume_from_checkpoint: latest' to continue it, or another 'output_dir'",
                 checkpoint_root, earlier.empty() ? "" : earlier.front().dir);
  }
  ctx.log->info("training on {} (sharded tensors over {})", placement.device.str(),
                placement.backend);

  // Data: rank 0 builds (or reuses) the prepared cache; every rank maps it.
  PreparedData prepared = prepare_data(job, ctx, session.threads());
  const PreparedDataset& data = *prepared.dataset;
  PTRAIN_CHECK(data.train_rows() > 0, "{}: the datasets left no training rows", config.source);
  TrainBatches batches(data, job.micro_batch_size, ctx.rank, ctx.world,
                       static_cast<uint64_t>(job.seed), job.pad_to_sequence_len);

  // Model: the structure with deferred weights (NF4 projections for qlora), the adapter or full
  // training; then loaded, sharded and released unit by unit, so no rank holds it all.
  const int64_t runtime_bytes = current_rss_bytes();
  ModelLoadOptions load;
  load.dir = job.base_model;
  load.dtype = job.bf16 ? "bf16" : "fp32";
  load.load_in_4bit = job.load_in_4bit;
  LlamaForCausalLM model = deferred_model(load);
  model->set_activation_checkpointing(job.gradient_checkpointing);
  model->generator().set_current_seed(rank_seed(job.seed, ctx.rank));
  const std::optional<AdapterSpec> adapter = adapter_spec_from_config(job);
  if (adapter) {
    const auto targets = apply_lora(model, *adapter);
    ctx.log->info("LoRA r={} alpha={} on {} projections", adapter->lora.r, adapter->lora.alpha,
                  targets.size());
  }
  session.record_config();

  FsdpOptions fsdp;
  fsdp.device = placement.device;
  fsdp.reshard_after_forward = job.fsdp.sharding == "full" && job.fsdp.reshard_after_forward;
  fsdp.reduce_every_micro_batch = job.fsdp.reduce_every_micro_batch;
  fsdp.reduce_dtype = job.fsdp.reduce_dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  FsdpGroups groups = make_fsdp_groups(session.world_communicator(placement.backend),
                                       shard_group_size(job, ctx.world), "fsdp.hybrid_shard_size");
  ShardedModel sharded(model, std::move(groups), fsdp,
                       [&](int unit) { load_model_unit(model, load, unit); });
  const MemoryPlan memory = plan_memory(job, model->config(), sharded, runtime_bytes);
  // The pre-flight knows host memory; a GPU's is not checked here (docs/gpu.md).
  if (placement.device.is_cpu()) check_memory(job, memory, ctx);

  // Optimizer, schedule, loop.
  AdamWOptions adam;
  adam.beta1 = job.adam_beta1;
  adam.beta2 = job.adam_beta2;
  adam.eps = job.adam_epsilon;
  adam.weight_decay = job.weight_decay;
  AdamW optimizer(optimized_tensors(sharded), adam);
  LoopOptions loop_options;
  loop_options.num_epochs = job.num_epochs;
  loop_options.max_steps = job.max_steps;
  loop_options.gradient_accumulation_steps = job.gradient_accumulation_steps;
  loop_options.logging_steps = job.logging_steps;
  loop_options.eval_steps = job.eval_steps;
  loop_options.max_nonfinite_steps = job.max_nonfinite_steps;
  loop_options.sequence_len = job.sequence_len;
  loop_options.micro_batch_size = job.micro_batch_size;
  // Forward and backward: 3x the forward's FLOPs when weights take gradients, 2x with a frozen
  // base (activation gradients only; the adapters' own FLOPs are negligible).
  loop_options.flops_per_token =
      (adapter ? 2.0 : 3.0) * model->config().forward_flops_per_token(job.sequence_len);
  loop_options.gemm_peak_gflops = gemm_peak_gflops(placement.device, /*rounds=*/3, /*large=*/false);
  loop_options.device = placement.device;
  loop_options.ideal_bytes = memory.total();

  // Resume: every shard re-sliced from the checkpoint's layout, the optimizer, the sampler and
  // (at the same world) the generators; the step plan then counts from the restored position.
  nlohmann::json identity = checkpoint_identity(config);
  LoopCounters counters;
  TrainingState training{sharded, optimizer, batches, model->generator(), &counters};
  if (!resume.empty()) refuse_older_checkpoint(resume, checkpoint_root);
  int64_t first_step = 0;
  const auto resume_start = std::chrono::steady_clock::now();
  const std::optional<Resumed> resumed =
      resume.empty() ? std::nullopt
                     : resume_training(resume, checkpoint_root, training, *ctx.comm, *ctx.log,
                                       [&](const CheckpointManifest& manifest) {
                                         check_resume(manifest, identity, *ctx.log);
                                       });
  const double resume_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - resume_start).count();
  if (resumed) {
    first_step = resumed->info.step;
    set_aside_rejected(checkpoint_root, first_step, ctx);
    if (!resumed->info.same_layout)
      // Another world: no rank's stream continues; each rank starts a fresh one for this step.
      model->generator().set_current_seed(rank_seed(job.seed + first_step, ctx.rank));
    ctx.log->info("resumed from {} after step {} (saved by {} ranks, {} now{})",
                  resumed->manifest.dir, first_step, resumed->manifest.json.value("world", 0),
                  ctx.world,
                  resumed->info.same_layout ? "" : "; shards re-sliced, dropout streams reseeded");
  }
  const int64_t total = planned_steps(loop_options, batches, first_step);
  const int64_t warmup = warmup_steps_for(job.warmup_steps, job.warmup_ratio, total);
  const LrSchedule schedule(job.lr_scheduler, job.learning_rate, total, warmup);
  identity["schedule"] = {{"lr_scheduler", job.lr_scheduler},
                          {"learning_rate", job.learning_rate},
                          {"total_steps", total},
                          {"warmup_steps", warmup}};
  TrainStep step(model, sharded, optimizer, schedule, *ctx.comm, job.max_grad_norm);
  step.set_next_step(first_step);
  TrainLoop loop(model, sharded, step, batches, validation_samples(data), *ctx.comm, loop_options);
  loop.counters() = counters;
  training.loop = &loop.counters();
  if (resumed && loop.total_steps() <= first_step)
    ctx.log->warn(
        "the checkpoint is at step {} and this run plans {} steps: nothing to train "
        "(raise max_steps or num_epochs to continue)",
        first_step, loop.total_steps());
  MetricsLog metrics(
      (fs::path(job.output_dir) / "metrics.jsonl").string(), ctx.rank == 0, ctx.log,
      // A bar only on a terminal of a process started directly: launchers give
      // every rank a pty whatever their own output is (a pipe, a file).
      ctx.rank == 0 && session.info().launcher == "singleton" && isatty(STDOUT_FILENO));
  loop.add_observer(metrics);
  CheckpointerOptions checkpointing;
  checkpointing.root = checkpoint_root;
  checkpointing.save_steps = job.save_steps;
  checkpointing.saves_per_epoch = job.saves_per_epoch;
  checkpointing.keep_last = job.checkpoint.keep_last;
  checkpointing.save_frozen = job.checkpoint.save_frozen;
  checkpointing.async = job.checkpoint.async;
  checkpointing.identity = identity;
  if (adapter)
    checkpointing.write_adapter = [&](const std::string& dir) {
      save_peft_adapter(model, *adapter, job.base_model, dir);
    };
  checkpointing.on_rank_written = [&](int64_t step, uint64_t bytes, const std::string& xxh3,
                                      const std::string& error) {
    coordinator.on_rank_written(step, bytes, xxh3, error);
  };
  checkpointing.on_saved = [&](const SaveResult& result) { coordinator.on_saved(result); };
  Checkpointer checkpointer(training, *ctx.comm, checkpointing, ctx.log);
  coordinator.start_attempt(first_step, loop.total_steps(), resumed ? resume_seconds : 0.0);
  loop.add_observer(coordinator);  // before the checkpointer: see CoordinatorLink::start_attempt
  loop.add_observer(signals);
  loop.add_observer(checkpointer);
  step.set_before_update([&checkpointer] { checkpointer.before_update(); });
  const TrainEnd end = loop.run();

  // Outputs: the whole adapter (or model), gathered from every rank's shards.
  const std::string final_dir = (fs::path(job.output_dir) / "final").string();
  // The adapter needs only the trainable tensors; a full model every tensor.
  if (adapter) {
    sharded.gather_trainable();
  } else {
    sharded.gather_all();
  }
  if (ctx.rank == 0) {
    if (adapter) {
      save_peft_adapter(model, *adapter, job.base_model, final_dir);
    } else {
      save_llama_model(model, final_dir, job.bf16 ? at::kBFloat16 : at::kFloat);
      copy_model_companions(job.base_model, final_dir);
    }
    ctx.log->info("wrote {} ({} after {} steps)", final_dir, end.reason, end.steps);
    // The plot only reads the metrics: a finished run does not fail over it.
    try {
      ctx.log->info("wrote {}", write_training_curves(job.output_dir));
    } catch (const std::exception& e) {
      ctx.log->warn("training_curves.svg not written: {}", e.what());
    }
  }
  ctx.comm->barrier();
  const SaveResult& saved = checkpointer.last_result();
  if (end.steps > first_step && saved.step == end.steps && !saved.committed)
    throw RuntimeFailure(fmt::format("the checkpoint after the last step ({}) was not saved: {}",
                                     end.steps, saved.error));
  // A signal's stop: 4 asks the batch script to requeue the job (0 after Ctrl-C). A run that
  // finished anyway is done.
  const int code = end.reason == "stopped" && signals.stopped() ? signals.exit_code() : 0;
  if (end.reason == "stopped" && signals.stopped())
    ctx.log->info("stopped after step {} ({}): exit {}; the run resumes from {}", end.steps,
                  signals.reason(), code, saved.dir);
  coordinator.end_attempt(code == 4 ? "requeue" : end.reason, "", end.steps);
  return code;
}

int run_train(RankSession& session, const ResolvedConfig& config) {
  check_training_config(config);
  CoordinatorLink coordinator(config, session.context(), &session.watchdog());
  try {
    return train(session, config, coordinator);
  } catch (const std::exception& e) {
    coordinator.end_attempt("failed", e.what(), 0);
    throw;
  }
}

}  // namespace

void register_train_command(CommandLine& cli) {
  cli.add_job_command("train",
                      "Train (QLoRA, LoRA or full) with FSDP over every rank; ptrain --config "
                      "job.yaml alone means train",
                      ConfigArgument::kRequired, JobRecord::kLogsAndConfig, run_train);
  cli.set_default_command("train");
}

}  // namespace ptrain
