// Shared set-up for GoogleTest binaries that run under mpirun: MPI, a job watchdog (so a hung
// collective fails the test with a message instead of hanging ctest) and the world communicator.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace ptrain::test {

// The world communicator of the running test binary (MPI backend).
Communicator& world();

}  // namespace ptrain::test
