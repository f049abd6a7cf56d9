// HfBpeTokenizer against ids computed by hand on small hand-written tokenizer.json files, one per
// BPE family, and against the errors promised for what is not supported. (Real vocabularies are
// compared with reference implementations in tests/unit/tokenizer/reference/.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "tokenizer/hf_regex.h"
#include "tokenizer/hf_tokenizer.h"

namespace ptrain {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using Ids = std::vector<int64_t>;
using json = nlohmann::json;

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// GPT-2's bytes_to_unicode as published in its encoder.py: printable Latin-1 bytes stand for
// themselves, the rest take U+0100.. in byte order (space is U+0120 'Ġ', '\n' is U+010A 'Ċ').
std::string gpt2_char(int byte) {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    if (b == byte) return utf8(printable ? b : 256 + n);
    if (!printable) ++n;
  }
  return "";
}

class TempModelDir {
 public:
  explicit TempModelDir(const std::string& name) : dir_(::testing::TempDir() + name) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  std::unique_ptr<HfBpeTokenizer> load(const json& tokenizer, const json& config = nullptr) const {
    std::ofstream(dir_ + "/tokenizer.json") << tokenizer.dump();
    std::filesystem::remove(dir_ + "/tokenizer_config.json");
    if (!config.is_null()) std::ofstream(dir_ + "/tokenizer_config.json") << config.dump();
    return HfBpeTokenizer::load(dir_);
  }
  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
};

json added_token(int64_t id, const std::string& content, bool special, bool normalized = false) {
  return {{"id", id},        {"content", content},       {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", normalized}, {"special", special}};
}

// ---------------------------------------------------------------- byte-level (GPT-2 style)

// Byte b is id b; then merges building "hello" and "Ġworld", whose ranks are their order.
json byte_level_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[gpt2_char(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"},   {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"},
      {"o", "r"}, {"Ġw", "or"}, {"l", "d"},   {"Ġwor", "ld"}};
  json merge_list = json::array();
  int id = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;  // 256 he, 257 ll, 258 hell, 259 hello, 260 Ġw, 261 or, 262 Ġwor,
                          // 263 ld, 264 Ġworld
    merge_list.push_back(a + " " + b);
  }
  vocab["abc"] = 265;  // reachable only through ignore_merges
  json added = json::array({added_token(266, "<|endoftext|>", true)});
  json tool = added_token(267, "<tool>", false);
  tool["lstrip"] = tool["rstrip"] = true;
  added.push_back(tool);
  json cat = added_token(268, "cat", false, true);
  cat["single_word"] = true;
  added.push_back(cat);
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "ByteLevel"},
            {"add_prefix_space", false},
            {"trim_offsets", true},
            {"use_regex", true}}},
          {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"vocab", vocab},
            {"merges", merge_list}}}};
}

TEST(HfBpeTokenizer, ByteLevelMergesByRankOverTheGpt2Pretokens) {
  TempModelDir dir("hf_byte_level");
  auto t = dir.load(byte_level_tokenizer());
  // "hello" -> h e l l o -> he l l o -> he ll o -> hell o -> hello; " world" -> Ġworld.
  EXPECT_EQ(t->encode("hello world"), (Ids{259, 264}));
  EXPECT_EQ(t->encode("hell"), (Ids{258}));
  EXPECT_EQ(t->encode("old"), (Ids{'o', 263}));   // no "o l" merge; "l d" applies
  EXPECT_EQ(t->encode("llll"), (Ids{257, 257}));  // equal ranks merge leftmost first
  EXPECT_EQ(t->encode("lll"), (Ids{257, 'l'}));
  EXPECT_EQ(t->encode("he's"), (Ids{256, '\'', 's'}));  // contraction is its own pre-token
  // "a  b": the GPT-2 regex gives "a", " ", " b" (\s+(?!\S) leaves the last space to "b").
  EXPECT_EQ(t->encode("a  b"), (Ids{'a', ' ', ' ', 'b'}));
  EXPECT_EQ(t->encode("x 123"), (Ids{'x', ' ', '1', '2', '3'}));
  EXPECT_EQ(t->encode("a\nb"), (Ids{'a', '\n', 'b'}));
  EXPECT_EQ(t->encode("\xC3\xA9"), (Ids{0xC3, 0xA9}));  // é is its two UTF-8 bytes
  EXPECT_EQ(t->encode(""), Ids{});
  EXPECT_EQ(t->encode("abc"), (Ids{'a', 'b', 'c'}));   // in the vocabulary, but no merges
  EXPECT_EQ(t->encode_sequence("hello"), (Ids{259}));  // ByteLevel post-processor: no bos
  EXPECT_FALSE(t->add_bos);
  EXPECT_EQ(t->vocab_size(), 269);
  EXPECT_EQ(t->piece(264), "\xC4\xA0world");
  EXPECT_THAT([&] { t->encode("a\xFF"); },
              ThrowsMessage<UserError>(HasSubstr("not valid UTF-8 (byte 1 of 2: 0xFF)")));
}

TEST(HfBpeTokenizer, ByteLevelAddedTokensSpecialTokensStayTextAndDecode) {
  TempModelDir dir("hf_byte_level_added");
  auto t = dir.load(byte_level_tokenizer());
  // The special token is plain text: "hi", "<|", "endoftext", "|>".
  EXPECT_EQ(t->encode("hi<|endoftext|>"),
            (Ids{'h', 'i', '<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|', '>'}));
  // A non-special added token is matched before the model; lstrip/rstrip take the spaces.
  EXPECT_EQ(t->encode("a <tool> b"), (Ids{'a', 267, 'b'}));
  EXPECT_EQ(t->encode("<tool>hello"), (Ids{267, 259}));
  // single_word: "cat" alone, not inside "concat".
  EXPECT_EQ(t->encode("cat"), (Ids{268}));
  EXPECT_EQ(t->encode("concat"), (Ids{'c', 'o', 'n', 'c', 'a', 't'}));
  EXPECT_EQ(t->decode({259, 264}, true), "hello world");
  EXPECT_EQ(t->decode({259, 266}, true), "hello");
  EXPECT_EQ(t->decode({259, 266}, false), "hello<|endoftext|>");
  EXPECT_EQ(t->decode({0xC3, 0xA9, 'a'}, true),
            "\xC3\xA9"
            "a");
  EXPECT_EQ(t->decode({0xC3}, true), "\xEF\xBF\xBD");  // a lone lead byte: U+FFFD
  EXPECT_THAT([&] { t->decode({269}, true); },
              ThrowsMessage<UserError>(HasSubstr("token id 269 is not in the vocabulary")));
}

TEST(HfBpeTokenizer, ByteLevelOptionsPrefixSpaceIgnoreMergesAndNfc) {
  TempModelDir dir("hf_byte_level_options");
  json j = byte_level_tokenizer();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(dir.load(j)->encode("hello"), (Ids{' ', 259}));  // " hello": Ġ + hello
  j = byte_level_tokenizer();
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(dir.load(j)->encode("abc"), (Ids{265}));
  EXPECT_EQ(dir.load(j)->encode("hello"), (Ids{259}));
  // e + U+0301 composes to é (C3 A9) under NFC; without it the bytes are 65 CC 81.
  j = byte_level_tokenizer();
  EXPECT_EQ(dir.load(j)->encode("e\xCC\x81"), (Ids{'e', 0xCC, 0x81}));
  j["normalizer"] = {{"type", "NFC"}};
  EXPECT_EQ(dir.load(j)->encode("e\xCC\x81"), (Ids{0xC3, 0xA9}));
}

TEST(HfBpeTokenizer, SplitBehaviorsInvertAndDigits) {
  TempModelDir dir("hf_split");
  json base = byte_level_tokenizer();
  base["pre_tokenizer"] = nullptr;
  base["added_tokens"] = json::array();
  // Extra merges to make the grouping visible: "aĠ", "Ġb", "ĠĠ", "12".
  int id = 266;
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"a", "Ġ"}, {"Ġ", "b"}, {"Ġ", "Ġ"}, {"1", "2"}}) {
    base["model"]["vocab"][a + b] = id++;  // 266 aĠ, 267 Ġb, 268 ĠĠ, 269 12
    base["model"]["merges"].push_back(a + " " + b);
  }
  auto with_split = [&](const std::string& behavior, const json& pattern, bool invert) {
    json j = base;
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    return dir.load(j);
  };
  const json space = {{"String", " "}};
  EXPECT_EQ(with_split("Isolated", space, false)->encode("a b"), (Ids{'a', ' ', 'b'}));
  EXPECT_EQ(with_split("Removed", space, false)->encode("a b"), (Ids{'a', 'b'}));
  EXPECT_EQ(with_split("MergedWithPrevious", space, false)->encode("a b"), (Ids{266, 'b'}));
  EXPECT_EQ(with_split("MergedWithNext", space, false)->encode("a b"), (Ids{'a', 267}));
  EXPECT_EQ(with_split("Contiguous", space, false)->encode("a  b"), (Ids{'a', 268, 'b'}));
  EXPECT_EQ(with_split("Isolated", space, false)->encode("a  b"), (Ids{'a', ' ', ' ', 'b'}));
  // Inverted: the letters are the non-matches, so Removed drops the space.
  EXPECT_EQ(with_split("Removed", {{"Regex", "\\p{L}+"}}, true)->encode("a b"), (Ids{'a', 'b'}));
  EXPECT_EQ(with_split("Removed", {{"Regex", "\\s"}}, false)
                ->encode("a\xC2\x85"
                         "b"),
            (Ids{'a', 'b'}));  // Oniguruma's \s includes U+0085

  json j = base;
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Digits"}, {"individual_digits", true}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  EXPECT_EQ(dir.load(j)->encode("x123"), (Ids{'x', '1', '2', '3'}));
  j["pre_tokenizer"]["pretokenizers"][0]["individual_digits"] = false;
  EXPECT_EQ(dir.load(j)->encode("x123"), (Ids{'x', 269, '3'}));
}

// ---------------------------------------------------------------- SentencePiece-converted

// Llama 2's layout: <unk> <s> </s>, <0x00>..<0xFF> as ids 3..258, then pieces.
json sentencepiece_tokenizer() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = b + 3;
  vocab["▁"] = 259;
  vocab["a"] = 260;
  vocab["b"] = 261;
  vocab["c"] = 262;
  vocab["▁a"] = 263;
  vocab["ab"] = 264;
  vocab["▁ab"] = 265;
  vocab["bc"] = 266;
  return {
      {"added_tokens",
       {added_token(0, "<unk>", true), added_token(1, "<s>", true), added_token(2, "</s>", true)}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", {"▁ a", "a b", "▁a b", "b c"}}}}};  // ranks 0..3
}

const json kLlamaConfig = {{"add_bos_token", true}, {"add_eos_token", false},
                           {"bos_token", "<s>"},    {"eos_token", "</s>"},
                           {"unk_token", "<unk>"},  {"clean_up_tokenization_spaces", false}};

TEST(HfBpeTokenizer, SentencePieceMergesByteFallbackAndBos) {
  TempModelDir dir("hf_sentencepiece");
  auto t = dir.load(sentencepiece_tokenizer(), kLlamaConfig);
  // "ab" -> "▁ab": ▁a (rank 0) first, then ▁a+b (rank 2).
  EXPECT_EQ(t->encode("ab"), (Ids{265}));
  EXPECT_EQ(t->encode("abc"), (Ids{265, 262}));        // ▁ab beats bc (rank 2 < 3)
  EXPECT_EQ(t->encode("bc a"), (Ids{259, 266, 263}));  // "▁bc▁a": ▁a first, then bc
  EXPECT_EQ(t->encode("a b"), (Ids{263, 259, 261}));
  EXPECT_EQ(t->encode("a\n"), (Ids{263, 0x0A + 3}));  // byte fallback
  EXPECT_EQ(t->encode("\xC3\xA9"), (Ids{259, 0xC3 + 3, 0xA9 + 3}));
  EXPECT_EQ(t->encode(" ab"), (Ids{259, 265}));  // Prepend always adds its ▁
  // "<s>" in text is plain text: ▁ then the bytes of '<', 's', '>'.
  EXPECT_EQ(t->encode("<s>a"), (Ids{259, '<' + 3, 's' + 3, '>' + 3, 260}));
  EXPECT_TRUE(t->add_bos);
  EXPECT_EQ(t->bos_id, 1);
  EXPECT_EQ(t->eos_id, 2);
  EXPECT_EQ(t->pad_id, std::nullopt);
  EXPECT_EQ(t->encode_sequence("ab"), (Ids{1, 265}));
  EXPECT_EQ(t->decode({265, 262}, true), "abc");
  EXPECT_EQ(t->decode({263, 0x0A + 3}, true), "a\n");
  EXPECT_EQ(t->decode({1, 263, 2}, true), "a");
  EXPECT_EQ(t->decode({1, 263}, false), "<s> a");
  EXPECT_EQ(t->decode({0xC3 + 3, 260}, true),
            "\xEF\xBF\xBD"
            "a");  // invalid byte run: U+FFFD
  EXPECT_EQ(t->piece(13), "<0x0A>");

  // Without a config, the template's <s> is the bos.
  auto plain = dir.load(sentencepiece_tokenizer());
  EXPECT_TRUE(plain->add_bos);
  EXPECT_EQ(plain->bos_id, 1);
  // add_bos_token false wins over the template (LlamaTokenizerFast rebuilds it).
  json no_bos = kLlamaConfig;
  no_bos["add_bos_token"] = false;
  EXPECT_EQ(dir.load(sentencepiece_tokenizer(), no_bos)->encode_sequence("ab"), (Ids{265}));
}

TEST(HfBpeTokenizer, SentencePieceMergeAcrossAMetaspaceRunIsHonoured) {
  // With a merge "c ▁" the text cannot be cut before "▁": "c " -> "▁c▁" -> ▁ + c▁.
  TempModelDir dir("hf_sentencepiece_cross");
  json j = sentencepiece_tokenizer();
  j["model"]["vocab"]["c▁"] = 267;
  j["model"]["merges"].push_back("c ▁");
  EXPECT_EQ(dir.load(j)->encode("c "), (Ids{259, 267}));
  EXPECT_EQ(dir.load(sentencepiece_tokenizer())->encode("c "), (Ids{259, 262, 259}));
}

TEST(HfBpeTokenizer, SentencePieceUnknownCharactersAndFuseUnk) {
  TempModelDir dir("hf_sentencepiece_unk");
  json j = sentencepiece_tokenizer();
  j["model"]["byte_fallback"] = false;
  // € (3 bytes) twice: one fused <unk>, or one per character.
  EXPECT_EQ(dir.load(j)->encode("a\xE2\x82\xAC\xE2\x82\xAC"
                                "b"),
            (Ids{263, 0, 261}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(dir.load(j)->encode("a\xE2\x82\xAC\xE2\x82\xAC"
                                "b"),
            (Ids{263, 0, 0, 261}));
}

TEST(HfBpeTokenizer, MetaspacePrependSchemesAndDecoder) {
  TempModelDir dir("hf_metaspace");
  json j = sentencepiece_tokenizer();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  j["decoder"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  j["model"]["vocab"]["<x>"] = 267;
  j["added_tokens"].push_back(added_token(267, "<x>", false));
  auto first = dir.load(j);
  EXPECT_EQ(first->encode("ab"), (Ids{265}));
  EXPECT_EQ(first->encode(" ab"), (Ids{265}));  // already starts with ▁: nothing prepended
  // Only the text at the very start gets the ▁; the text after <x> does not.
  EXPECT_EQ(first->encode("ab<x>ab"), (Ids{265, 267, 264}));
  EXPECT_EQ(first->encode("<x>ab"), (Ids{267, 264}));
  EXPECT_EQ(first->decode({265, 267, 264}, true), "ab<x>ab");
  EXPECT_EQ(first->decode({263, 263}, true), "a a");

  j["pre_tokenizer"]["prepend_scheme"] = "always";
  EXPECT_EQ(dir.load(j)->encode("ab<x>ab"), (Ids{265, 267, 265}));
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_EQ(dir.load(j)->encode("ab"), (Ids{264}));
  // split: true cuts before every ▁, so "▁a▁b" is "▁a" + "▁b" (no "▁b" token: ▁, b).
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}};
  EXPECT_EQ(dir.load(j)->encode("a b"), (Ids{263, 259, 261}));
  EXPECT_EQ(dir.load(j)->encode("ab ab"), (Ids{265, 265}));
  // The legacy key alone: add_prefix_space false needs prepend_scheme never (tokenizers too).
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"add_prefix_space", false}};
  EXPECT_THAT([&] { dir.load(j); },
              ThrowsMessage<UserError>(HasSubstr("add_prefix_space false does not match")));
}

TEST(HfBpeTokenizer, LoadTokenizerPicksTokenizerJsonAndEncodesFromManyThreads) {
  TempModelDir dir("hf_load");
  dir.load(byte_level_tokenizer());
  std::unique_ptr<Tokenizer> t = load_tokenizer(dir.path());
  EXPECT_EQ(t->name(), "hf-bpe");
  // Four threads share the word cache; each must get what one thread gets.
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i)
    texts.push_back(fmt::format("hello world {} he's {} llll\n", i, std::string(i % 7, 'l')));
  std::vector<Ids> want;
  for (const auto& text : texts) want.push_back(load_tokenizer(dir.path())->encode(text));
  std::vector<int> wrong(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = 0; i < texts.size(); ++i) wrong[k] += t->encode(texts[i]) != want[i];
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
  // The byte tokenizer's marker wins over tokenizer.json.
  std::ofstream(dir.path() + "/tokenizer_config.json") << byte_tokenizer_config_json();
  EXPECT_EQ(load_tokenizer(dir.path())->name(), "byte");
}

// ---------------------------------------------------------------- what is refused

TEST(HfBpeTokenizer, UnsupportedComponentsAreErrorsNamingFileAndKey) {
  TempModelDir dir("hf_unsupported");
  auto expect_error = [&](json j, const std::string& what) {
    EXPECT_THAT([&] { dir.load(j); },
                ThrowsMessage<UserError>(AllOf(HasSubstr("tokenizer.json"), HasSubstr(what))))
        << what;
  };
  json j = byte_level_tokenizer();
  j["model"]["type"] = "WordPiece";
  expect_error(j, "model.type: model type 'WordPiece' is not supported");
  j = byte_level_tokenizer();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(j, "pre_tokenizer: pre_tokenizer type 'Whitespace' is not supported");
  j = byte_level_tokenizer();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}}}};
  expect_error(j, "normalizer.normalizers[0]: normalizer type 'Lowercase' is not supported");
  j = byte_level_tokenizer();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, "decoder: decoder type 'WordPiece' is not supported");
  j = byte_level_tokenizer();
  j["model"]["dropout"] = 0.1;
  expect_error(j, "model.dropout: BPE dropout 0.1 is not supported");
  j = byte_level_tokenizer();
  j["model"]["merges"].push_back("x zz");
  expect_error(j, "model.merges[9]: merge 'x zz' names a token outside the vocabulary ('zz')");
  j = byte_level_tokenizer();
  j["model"]["continuing_subword_prefix"] = "##";
  expect_error(j, "model.continuing_subword_prefix");
  j = byte_level_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "\\bword"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  expect_error(j, "pre_tokenizer.pattern.Regex: the regular expression '\\bword' uses '\\b'");
  j = byte_level_tokenizer();
  j["post_processor"] = sentencepiece_tokenizer()["post_processor"];
  j["post_processor"]["single"].push_back({{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}});
  expect_error(j, "post_processor.single: the template");
  j = byte_level_tokenizer();
  j["added_tokens"][0]["id"] = 300;
  expect_error(j,
               "added_tokens[0]: token '<|endoftext|>' has id 300 but Hugging Face tokenizers "
               "gives it id 266");
  EXPECT_THAT(
      [&] {
        dir.load(byte_level_tokenizer(), {{"add_eos_token", true}});
      },
      ThrowsMessage<UserError>(HasSubstr("tokenizer_config.json': add_eos_token")));
  EXPECT_THAT(
      [&] {
        dir.load(byte_level_tokenizer(), {{"add_prefix_space", true}});
      },
      ThrowsMessage<UserError>(HasSubstr("add_prefix_space: true disagrees")));
  EXPECT_THAT(
      [&] {
        dir.load(byte_level_tokenizer(), {{"bos_token", "<nope>"}});
      },
      ThrowsMessage<UserError>(HasSubstr("'<nope>' is not a token of tokenizer.json")));
}

// A post_processor's leading token must be listed with one vocabulary id; a malformed entry
// was read past (an unchecked lookup) or gave a bos id outside the vocabulary.
TEST(HfBpeTokenizer, TemplateSpecialTokenEntriesAreChecked) {
  TempModelDir dir("hf_template_ids");
  auto expect_error = [&](const json& entry, const std::string& what) {
    json j = sentencepiece_tokenizer();
    j["post_processor"]["special_tokens"]["<s>"] = entry;
    EXPECT_THAT([&] { dir.load(j, kLlamaConfig); },
                ThrowsMessage<UserError>(AllOf(HasSubstr("tokenizer.json"), HasSubstr(what))))
        << entry.dump();
  };
  expect_error(json::object(),
               "post_processor.special_tokens.<s>.ids: expected one id, got nothing");
  expect_error("x", "post_processor.special_tokens.<s>.ids: expected one id, got nothing");
  expect_error({{"ids", {-1}}}, "expected one id, got [-1]");
  expect_error({{"ids", {1, 2}}}, "expected one id, got [1,2]");
  expect_error({{"ids", {999999}}},
               "post_processor: the template starts sequences with id 999999, which is not a "
               "token of the vocabulary");
}

// Issue 11: a Split pattern that backtracks catastrophically ended in "match limit exceeded",
// exit 3, naming neither the file nor the pattern.
TEST(HfBpeTokenizer, CatastrophicSplitPatternIsAUserErrorNamingFileAndPattern) {
  TempModelDir dir("hf_catastrophic");
  json j = byte_level_tokenizer();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", "(a+)+$"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const auto tok = dir.load(j);
  EXPECT_EQ(tok->encode("aab"), (Ids{'a', 'a', 'b'}));
  EXPECT_THAT(
      [&] { tok->encode(std::string(40, 'a') + "b"); },
      ThrowsMessage<UserError>(AllOf(HasSubstr(dir.path() + "/tokenizer.json"),
                                     HasSubstr("pre_tokenizer.pretokenizers[0].pattern.Regex"),
                                     HasSubstr("'(a+)+$'"), HasSubstr("nested repetition"))));
}

// PCRE2's fixed default limit (10 million steps) stopped Llama 3's pattern on a text with a
// 12 MB run of spaces, which `tokenizers` splits; the limit grows with the text.
TEST(HfRegex, ReleasedPatternMatchesAVeryLongRun) {
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+)"
      R"([\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const size_t n = 12000000;
  const std::string text = std::string(n, ' ') + "x";
  std::vector<std::pair<size_t, size_t>> m;
  HfRegex::from_pattern(llama3, "llama3").find_all(text, m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{0, n - 1}, {n - 1, n + 1}}));
}

TEST(HfRegex, OnigurumaConstructsTranslateOrAreRefused) {
  EXPECT_EQ(onig_to_pcre2(R"(\s+(?!\S))", "t"), R"(\p{White_Space}+(?!\P{White_Space}))");
  EXPECT_EQ(onig_to_pcre2(R"([^\s\p{L}\d])", "t"), R"([^\p{White_Space}\p{L}\p{Nd}])");
  EXPECT_EQ(onig_to_pcre2(R"(\p{N}{,3}x{2}\u00e9\v)", "t"), R"(\p{N}{0,3}x{2}\x{00e9}\x{0B})");
  EXPECT_EQ(onig_to_pcre2(R"((?i:'s|'t)(?m:.))", "t"), R"((?i:'s|'t)(?s:.))");
  for (const char* bad :
       {R"([[:alpha:]])", R"([a-z&&[^b]])", R"(\h)", R"(\w)", R"(a{2}+)", R"(a{2}?)", R"(\1)"}) {
    EXPECT_THAT([&] { onig_to_pcre2(bad, "where"); },
                ThrowsMessage<UserError>(HasSubstr("where: the regular expression")))
        << bad;
  }
  std::vector<std::pair<size_t, size_t>> m;
  HfRegex::from_pattern("x*", "t").find_all("axxb", m);  // rust-onig's empty-match rule
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 3}, {4, 4}}));
}

}  // namespace
}  // namespace ptrain
