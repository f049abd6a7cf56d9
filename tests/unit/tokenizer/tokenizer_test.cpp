// Tokenizers against hand-computed ids.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;

TEST(ByteTokenizer, IdsAreBytesPlusThreeAndSpecialTokensNeverComeFromText) {
  ByteTokenizer t;
  // "é" is C3 A9 in UTF-8; "<s>" is three plain bytes, not bos.
  EXPECT_EQ(t.encode("a\xC3\xA9<s>"),
            (std::vector<int64_t>{0x61 + 3, 0xC3 + 3, 0xA9 + 3, '<' + 3, 's' + 3, '>' + 3}));
  EXPECT_EQ(t.encode_sequence("A"), (std::vector<int64_t>{1, 0x41 + 3}));
  EXPECT_EQ(t.decode({1, 0x68 + 3, 0x69 + 3, 2}, true), "hi");
  EXPECT_EQ(t.decode({1, 0x68 + 3, 2}, false), "<s>h</s>");
  EXPECT_EQ(t.piece(0), "<pad>");
  EXPECT_EQ(t.piece(13), "<0x0A>");
  EXPECT_EQ(t.vocab_size(), 259);
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  EXPECT_EQ(t.decode(t.encode(all), true), all);
  EXPECT_THAT([&] { t.decode({259}, true); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("token id 259")));
}

TEST(LoadTokenizer, ChoosesTheByteTokenizerFromTheDirectoryAndNamesWhatIsMissing) {
  const std::string dir = ::testing::TempDir() + "ptrain_tokenizer_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  EXPECT_THAT([&] { load_tokenizer(dir); }, ::testing::ThrowsMessage<UserError>(
                                                HasSubstr("no supported tokenizer (found: none)")));
  std::ofstream(dir + "/tokenizer_config.json") << byte_tokenizer_config_json();
  EXPECT_EQ(load_tokenizer(dir)->name(), "byte");
  std::ofstream(dir + "/tokenizer_config.json") << "{not json";
  EXPECT_THAT(
      [&] { load_tokenizer(dir); },
      ::testing::ThrowsMessage<UserError>(HasSubstr("tokenizer_config.json': not valid JSON")));
}

// Paths that cannot be examined and config values of the wrong type are bad input (exit 2), not
// a std::filesystem or JSON library exception (exit 3).
TEST(LoadTokenizer, UnexaminablePathsAndOddConfigValuesAreUserErrors) {
  const std::string too_long = ::testing::TempDir() + std::string(300, 'm');  // ENAMETOOLONG
  EXPECT_THAT([&] { load_tokenizer(too_long); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("no supported tokenizer")));
  const std::string dir = ::testing::TempDir() + "ptrain_tokenizer_odd_config";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer_config.json") << R"({"ptrain_tokenizer": 5})";
  EXPECT_THAT([&] { load_tokenizer(dir); },
              ::testing::ThrowsMessage<UserError>(
                  HasSubstr("no supported tokenizer (found: tokenizer_config.json)")));
}

// Issue 11: messages that ask for a fix to the tokenizer ("has no eos token") name its files.
TEST(LoadTokenizer, DescribeNamesTheFilesRead) {
  const std::string dir = ::testing::TempDir() + "ptrain_tokenizer_describe";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ByteTokenizer built;
  EXPECT_EQ(built.describe(), "tokenizer 'byte'");
  built.model_dir = "models/m";
  EXPECT_EQ(built.describe(), "tokenizer 'byte' (from 'models/m')");
  std::ofstream(dir + "/tokenizer_config.json") << byte_tokenizer_config_json();
  EXPECT_EQ(load_tokenizer(dir)->describe(),
            "tokenizer 'byte' (from '" + dir + "/tokenizer_config.json')");
  std::filesystem::remove(dir + "/tokenizer_config.json");
  std::ofstream(dir + "/tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";
  EXPECT_EQ(load_tokenizer(dir)->describe(),
            "tokenizer 'hf-bpe' (from '" + dir + "/tokenizer.json'; no tokenizer_config.json)");
  std::ofstream(dir + "/tokenizer_config.json") << "{}";
  EXPECT_EQ(load_tokenizer(dir)->describe(), "tokenizer 'hf-bpe' (from '" + dir +
                                                 "/tokenizer.json' and '" + dir +
                                                 "/tokenizer_config.json')");
}

}  // namespace
}  // namespace ptrain
