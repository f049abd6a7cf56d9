#include "bench/comm_bench.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/bench_common.h"
#include "parallel/communicator_factory.h"
#include "parallel/mpi_runtime.h"

namespace ptrain::bench {
namespace {

// Seconds per call of `body`, the slowest rank's view: `iterations` calls between barriers.
double time_per_call(int iterations, const std::function<void()>& body) {
  PTRAIN_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) body();
  double local = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double slowest = 0;
  PTRAIN_MPI_CHECK(MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return slowest / iterations;
}

// Iterations that take about `seconds`, agreed by all ranks (from one timed call).
int iterations_for(double seconds, const std::function<void()>& body) {
  double one = time_per_call(1, body);
  int iterations = static_cast<int>(std::clamp(seconds / std::max(one, 1e-7), 3.0, 2000.0));
  PTRAIN_MPI_CHECK(MPI_Bcast(&iterations, 1, MPI_INT, 0, MPI_COMM_WORLD));
  return iterations;
}

struct Case {
  const char* op;
  double bus_factor;  // nccl-tests: busbw = algbw * factor
};

}  // namespace

int run_comm_bench(const CommBenchOptions& options) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  auto watchdog = make_job_watchdog(600.0, rank, world, host_name(), nullptr);
  auto comm = make_world_communicator("mpi", 0, watchdog);
  const nlohmann::json machine = machine_json();
  const double n = world;
  const std::vector<Case> cases = {{"all_gather", (n - 1) / n},
                                   {"reduce_scatter", (n - 1) / n},
                                   {"all_reduce", 2 * (n - 1) / n}};

  for (c10::ScalarType dtype : {c10::ScalarType::Float, c10::ScalarType::BFloat16}) {
    const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
    // Raw MPI of the same size and element width: 16-bit data is reduced as MPI_SHORT, the
    // closest arithmetic MPI has (MPI has no bf16).
    const MPI_Datatype raw_type = dtype == c10::ScalarType::Float ? MPI_FLOAT : MPI_SHORT;
    for (const Case& c : cases) {
      for (int64_t target = options.min_bytes; target <= options.max_bytes; target *= 4) {
        // bytes follow nccl-tests: all_gather output, reduce_scatter input, all_reduce buffer.
        const int64_t total = std::max<int64_t>(world, target / elem / world * world);
        const int64_t chunk = total / world;
        std::vector<uint8_t> big(static_cast<size_t>(total * elem), 1), small(chunk * elem, 1);
        CommBuffer big_buf{big.data(), total, dtype, DeviceType::kCpu};
        CommBuffer small_buf{small.data(), chunk, dtype, DeviceType::kCpu};
        std::function<void()> ours, raw;
        const std::string op = c.op;
        if (op == "all_gather") {
          ours = [&] { comm->all_gather(big_buf, small_buf); };
          raw = [&] {
            PTRAIN_MPI_CHECK(MPI_Allgather(small.data(), static_cast<int>(chunk), raw_type,
                                           big.data(), static_cast<int>(chunk), raw_type,
                                           MPI_COMM_WORLD));
          };
        } else if (op == "reduce_scatter") {
          ours = [&] { comm->reduce_scatter(small_buf, big_buf, ReduceOp::kSum); };
          raw = [&] {
            PTRAIN_MPI_CHECK(MPI_Reduce_scatter_block(big.data(), small.data(),
                                                      static_cast<int>(chunk), raw_type, MPI_SUM,
                                                      MPI_COMM_WORLD));
          };
        } else {
          ours = [&] { comm->all_reduce(big_buf, ReduceOp::kSum); };
          raw = [&] {
            PTRAIN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, big.data(), static_cast<int>(total),
                                           raw_type, MPI_SUM, MPI_COMM_WORLD));
          };
        }
        // Warm both paths, then alternate rounds so drift hits both alike; keep each one's best.
        const int iterations = iterations_for(options.seconds_per_point / 2, ours);
        iterations_for(options.seconds_per_point / 2, raw);
        double ours_s = 1e30, raw_s = 1e30;
        for (int round = 0; round < 3; ++round) {
          ours_s = std::min(ours_s, time_per_call(iterations, ours));
          raw_s = std::min(raw_s, time_per_call(iterations, raw));
        }
        if (rank != 0) continue;
        const double bytes = static_cast<double>(total * elem);
        nlohmann::json line = {
            {"suite", "comm"},
            {"machine", machine},
            {"op", c.op},
            {"dtype", dtype == c10::ScalarType::Float ? "fp32" : "bf16"},
            {"bytes", total * elem},
            {"world", world},
            {"backend", comm->backend_name()},
            {"time_us", ours_s * 1e6},
            {"algbw", bytes / ours_s / 1e9},
            {"busbw", bytes / ours_s / 1e9 * c.bus_factor},
            {"baseline", fmt::format("raw MPI {} ({})", c.op,
                                     dtype == c10::ScalarType::Float ? "MPI_FLOAT" : "MPI_SHORT")},
            {"baseline_time_us", raw_s * 1e6},
            {"baseline_busbw", bytes / raw_s / 1e9 * c.bus_factor},
            {"vs_baseline", raw_s / ours_s},
        };
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace ptrain::bench
