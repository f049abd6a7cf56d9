// Evaluation inputs: pre-tokenized JSONL.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "test_support.h"
#include "trainer/eval.h"

namespace ptrain {
namespace {

using ::ptrain::testing::temp_dir;
using ::testing::HasSubstr;

// ---------------------------------------------------------------- pre-tokenized data

TEST(TokenJsonl, ReadsIdsAndLabelsAndNamesTheLineOfEachError) {
  const std::string dir = temp_dir("jsonl");
  auto write = [&](const std::string& text) {
    std::ofstream(dir + "/d.jsonl") << text;
    return dir + "/d.jsonl";
  };
  auto samples = read_token_jsonl(
      write("{\"input_ids\": [1, 2, 3]}\n\n{\"input_ids\": [4, 5], \"labels\": [-100, 7]}\n"));
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].input_ids, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(samples[0].labels.empty());
  EXPECT_EQ(samples[1].labels, (std::vector<int64_t>{-100, 7}));
  auto error = [&](const std::string& text) {
    try {
      read_token_jsonl(write(text));
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error("{\"input_ids\": [1]}\n{\"text\": \"hi\"}\n"),
              HasSubstr("d.jsonl:2: expected an object with \"input_ids\""));
  EXPECT_THAT(error("{\"input_ids\": [1, 2], \"labels\": [1]}\n"),
              HasSubstr("d.jsonl:1: \"labels\" has 1 entries"));
  EXPECT_THAT(error("{\"input_ids\": []}\n"), HasSubstr("d.jsonl:1: \"input_ids\" is empty"));
  EXPECT_THAT(error("{oops\n"), HasSubstr("d.jsonl:1: not valid JSON"));
}

}  // namespace
}  // namespace ptrain
