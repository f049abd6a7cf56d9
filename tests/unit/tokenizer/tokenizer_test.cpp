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

}  // namespace
}  // namespace ptrain
