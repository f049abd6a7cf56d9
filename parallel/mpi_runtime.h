// MPI process lifetime and error checking. MpiRuntime initialises MPI with MPI_THREAD_MULTIPLE
// (communication threads, the watchdog and the issuing thread all call MPI) and finalises it when
// destroyed; every communicator must be destroyed before it.
//
// Checks: every MPI call is wrapped. A communicator captures where it runs once, when it is built
// (world_rank_location(), "rank R on host H"), and checks its calls with PTRAIN_MPI_CHECK_AT(where,
// call), so an error path queries nothing. PTRAIN_MPI_CHECK(call) is for code that has no
// communicator (MPI initialisation, rank discovery): it asks MPI for the world rank when the error
// happens, and says "rank unknown" when MPI is not initialised.
#pragma once

#include <mpi.h>

#include <string>

#include "core/error.h"

namespace ptrain {

class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // Ends every process of the job (MPI_Abort on MPI_COMM_WORLD) with `code`; plain exit() when MPI
  // is not initialised.
  [[noreturn]] static void abort_job(ExitCode code);
};

std::string host_name();

// "rank 3 on host gpu07": where a rank runs, for error messages. rank -1: "rank unknown".
std::string rank_location(int rank, const std::string& host);
// This process's world rank and host (MPI must be initialised).
std::string world_rank_location();

// Throws RuntimeFailure "MPI call <call> failed: <MPI's message> (<where>) (file:line)".
void check_mpi(int code, const char* call, const char* file, int line, const std::string& where);
// The same, with `where` found out only when `code` is an error.
void check_mpi(int code, const char* call, const char* file, int line);

}  // namespace ptrain

#define PTRAIN_MPI_CHECK_AT(where, call) \
  ::ptrain::check_mpi((call), #call, __FILE__, __LINE__, (where))
#define PTRAIN_MPI_CHECK(call) ::ptrain::check_mpi((call), #call, __FILE__, __LINE__)
