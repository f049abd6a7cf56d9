// The communicator contract tests run once for every backend the build has: the MPI instantiation
// (communicator_test.cpp) always, the NCCL one (nccl_test_backend.cpp) when CMake compiles it
// (PTRAIN_WITH_CUDA). A backend gives the tests its world communicator and the memory its
// collectives work on; the test bodies keep their values on the host (TypedBuffer) and never name
// a backend. Instantiations are named after the backend ("Mpi/...", "Nccl/..."): ctest runs
// "-Nccl/*" under the mpi label and "Nccl/*" under the gpu label.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/communicator.h"

namespace ptrain::test {

// Backend memory for one test buffer, mirrored from and to host bytes.
class BackendMemory {
 public:
  virtual ~BackendMemory() = default;
  virtual void* data() = 0;
  // Copies in before a collective reads the memory, and out after one wrote it: both are ordered
  // on the backend's compute stream, so a copy out sees a collective once Work::wait() ordered
  // that stream after it.
  virtual void upload(const void* host, int64_t bytes) = 0;
  virtual void download(void* host, int64_t bytes) = 0;
};

class CommTestBackend {
 public:
  virtual ~CommTestBackend() = default;
  virtual std::string name() const = 0;  // "mpi", "nccl"
  // Empty when the backend can run in this job, else the reason its tests skip. The first call is
  // collective over MPI_COMM_WORLD (every rank runs the same tests in the same order).
  virtual std::string unavailable_reason() = 0;
  virtual Communicator& world() = 0;
  virtual DeviceType device() const = 0;
  // Null for a host backend: its collectives work on the host bytes themselves.
  virtual std::unique_ptr<BackendMemory> allocate(int64_t bytes) = 0;
  // True when 16-bit and average reductions round once (MPI); NCCL rounds at each step.
  virtual bool rounds_once() const = 0;
};

// Test parameters print as the backend's name.
inline void PrintTo(CommTestBackend* backend, std::ostream* os) {
  *os << backend->name();
}

CommTestBackend& mpi_test_backend();

// The dtypes every backend supports.
std::vector<c10::ScalarType> all_dtypes();

// Contract tests over one backend; they skip, saying why, where the backend cannot run.
class CommContractTest : public ::testing::TestWithParam<CommTestBackend*> {
 protected:
  void SetUp() override {
    std::string why = backend().unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
  CommTestBackend& backend() const { return *GetParam(); }
  Communicator& comm() const { return backend().world(); }
};

// Contract tests over one backend and one dtype.
class CollectiveTest
    : public ::testing::TestWithParam<std::tuple<CommTestBackend*, c10::ScalarType>> {
 protected:
  void SetUp() override {
    std::string why = backend().unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
  CommTestBackend& backend() const { return *std::get<0>(GetParam()); }
  c10::ScalarType dtype() const { return std::get<1>(GetParam()); }
  Communicator& comm() const { return backend().world(); }
};

// Test-name suffixes: the backend's name, the dtype's name.
std::string backend_test_name(const ::testing::TestParamInfo<CommTestBackend*>& info);
std::string dtype_test_name(
    const ::testing::TestParamInfo<std::tuple<CommTestBackend*, c10::ScalarType>>& info);

}  // namespace ptrain::test
