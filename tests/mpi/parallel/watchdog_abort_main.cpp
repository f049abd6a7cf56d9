// A job in which rank 1 skips a collective. Ranks 0 and 2 block in all_reduce #2 and their
// watchdog (timeout 1 s) must end the whole job with exit code 3 and a message naming the
// collective, its sequence number, the step and the rank, and each of them must write its history
// first: all_reduce #1 finished, #2 still running (the grace before the abort lets the second one
// fire too). Rank 1 waits in a barrier with a much longer timeout, so the messages come from the
// ranks stuck in the all_reduce. Run by tests/run_expect.sh, which checks the exit code and the
// messages.
#include <cstdio>

#include "core/logging.h"
#include "parallel/communicator_factory.h"
#include "parallel/mpi_runtime.h"

int main(int argc, char** argv) {
  ptrain::MpiRuntime mpi(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ptrain::LogSettings settings;
  settings.console = "none";
  auto log = ptrain::make_rank_logger(settings, rank, ptrain::host_name());
  auto watchdog =
      ptrain::make_job_watchdog(rank == 1 ? 300.0 : 1.0, rank, size, ptrain::host_name(), log);
  auto world = ptrain::make_world_communicator("mpi", 0, watchdog);
  world->set_step(7);

  float value = 1.0f;
  world->all_reduce(ptrain::comm_buffer(&value, 1), ptrain::ReduceOp::kSum);  // #1: everyone
  std::vector<float> buffer(1024, 1.0f);
  if (rank == 1) {
    world->barrier();  // #2 here: never matched, the job must not hang
  } else {
    world->all_reduce(ptrain::comm_buffer(buffer.data(), 1024), ptrain::ReduceOp::kSum);  // #2
  }
  std::printf("rank %d: the skipped collective completed, which must not happen\n", rank);
  return 0;
}
