#pragma once

#include <cstdint>
#include <string>

namespace ptrain::bench {

struct CkptBenchOptions {
  std::string preset = "1b";  // model/llama_config.h llama_preset()
  std::string work_dir;       // checkpoints, data, baseline files; empty: a new dir under $TMPDIR
  bool async = true;          // also the async save, when its staged copy fits in memory
  int repeats = 3;            // save, load and their baselines, alternated; each keeps its best
  int threads = 0;            // compute threads per rank; 0: the cores over the ranks
};

// ptrain-bench ckpt, under mpirun (every rank on one host): the full training state of `preset`
// (bf16 model, fp32 masters, AdamW moments, sampler, generator) sharded over the world, saved and
// loaded through trainer/checkpointer.h, each beside a plain baseline of the same bytes in the
// same run: save against write() + fsync of the same memory into one file per rank, load (cold:
// the files' page cache dropped) against read() of the same files. Also the training stall of a
// synchronous and an asynchronous save, and the peak RSS a save adds on a rank.
int run_ckpt_bench(const CkptBenchOptions& options);

}  // namespace ptrain::bench
