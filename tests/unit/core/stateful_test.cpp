// StatefulSet: pieces composed by key, restored exactly, malformed documents refused by key.
#include "core/stateful.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;

struct Counter final : Stateful {
  int64_t value = 0;
  nlohmann::json state() const override { return {{"value", value}}; }
  void restore(const nlohmann::json& state) override { value = state.at("value").get<int64_t>(); }
};

std::string restore_error(StatefulSet& set, const nlohmann::json& state) {
  try {
    set.restore(state);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(StatefulSet, ComposesPiecesByKeyAndNests) {
  Counter steps, position, inner_value;
  StatefulSet inner;
  inner.add("value", inner_value);
  StatefulSet set;
  set.add("steps", steps);
  set.add("sampler", position);
  set.add("inner", inner);
  steps.value = 7;
  position.value = 11;
  inner_value.value = 3;
  const nlohmann::json saved = set.state();
  EXPECT_EQ(saved, nlohmann::json::parse(
                       R"({"steps": {"value": 7}, "sampler": {"value": 11},
                           "inner": {"value": {"value": 3}}})"));
  steps.value = position.value = inner_value.value = 0;
  set.restore(saved);
  EXPECT_EQ(steps.value, 7);
  EXPECT_EQ(position.value, 11);
  EXPECT_EQ(inner_value.value, 3);
}

TEST(StatefulSet, MissingAndUnknownKeysAreNamedAndNothingIsRestored) {
  Counter a, b;
  StatefulSet set;
  set.add("a", a);
  set.add("b", b);
  EXPECT_THAT(restore_error(set, {{"a", {{"value", 1}}}}), HasSubstr("'b' is missing"));
  EXPECT_THAT(restore_error(set, {{"a", {{"value", 1}}}, {"b", {{"value", 2}}}, {"c", 3}}),
              HasSubstr("'c' is not a piece of this job"));
  EXPECT_THAT(restore_error(set, nlohmann::json::array()), HasSubstr("expected an object"));
  EXPECT_EQ(a.value, 0);
  EXPECT_EQ(b.value, 0);
  EXPECT_THROW(set.add("a", b), RuntimeFailure);  // a key is added once
}

}  // namespace
}  // namespace ptrain
