// MPI process lifetime and error checking. MpiRuntime initialises MPI with MPI_THREAD_MULTIPLE
// (communication threads, the watchdog and the issuing thread all call MPI) and finalises it when
// destroyed; every communicator must be destroyed before it. PTRAIN_MPI_CHECK wraps every MPI call.
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

// Throws RuntimeFailure "MPI call <call> failed: <MPI's message> (file:line, rank R on host H)".
void check_mpi(int code, const char* call, const char* file, int line);

}  // namespace ptrain

#define PTRAIN_MPI_CHECK(call) ::ptrain::check_mpi((call), #call, __FILE__, __LINE__)
