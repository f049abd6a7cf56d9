// Evaluation inputs: pre-tokenized JSONL, and the arguments evaluate() refuses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <stdexcept>

#include "core/error.h"
#include "test_support.h"
#include "trainer/eval.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

using ::ptrain::testing::temp_dir;
using ::testing::AllOf;
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

// Issue 11: errors of a JSONL of token ids name the file, line and entry, and say what is wrong.
TEST(TokenJsonl, BadIdsLabelsAndFilesAreNamed) {
  const std::string dir = temp_dir("jsonl_bad");
  auto error_of = [](const std::string& path) {
    try {
      read_token_jsonl(path);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto error = [&](const std::string& text) {
    std::ofstream(dir + "/ids.jsonl") << text;
    return error_of(dir + "/ids.jsonl");
  };
  // Too large for any token id: JSON gives 2^70 and 1e30 as doubles, 2^64 - 1 as unsigned.
  for (const char* big : {"1180591620717411303424", "1e30", "18446744073709551615"}) {
    EXPECT_THAT(error("{\"input_ids\": [1]}\n{\"input_ids\": [1, " + std::string(big) + "]}\n"),
                ::testing::AllOf(HasSubstr("ids.jsonl:2: 'input_ids' entry 1 is "),
                                 HasSubstr("out of range for a token id")))
        << big;
  }
  EXPECT_THAT(error("{\"input_ids\": [1.5]}\n"),
              HasSubstr("ids.jsonl:1: 'input_ids' holds a non-integer: entry 0 is 1.5"));
  EXPECT_THAT(error("{\"input_ids\": [1, -3]}\n"),
              HasSubstr("ids.jsonl:1: 'input_ids' entry 1 is -3; token ids are >= 0"));
  EXPECT_THAT(
      error("{\"input_ids\": [1, 2], \"labels\": [-100, -1]}\n"),
      HasSubstr("ids.jsonl:1: 'labels' entry 1 is -1; a label is a token id (>= 0) or -100"));
  // A missing file says why; a directory is not read as an empty file.
  EXPECT_THAT(error_of(dir + "/absent.jsonl"),
              ::testing::AllOf(HasSubstr("cannot read data file '" + dir + "/absent.jsonl'"),
                               HasSubstr("No such file or directory")));
  EXPECT_THAT(error_of(dir),
              ::testing::AllOf(HasSubstr("'" + dir + "'"), HasSubstr("is a directory")));
}

// ---------------------------------------------------------------- evaluate() arguments

// evaluate() checks its arguments before its first collective; these tests never reach one.
class NoCollectives final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return "none"; }
  std::string name() const override { return "world"; }
  WorkHandle all_gather_async(CommBuffer, CommBuffer) override { return refuse(); }
  WorkHandle reduce_scatter_async(CommBuffer, CommBuffer, ReduceOp) override { return refuse(); }
  WorkHandle all_reduce_async(CommBuffer, ReduceOp) override { return refuse(); }
  WorkHandle broadcast_async(CommBuffer, int) override { return refuse(); }
  WorkHandle barrier_async() override { return refuse(); }
  std::shared_ptr<Communicator> split(int, int) override {
    refuse();
    return nullptr;
  }
  void set_step(int64_t) override {}
  void set_compute_stream(ComputeStream) override {}
  void abandon() override {}

 private:
  static WorkHandle refuse() { throw std::logic_error("evaluate() reached a collective"); }
};

TEST(Evaluate, ASequenceLengthBeyondTheContextOrNoRowsIsAUserError) {
  LlamaConfig c = micro_config();
  c.max_position_embeddings = 64;
  auto model = make_model(c, at::kFloat);
  const std::vector<TokenSample> samples = {{{1, 2, 3, 4, 5}, {}}};
  NoCollectives comm;
  auto error = [&](int64_t seq_len, int64_t rows) {
    try {
      evaluate(model, samples, seq_len, rows, comm);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // Positions past max_position_embeddings were never trained: scoring them is refused.
  EXPECT_THAT(error(65, 1), AllOf(HasSubstr("--seq-len"), HasSubstr("65"), HasSubstr("64"),
                                  HasSubstr("max_position_embeddings")));
  EXPECT_THAT(error(4000000000000, 1), AllOf(HasSubstr("--seq-len"), HasSubstr("4000000000000")));
  EXPECT_THAT(error(1, 1), HasSubstr("at least 2"));
  EXPECT_THAT(error(16, 0), HasSubstr("rows"));
}

TEST(Evaluate, IdsAndLabelsOutsideTheVocabularyNameTheFileAndLine) {
  auto model = make_model(micro_config(), at::kFloat);  // vocab_size 11
  const std::string dir = temp_dir("vocab");
  std::ofstream(dir + "/d.jsonl") << "{\"input_ids\": [1, 2]}\n"
                                  << "{\"input_ids\": [1, 300]}\n";
  std::ofstream(dir + "/l.jsonl") << "{\"input_ids\": [1, 2], \"labels\": [-100, 12]}\n";
  NoCollectives comm;
  auto error = [&](const std::string& file) {
    try {
      evaluate(model, read_token_jsonl(dir + "/" + file), 16, 1, comm);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error("d.jsonl"),
              HasSubstr("d.jsonl:2: token id 300 is outside the model's vocabulary [0, 11)"));
  EXPECT_THAT(error("l.jsonl"),
              HasSubstr("l.jsonl:1: label 12 is outside the model's vocabulary [0, 11)"));
}

}  // namespace
}  // namespace ptrain
