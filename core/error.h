// Errors and check macros shared by every ptrain component.
//
// Inside the code errors are exceptions; at process and RPC boundaries they become exit codes or
// statuses (docs/usage.md, "Exit codes"). Two kinds matter to a user:
//   UserError       bad input (config, data, files): the message says what to change. Exit code 2.
//                   CorruptData, a stored file that fails its own checks, is one.
//   RuntimeFailure  something failed while running (a collective, an MPI/NCCL/CUDA call, a
//                   timeout), or an internal invariant broke. Exit code 3.
// PTRAIN_CHECK throws UserError; PTRAIN_ASSERT throws RuntimeFailure and marks a bug in ptrain.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ptrain {

// Process exit codes; scripts and batch files depend on these values (docs/usage.md, "Exit codes").
enum class ExitCode : int {
  kOk = 0,
  kBadInput = 2,
  kRuntimeFailure = 3,
  kStoppedForRequeue = 4,
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode exit_code() const { return code_; }

 private:
  ExitCode code_;
};

class UserError : public Error {
 public:
  explicit UserError(const std::string& message) : Error(ExitCode::kBadInput, message) {}
};

// Stored data (a prepared-data cache) whose contents fail their own checks: a missing or
// truncated file, a checksum mismatch, a malformed or foreign index. Bad input when it reaches a
// user (`ptrain inspect` of a damaged cache); a caller that can rebuild the data catches it and
// does.
class CorruptData : public UserError {
 public:
  using UserError::UserError;
};

class RuntimeFailure : public Error {
 public:
  explicit RuntimeFailure(const std::string& message) : Error(ExitCode::kRuntimeFailure, message) {}
};

namespace detail {
// "message (file.cpp:123)": the source location helps a developer, the message helps the user.
std::string with_location(const std::string& message, const char* file, int line);
}  // namespace detail

}  // namespace ptrain

#define PTRAIN_CHECK(cond, ...)                                                             \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      throw ::ptrain::UserError(                                                            \
          ::ptrain::detail::with_location(::fmt::format(__VA_ARGS__), __FILE__, __LINE__)); \
    }                                                                                       \
  } while (false)

#define PTRAIN_ASSERT(cond, ...)                                                                   \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      throw ::ptrain::RuntimeFailure(::ptrain::detail::with_location(                              \
          "internal error: " #cond " failed: " + ::fmt::format(__VA_ARGS__), __FILE__, __LINE__)); \
    }                                                                                              \
  } while (false)
