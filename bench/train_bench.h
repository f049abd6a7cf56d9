#pragma once

#include <string>
#include <vector>

namespace ptrain::bench {

struct TrainBenchOptions {
  // "mode:preset" pairs: (a) QLoRA on the 1b preset, (b) full training of the 160m preset.
  std::vector<std::string> cases = {"qlora:1b", "full:160m"};
  std::vector<int> worlds = {1, 2, 4};
  int64_t seq = 512;
  int64_t micro_batch_size = 1;  // rows per rank per step
  int warmup_steps = 1;          // steps not timed (first gathers, allocator warm-up)
  int steps = 3;                 // timed steps
  std::string work_dir;          // models, data and runs; empty: a new directory under $TMPDIR
  bool keep = false;             // keep work_dir afterwards
  std::string mpirun = "mpirun";
};

// ptrain-bench train: the real `ptrain train` job (FSDP, optimizer, data pipeline) launched with
// `mpirun -np W` for each case and world size, its figures read from the run's metrics.jsonl
// (tokens/s, MFU, exposed communication, peak RSS per rank and the pre-flight's ideal), beside
// two baselines from the same run: the bare forward+backward of the same model and rows in this
// process (vs_baseline) and the 1-rank run on the same cores (scaling).
int run_train_bench(const TrainBenchOptions& options);

}  // namespace ptrain::bench
