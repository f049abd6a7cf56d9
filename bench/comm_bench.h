#pragma once

#include <cstdint>

namespace ptrain::bench {

struct CommBenchOptions {
  int64_t min_bytes = 1 << 10;
  int64_t max_bytes = 256 << 20;
  double seconds_per_point = 0.2;  // timed work per measurement round and op
};

// ptrain-bench comm: all_gather, reduce_scatter and all_reduce of the world MpiCommunicator for
// fp32 and bf16 over sizes min..max (x4 steps), each beside the raw MPI collective of the same
// size measured in the same run. Rank 0 prints one JSON object per line. Collective.
int run_comm_bench(const CommBenchOptions& options);

}  // namespace ptrain::bench
