#pragma once

#include <string>
#include <vector>

namespace ptrain::bench {

struct RecoveryBenchOptions {
  // "mode:preset" pairs: LoRA on the tiny preset (issue 15's 10 s target) and QLoRA on 1b.
  std::vector<std::string> cases = {"lora:tiny", "qlora:1b"};
  int ranks = 2;
  int64_t seq = 256;           // sequence_len of the job (the alpaca rows of make_tiny_data.py fit)
  double backoff_s = 0.5;      // ptrain-launch --backoff of the recovery run
  int repeats = 0;             // baseline and recovery runs per case; 0: 3 for tiny, 1 otherwise
  int kill_rank = 1;           // the rank whose process is killed
  double run_timeout_s = 900;  // one ptrain-launch run, before it is stopped and the suite fails
  std::string work_dir;  // models, data and runs; empty: a new directory under $TMPDIR, removed
  bool keep = false;     // keep the default work directory
  std::string repo;  // the source tree (examples/make_tiny_data.py); empty: found above the binary
  std::string mpirun = "mpirun";
};

// ptrain-bench recovery: issue 15's time from a rank's death to the restarted job's next completed
// step, in parts, beside the cold start of the same job. For each case it writes a model
// (`ptrain init-model`, the byte tokenizer), the alpaca rows of examples/make_tiny_data.py and a
// job with save_steps, prepares the data once, then per repeat:
//  - baseline: `ptrain-launch -- mpirun -np R ptrain train` of the job (max_steps 1); the time from
//    the supervisor's start of the command to the first completed step;
//  - recovery: the same under `ptrain-launch --backoff B`; once a checkpoint has committed and
//    steps ran past it, rank `kill_rank` (found by its OMPI_COMM_WORLD_RANK and output_dir) gets
//    SIGKILL at a time this process records; after the job finished, the time from the kill to the
//    restarted launch's first completed step, split at the supervisor's detection, teardown and
//    restart (its --summary-json) and the coordinator's attempt record (every rank registered,
//    checkpoint load, first step).
// Both runs use a coordinator served in this process (so their attempts can be read after the
// job), with ptrain-launch and ptrain the binaries beside ptrain-bench. One line per case: the
// repeat with the median time, and every repeat's total.
int run_recovery_bench(const RecoveryBenchOptions& options);

}  // namespace ptrain::bench
