// Shared set-up for GoogleTest binaries that run under mpirun: MPI, a job watchdog (so a hung
// collective fails the test with a message instead of hanging ctest) and the world communicator.
#pragma once

#include <memory>

#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"

namespace ptrain::test {

// The world communicator of the running test binary (MPI backend).
Communicator& world();

// The job's watchdog, for communicators a test builds itself (another backend's world). They must
// be gone before the test binary's main() returns: release them in a test environment's TearDown.
std::shared_ptr<CollectiveWatchdog> job_watchdog();

}  // namespace ptrain::test
