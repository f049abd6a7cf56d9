// ptrain-bench SUITE [--json]: benchmarks that print one JSON object per result line
// (ARCHITECTURE.md, "Benchmark output"). JSON lines are the only output, so --json (accepted
// before or after SUITE) changes nothing; scripts pass it as documented. Suites exist here once
// they are real.
#include <CLI/CLI.hpp>

#include "bench/ckpt_bench.h"
#include "bench/comm_bench.h"
#include "bench/coordinator_bench.h"
#include "bench/data_bench.h"
#include "bench/model_bench.h"
#include "bench/nf4_bench.h"
#include "bench/recovery_bench.h"
#include "bench/train_bench.h"
#include "core/error.h"
#include "launcher/rank_session.h"
#include "parallel/mpi_runtime.h"

int main(int argc, char** argv) {
  CLI::App app{"ptrain-bench: benchmarks with a baseline measured in the same run"};
  app.require_subcommand(1);
  bool json = true;
  const std::string json_help = "One JSON object per result line (the only output format)";
  app.add_flag("--json", json, json_help);
  auto add_suite = [&](const std::string& name, const std::string& description) {
    CLI::App* suite = app.add_subcommand(name, description);
    suite->add_flag("--json", json, json_help);
    return suite;
  };

  ptrain::bench::CommBenchOptions comm_options;
  auto* comm = add_suite("comm", "all_gather / reduce_scatter / all_reduce vs raw MPI");
  comm->add_option("--min-bytes", comm_options.min_bytes, "Smallest size (bytes)");
  comm->add_option("--max-bytes", comm_options.max_bytes, "Largest size (bytes)");
  comm->add_option("--seconds", comm_options.seconds_per_point, "Timed work per measurement round");
  ptrain::bench::ModelBenchOptions model_options;
  auto* model = add_suite("model", "Llama forward+backward throughput vs bf16 GEMM peak");
  model->add_option("--presets", model_options.presets, "Presets to run (tiny 160m 1b)");
  model->add_option("--seqs", model_options.seqs, "Sequence lengths");
  model->add_option("--tokens", model_options.tokens_per_step, "Tokens per step (rows of seq)");
  model->add_option("--steps", model_options.steps, "Timed steps");
  model->add_option("--threads", model_options.threads, "Compute threads (0: every core)");
  ptrain::bench::Nf4BenchOptions nf4_options;
  auto* nf4 = add_suite("nf4", "NF4 quantize/dequantize vs memcpy; QLoRA vs LoRA step");
  nf4->add_option("--rows", nf4_options.rows, "Weight rows");
  nf4->add_option("--cols", nf4_options.cols, "Weight columns");
  nf4->add_option("--preset", nf4_options.preset, "Model for the training step (tiny 160m 1b)");
  nf4->add_option("--seq", nf4_options.seq, "Tokens in the training step");
  nf4->add_option("--steps", nf4_options.steps, "Timed steps");
  nf4->add_flag("!--no-step", nf4_options.step, "Kernels only (skip the training step)");
  ptrain::bench::DataBenchOptions data_options;
  auto* data = add_suite(
      "data", "Tokenizer MB/s vs memcpy; packing efficiency and time; prepared-dataset build");
  data->add_option("--tokenizer", data_options.tokenizers,
                   "Model directory whose tokenizer to time (repeatable; byte always runs)");
  data->add_option("--text", data_options.texts, "Text files making up the corpus (repeatable)");
  data->add_option("--corpus-bytes", data_options.corpus_bytes, "Corpus size to tokenize");
  data->add_option("--samples", data_options.samples, "Samples to pack");
  data->add_option("--sequence-len", data_options.sequence_len, "Row length for packing");
  data->add_option("--prepare-rows", data_options.prepare_rows, "Rows in the prepare build");
  data->add_option("--threads", data_options.threads, "Threads (0: every core)");
  ptrain::bench::TrainBenchOptions train_options;
  auto* train = add_suite("train",
                          "ptrain train under mpirun at 1, 2, 4 ranks: tokens/s, MFU, exposed "
                          "communication, peak RSS vs the ideal; run it without mpirun");
  train->add_option("--cases", train_options.cases, "mode:preset pairs (qlora:1b full:160m)");
  train->add_option("--worlds", train_options.worlds, "Rank counts (1 2 4)");
  train->add_option("--seq", train_options.seq, "Sequence length");
  train->add_option("--micro-batch-size", train_options.micro_batch_size, "Rows per rank per step");
  train->add_option("--warmup-steps", train_options.warmup_steps, "Untimed steps first");
  train->add_option("--steps", train_options.steps, "Timed steps");
  train->add_option("--work-dir", train_options.work_dir,
                    "Models, data and runs (default: a new directory under $TMPDIR, removed)");
  train->add_flag("--keep", train_options.keep, "Keep the default work directory");
  train->add_option("--mpirun", train_options.mpirun, "The MPI launcher");
  ptrain::bench::CkptBenchOptions ckpt_options;
  auto* ckpt = add_suite("ckpt",
                         "Sharded checkpoint save/load GB/s vs plain write/read of the same bytes, "
                         "training stall (sync, async), extra RSS; under mpirun");
  ckpt->add_option("--preset", ckpt_options.preset, "Model preset (tiny 160m 1b)");
  ckpt->add_option("--work-dir", ckpt_options.work_dir,
                   "Checkpoints and baseline files (default: a new directory under $TMPDIR, "
                   "removed)");
  ckpt->add_option("--repeats", ckpt_options.repeats,
                   "Saves and loads (each with its baseline) to keep the best of");
  ckpt->add_flag("!--no-async", ckpt_options.async, "Skip the asynchronous save");
  ckpt->add_option("--threads", ckpt_options.threads,
                   "Threads per rank (0: the cores over the ranks)");
  ptrain::bench::CoordinatorBenchOptions coordinator_options;
  auto* coordinator = add_suite("coordinator",
                                "Simulated ranks heartbeating at 1 Hz and dashboards polling "
                                "ptrain-coordinator pinned to one core: p50/p99 latency and its "
                                "CPU fraction, vs an empty unary RPC");
  coordinator->add_option("--ranks", coordinator_options.ranks,
                          "Simulated rank counts (1024 4096 16384)");
  coordinator->add_option("--pollers", coordinator_options.pollers, "Dashboards polling status");
  coordinator->add_option("--interval", coordinator_options.interval_s,
                          "Seconds between one rank's heartbeats (and one dashboard's polls)");
  coordinator->add_option("--seconds", coordinator_options.seconds, "Measured window per phase");
  coordinator->add_option("--warmup", coordinator_options.warmup_s,
                          "Untimed seconds before each window");
  coordinator->add_option("--coordinator-cpu", coordinator_options.coordinator_cpu,
                          "The core ptrain-coordinator is pinned to (-1: not pinned)");
  coordinator->add_option("--threads", coordinator_options.threads,
                          "Completion-queue threads of the simulator");
  coordinator->add_option("--work-dir", coordinator_options.work_dir,
                          "Coordinator state (default: a new directory under $TMPDIR, removed)");
  ptrain::bench::RecoveryBenchOptions recovery_options;
  auto* recovery = add_suite("recovery",
                             "A rank SIGKILLed under ptrain-launch: the time from its death to the "
                             "restarted job's next completed step, in parts, vs the same job's "
                             "cold start; run it without mpirun");
  recovery->add_option("--cases", recovery_options.cases, "mode:preset pairs (lora:tiny qlora:1b)");
  recovery->add_option("--ranks", recovery_options.ranks, "Ranks of the job");
  recovery->add_option("--seq", recovery_options.seq, "The job's sequence_len");
  recovery->add_option("--backoff", recovery_options.backoff_s, "ptrain-launch --backoff (s)");
  recovery->add_option("--repeats", recovery_options.repeats,
                       "Baseline and recovery runs per case (0: 3 for tiny, 1 otherwise)");
  recovery->add_option("--kill-rank", recovery_options.kill_rank, "The rank that is killed");
  recovery->add_option("--run-timeout", recovery_options.run_timeout_s,
                       "Seconds one supervised run may take before the suite fails");
  recovery->add_option("--work-dir", recovery_options.work_dir,
                       "Models, data and runs (default: a new directory under $TMPDIR, removed)");
  recovery->add_flag("--keep", recovery_options.keep, "Keep the default work directory");
  recovery->add_option("--repo", recovery_options.repo,
                       "The source tree, for examples/make_tiny_data.py (default: found above "
                       "the binary)");
  recovery->add_option("--mpirun", recovery_options.mpirun, "The MPI launcher");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(ptrain::ExitCode::kBadInput);
  }
  return ptrain::run_guarded([&]() -> int {
    if (*model) return ptrain::bench::run_model_bench(model_options);
    if (*nf4) return ptrain::bench::run_nf4_bench(nf4_options);
    if (*data) return ptrain::bench::run_data_bench(data_options);
    if (*train) return ptrain::bench::run_train_bench(train_options);
    if (*coordinator) return ptrain::bench::run_coordinator_bench(coordinator_options);
    if (*recovery) return ptrain::bench::run_recovery_bench(recovery_options);
    ptrain::MpiRuntime mpi(&argc, &argv);
    if (*comm) return ptrain::bench::run_comm_bench(comm_options);
    if (*ckpt) return ptrain::bench::run_ckpt_bench(ckpt_options);
    return 0;
  });
}
