// Helpers shared by the GoogleTest binaries: scratch directories under one per-process root,
// removed when the test binary ends.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/error.h"

namespace ptrain::testing {

// <gtest TempDir>/ptrain-test-<pid>: every scratch directory of this process lives below it.
inline std::filesystem::path test_root() {
  struct RemoveRoot : ::testing::Environment {
    void TearDown() override { std::filesystem::remove_all(test_root()); }
  };
  static const bool registered = (::testing::AddGlobalTestEnvironment(new RemoveRoot), true);
  (void)registered;
  return std::filesystem::path(::testing::TempDir()) /
         ("ptrain-test-" + std::to_string(::getpid()));
}

// A fresh, empty directory test_root()/name.
inline std::string temp_dir(const std::string& name) {
  const std::filesystem::path dir = test_root() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A fresh, empty directory named after the running test ("Suite.Name").
inline std::filesystem::path fresh_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "." + info->name();
  for (char& c : name)
    if (c == '/') c = '_';
  return temp_dir(name);
}

// The message of the UserError `fn` throws; a test failure when it throws nothing or another
// error.
template <typename Fn>
std::string user_error(Fn&& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UserError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a UserError, nothing was thrown";
  return "";
}

}  // namespace ptrain::testing
