// Failpoints (core/failpoint.h) in death tests: each statement arms PTRAIN_FAILPOINT in its own
// child process before that child's first failpoint call (the armed list is read once per
// process), then reaches failpoints and ends with an exit code of its own when none fired.
// This process itself never calls failpoint(), so every forked child reads the list afresh.
#include "core/failpoint.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace ptrain {
namespace {

constexpr int kSurvived = 7;  // the statement's own exit: no failpoint fired

// Arms `spec` in this (child) process.
void arm(const char* spec) {
  if (spec == nullptr)
    unsetenv("PTRAIN_FAILPOINT");
  else
    setenv("PTRAIN_FAILPOINT", spec, 1);
}

TEST(FailpointDeathTest, FiresOnItsFirstHitByDefault) {
  EXPECT_EXIT(
      {
        arm("save");
        failpoint("save", 3);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kFailpointExitCode), "failpoint save: rank 3 exits with code 86");
  EXPECT_EQ(kFailpointExitCode, 86);
}

TEST(FailpointDeathTest, FiresOnTheNthHit) {
  // #2: the first call passes, the second fires.
  EXPECT_EXIT(
      {
        arm("save#2");
        failpoint("save", 0);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kSurvived), "");
  EXPECT_EXIT(
      {
        arm("save#2");
        failpoint("save", 0);
        failpoint("save", 0);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kFailpointExitCode), "failpoint save: rank 0 exits with code 86");
  // Other failpoints' hits do not count.
  EXPECT_EXIT(
      {
        arm("save#3");
        failpoint("save", 0);
        failpoint("commit", 0);
        failpoint("saved", 0);
        failpoint("sav", 0);
        failpoint("save", 0);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kSurvived), "");
}

TEST(FailpointDeathTest, ARankOnlyFiresOnThatRank) {
  EXPECT_EXIT(
      {
        arm("save@1");
        failpoint("save", 0);
        failpoint("save", 2);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kSurvived), "");
  EXPECT_EXIT(
      {
        arm("save@1");
        failpoint("save", 0);
        failpoint("save", 1);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kFailpointExitCode), "failpoint save: rank 1 exits with code 86");
  // name@rank#hit: only that rank's hits count.
  EXPECT_EXIT(
      {
        arm("save@1#2");
        failpoint("save", 0);
        failpoint("save", 0);
        failpoint("save", 1);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kSurvived), "");
  EXPECT_EXIT(
      {
        arm("save@1#2");
        failpoint("save", 0);
        failpoint("save", 1);
        failpoint("save", 1);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kFailpointExitCode), "failpoint save: rank 1 exits with code 86");
}

TEST(FailpointDeathTest, AListArmsEachOfItsPoints) {
  EXPECT_EXIT(
      {
        arm("load@0,,commit#2");
        failpoint("load", 1);
        failpoint("commit", 5);
        failpoint("commit", 6);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kFailpointExitCode), "failpoint commit: rank 6 exits");
  EXPECT_EXIT(
      {
        arm("load@0,,commit#2");
        failpoint("commit", 5);
        failpoint("load", 0);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kFailpointExitCode), "failpoint load: rank 0 exits");
}

TEST(FailpointDeathTest, UnarmedNothingFires) {
  EXPECT_EXIT(
      {
        arm(nullptr);
        for (int i = 0; i < 5; ++i) failpoint("save", i);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kSurvived), "");
  EXPECT_EXIT(
      {
        arm("");
        failpoint("save", 0);
        failpoint("", 0);
        std::_Exit(kSurvived);
      },
      ::testing::ExitedWithCode(kSurvived), "");
}

}  // namespace
}  // namespace ptrain
