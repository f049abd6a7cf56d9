#include "parallel/mpi_runtime.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace ptrain {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int provided = 0;
  PTRAIN_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  if (provided < MPI_THREAD_MULTIPLE) {
    MPI_Finalize();
    throw RuntimeFailure(
        "this MPI library does not provide MPI_THREAD_MULTIPLE, which ptrain's communication "
        "threads need; use an MPI built with thread support (Open MPI: "
        "--enable-mpi-thread-multiple)");
  }
  // Errors come back as codes so PTRAIN_MPI_CHECK can name the call, instead of MPI aborting.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiRuntime::abort_job(ExitCode code) {
  std::fflush(stdout);
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, static_cast<int>(code));
  std::_Exit(static_cast<int>(code));
}

std::string host_name() {
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

std::string rank_location(int rank, const std::string& host) {
  if (rank < 0) return fmt::format("rank unknown on host {}", host);
  return fmt::format("rank {} on host {}", rank, host);
}

std::string world_rank_location() {
  int rank = -1;
  PTRAIN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  return rank_location(rank, host_name());
}

void check_mpi(int code, const char* call, const char* file, int line, const std::string& where) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw RuntimeFailure(detail::with_location(
      fmt::format("MPI call {} failed: {} ({})", call, text, where), file, line));
}

void check_mpi(int code, const char* call, const char* file, int line) {
  if (code == MPI_SUCCESS) return;
  // No communicator captured the rank: ask MPI, unless it is not (or no longer) initialised, as
  // when MPI_Init itself failed.
  int initialized = 0, finalized = 0, rank = -1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  check_mpi(code, call, file, line, rank_location(rank, host_name()));
}

}  // namespace ptrain
