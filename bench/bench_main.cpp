// ptrain-bench SUITE: benchmarks that print one JSON object per result line (ARCHITECTURE.md,
// "Benchmark output"). Suites exist here once they are real.
#include <CLI/CLI.hpp>

#include "bench/comm_bench.h"
#include "core/error.h"
#include "launcher/rank_session.h"
#include "parallel/mpi_runtime.h"

int main(int argc, char** argv) {
  CLI::App app{"ptrain-bench: benchmarks with a baseline measured in the same run"};
  app.require_subcommand(1);
  bool json = true;
  app.add_flag("--json", json, "One JSON object per result line (the only output format)");

  ptrain::bench::CommBenchOptions comm_options;
  auto* comm = app.add_subcommand("comm", "all_gather / reduce_scatter / all_reduce vs raw MPI");
  comm->add_option("--min-bytes", comm_options.min_bytes, "Smallest size (bytes)");
  comm->add_option("--max-bytes", comm_options.max_bytes, "Largest size (bytes)");
  comm->add_option("--seconds", comm_options.seconds_per_point, "Timed work per measurement round");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(ptrain::ExitCode::kBadInput);
  }
  return ptrain::run_guarded([&]() -> int {
    ptrain::MpiRuntime mpi(&argc, &argv);
    if (*comm) return ptrain::bench::run_comm_bench(comm_options);
    return 0;
  });
}
