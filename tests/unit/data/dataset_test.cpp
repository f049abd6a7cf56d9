// Dataset rows and prompt rendering against hand-computed expectations: the byte tokenizer's ids
// are byte + 3 (bos 1, eos 2), so every expected id below follows from the template text written
// out here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "data/prompt.h"
#include "tokenizer/tokenizer.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kBos = 1;
constexpr int64_t kEos = 2;
constexpr int64_t kNo = -100;

// The byte tokenizer's ids, computed independently of it.
std::vector<int64_t> bytes(const std::string& text) {
  std::vector<int64_t> ids;
  for (unsigned char c : text) ids.push_back(static_cast<int64_t>(c) + 3);
  return ids;
}

std::vector<int64_t> cat(std::vector<std::vector<int64_t>> parts) {
  std::vector<int64_t> out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

const char kWithInput[] =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd "
    "the numbers.\n\n### Input:\n2 3\n\n### Response:\n";
const char kWithoutInput[] =
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n";

DatasetOptions options(RowFormat format, bool skip = false, std::string field = "") {
  DatasetOptions o;
  o.format = format;
  o.skip_invalid_rows = skip;
  o.field = std::move(field);
  return o;
}

// The message of the UserError that parsing `text` as data.jsonl throws.
std::string error_of(RowFormat format, const std::string& text, std::string field = "") {
  try {
    parse_dataset("data.jsonl", text, options(format, false, std::move(field)));
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------- alpaca template and labels

TEST(AlpacaPrompt, TextIsExactWithAndWithoutInput) {
  EXPECT_EQ(alpaca_prompt({"Add the numbers.", "2 3", "5"}), kWithInput);
  EXPECT_EQ(alpaca_prompt({"Say hi.", "", "hi"}), kWithoutInput);
}

TEST(RenderRow, AlpacaLearnsOnlyTheResponseAndEos) {
  ByteTokenizer tok;
  DatasetRow row;
  row.kind = DatasetRow::Kind::kAlpaca;
  row.alpaca = {"Add the numbers.", "2 3", "5!"};
  TokenizedSample s = render_row(row, "data.jsonl", tok, RenderOptions{false});
  const std::vector<int64_t> prompt = bytes(kWithInput);
  EXPECT_EQ(s.input_ids, cat({{kBos}, prompt, bytes("5!"), {kEos}}));
  // Position t predicts token t + 1: the prompt's last byte predicts '5', '5' predicts '!', '!'
  // predicts eos; bos and every prompt byte before that predict nothing learned.
  EXPECT_EQ(s.labels,
            cat({std::vector<int64_t>(prompt.size(), kNo), {'5' + 3, '!' + 3, kEos, kNo}}));
}

TEST(RenderRow, AlpacaTrainOnInputsLearnsEveryTokenAfterBos) {
  ByteTokenizer tok;
  DatasetRow row;
  row.kind = DatasetRow::Kind::kAlpaca;
  row.alpaca = {"Say hi.", "", "hi"};
  TokenizedSample s = render_row(row, "data.jsonl", tok, RenderOptions{true});
  const std::vector<int64_t> ids = cat({{kBos}, bytes(kWithoutInput), bytes("hi"), {kEos}});
  EXPECT_EQ(s.input_ids, ids);
  std::vector<int64_t> labels(ids.begin() + 1, ids.end());
  labels.push_back(kNo);
  EXPECT_EQ(s.labels, labels);
}

TEST(RenderRow, WithoutBosTheSequenceStartsWithThePrompt) {
  ByteTokenizer tok;
  tok.add_bos = false;
  DatasetRow row;
  row.kind = DatasetRow::Kind::kAlpaca;
  row.alpaca = {"Say hi.", "", "hi"};
  TokenizedSample s = render_row(row, "data.jsonl", tok, RenderOptions{});
  const std::vector<int64_t> prompt = bytes(kWithoutInput);
  EXPECT_EQ(s.input_ids, cat({prompt, bytes("hi"), {kEos}}));
  EXPECT_EQ(s.labels,
            cat({std::vector<int64_t>(prompt.size() - 1, kNo), {'h' + 3, 'i' + 3, kEos, kNo}}));
}

TEST(RenderRow, CompletionLearnsEverythingAfterBos) {
  ByteTokenizer tok;
  DatasetRow row;
  row.kind = DatasetRow::Kind::kCompletion;
  row.text = "ab";
  TokenizedSample s = render_row(row, "data.jsonl", tok, RenderOptions{});
  EXPECT_EQ(s.input_ids, (std::vector<int64_t>{kBos, 'a' + 3, 'b' + 3, kEos}));
  EXPECT_EQ(s.labels, (std::vector<int64_t>{'a' + 3, 'b' + 3, kEos, kNo}));
}

TEST(RenderRow, ChatRowsAreRenderedWithTheChatTemplateWithoutBosOrEos) {
  ByteTokenizer tok;
  DatasetRow row;
  row.kind = DatasetRow::Kind::kConversation;
  row.line = 4;
  row.turns = {{Role::kUser, "hi"}, {Role::kAssistant, "yo"}};
  RenderOptions options;
  options.chat_template = "chatml";
  TokenizedSample s = render_row(row, "chat.jsonl", tok, options);
  const std::vector<int64_t> prompt =
      bytes("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<int64_t> answer = bytes("yo<|im_end|>");
  EXPECT_EQ(s.input_ids, cat({prompt, answer, bytes("\n")}));
  EXPECT_EQ(s.labels, cat({std::vector<int64_t>(prompt.size() - 1, kNo), answer, {kNo, kNo}}));
  // (chat_template_test.cpp covers the formats, labels and errors.)
}

TEST(RenderRow, TokenizerWithoutEosIsAnError) {
  ByteTokenizer tok;
  tok.eos_id.reset();
  DatasetRow row;
  row.text = "a";
  EXPECT_THAT([&] { render_row(row, "data.jsonl", tok, RenderOptions{}); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("tokenizer 'byte' has no eos token")));
}

// What the tokenizer refuses in a row's text (a tokenizer.json pattern that gives up on it) names
// the row as well as the tokenizer file and pattern.
TEST(RenderRow, TokenizerErrorsNameTheRow) {
  const std::string dir = ::testing::TempDir() + "ptrain_dataset_bad_pattern";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer.json") << R"({"pre_tokenizer": {"type": "Split",
      "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": false},
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";
  const auto tok = load_tokenizer(dir);
  DatasetRow row;
  row.kind = DatasetRow::Kind::kCompletion;
  row.line = 7;
  row.text = std::string(40, 'a') + "b";
  EXPECT_THAT([&] { render_row(row, "data.jsonl", *tok, RenderOptions{}); },
              ::testing::ThrowsMessage<UserError>(::testing::AllOf(
                  StartsWith("data.jsonl:7: '" + dir + "/tokenizer.json': pre_tokenizer"),
                  HasSubstr("'(a+)+$'"))));
}

// Issue 11: "tokenizer 'hf-bpe' has no eos token" named no file to fix.
TEST(RenderRow, TokenizerWithoutEosIsAnErrorNamingItsFiles) {
  const std::string dir = ::testing::TempDir() + "ptrain_dataset_no_eos";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";
  DatasetRow row;
  row.kind = DatasetRow::Kind::kCompletion;
  row.text = "ab";
  EXPECT_THAT([&] { render_row(row, "data.jsonl", *load_tokenizer(dir), RenderOptions{}); },
              ::testing::ThrowsMessage<UserError>(::testing::AllOf(
                  HasSubstr("tokenizer 'hf-bpe' (from '" + dir +
                            "/tokenizer.json'; no tokenizer_config.json) has no eos token"),
                  HasSubstr("\"eos_token\""))));
  std::ofstream(dir + "/tokenizer_config.json") << R"({"bos_token": "a"})";
  EXPECT_THAT([&] { render_row(row, "data.jsonl", *load_tokenizer(dir), RenderOptions{}); },
              ::testing::ThrowsMessage<UserError>(HasSubstr(
                  "/tokenizer.json' and '" + dir + "/tokenizer_config.json') has no eos token")));
}

// ---------------------------------------------------------------- reading rows

TEST(ReadDataset, JsonlAndJsonArrayGiveTheSameRowsWithTheirLines) {
  const std::string jsonl =
      "{\"instruction\": \"i1\", \"input\": \"x\", \"output\": \"o1\"}\n"
      "\n"
      "   \r\n"
      "{\"instruction\": \"i2\", \"output\": \"o2\"}\r\n";
  const std::string array =
      "\n  [\n"
      "  {\"instruction\": \"i1\",\n   \"input\": \"x\", \"output\": \"o1\"},\n"
      "\n"
      "  {\"instruction\": \"i[2,\\\"]\", \"input\": null,\n"
      "   \"output\": \"o2\"}\n"
      "]\n";
  Dataset a = parse_dataset("data.jsonl", jsonl, options(RowFormat::kAlpaca));
  Dataset b = parse_dataset("data.json", array, options(RowFormat::kAlpaca));
  ASSERT_EQ(a.rows.size(), 2u);
  ASSERT_EQ(b.rows.size(), 2u);
  EXPECT_EQ(a.rows[0].line, 1);
  EXPECT_EQ(a.rows[1].line, 4);
  EXPECT_EQ(b.rows[0].line, 3);
  EXPECT_EQ(b.rows[1].line, 6);
  for (const Dataset* d : {&a, &b}) {
    EXPECT_EQ(d->rows[0].kind, DatasetRow::Kind::kAlpaca);
    EXPECT_EQ(d->rows[0].alpaca.instruction, "i1");
    EXPECT_EQ(d->rows[0].alpaca.input, "x");
    EXPECT_EQ(d->rows[0].alpaca.output, "o1");
    EXPECT_EQ(d->rows[1].alpaca.input, "");
    EXPECT_EQ(d->rows[1].alpaca.output, "o2");
    EXPECT_EQ(d->summary.rows, 2);
    EXPECT_EQ(d->summary.skipped_total(), 0);
  }
  EXPECT_EQ(a.rows[1].alpaca.instruction, "i2");
  EXPECT_EQ(b.rows[1].alpaca.instruction, "i[2,\"]");
}

TEST(ReadDataset, ReadsAFileAndNamesAMissingOne) {
  const std::string path = ::testing::TempDir() + "ptrain_dataset_test.jsonl";
  std::ofstream(path) << "{\"text\": \"hello\"}\n";
  Dataset d = read_dataset(path, options(RowFormat::kCompletion));
  ASSERT_EQ(d.rows.size(), 1u);
  EXPECT_EQ(d.rows[0].text, "hello");
  EXPECT_EQ(d.path, path);
  std::filesystem::remove(path);
  EXPECT_THAT([&] { read_dataset(path, options(RowFormat::kCompletion)); },
              ::testing::ThrowsMessage<UserError>(HasSubstr(path)));
}

TEST(ReadDataset, ChatTemplateRowsWithDefaultAndCustomField) {
  Dataset d = parse_dataset("chat.jsonl",
                            "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, "
                            "{\"role\": \"user\", \"content\": \"u\"}, "
                            "{\"role\": \"assistant\", \"content\": \"a\"}]}\n",
                            options(RowFormat::kChatTemplate));
  ASSERT_EQ(d.rows.size(), 1u);
  EXPECT_EQ(d.rows[0].kind, DatasetRow::Kind::kConversation);
  ASSERT_EQ(d.rows[0].turns.size(), 3u);
  EXPECT_EQ(d.rows[0].turns[0].role, Role::kSystem);
  EXPECT_EQ(d.rows[0].turns[1].role, Role::kUser);
  EXPECT_EQ(d.rows[0].turns[2].role, Role::kAssistant);
  EXPECT_EQ(d.rows[0].turns[2].text, "a");
  Dataset c = parse_dataset("chat.jsonl", "{\"conv\": [{\"role\": \"user\", \"content\": \"q\"}]}",
                            options(RowFormat::kChatTemplate, false, "conv"));
  ASSERT_EQ(c.rows[0].turns.size(), 1u);
  EXPECT_EQ(c.rows[0].turns[0].text, "q");
}

TEST(ReadDataset, ShareGptRolesAreMapped) {
  Dataset d = parse_dataset("sg.jsonl",
                            "{\"conversations\": [{\"from\": \"system\", \"value\": \"s\"}, "
                            "{\"from\": \"human\", \"value\": \"h\"}, "
                            "{\"from\": \"gpt\", \"value\": \"g\"}, "
                            "{\"from\": \"user\", \"value\": \"u\"}, "
                            "{\"from\": \"assistant\", \"value\": \"a\"}]}",
                            options(RowFormat::kShareGpt));
  ASSERT_EQ(d.rows[0].turns.size(), 5u);
  const std::vector<Role> roles = {Role::kSystem, Role::kUser, Role::kAssistant, Role::kUser,
                                   Role::kAssistant};
  for (size_t i = 0; i < roles.size(); ++i) {
    EXPECT_EQ(d.rows[0].turns[i].role, roles[i]) << i;
  }
  EXPECT_EQ(d.rows[0].turns[2].text, "g");
  EXPECT_EQ(role_name(Role::kAssistant), "assistant");
}

TEST(ReadDataset, CompletionFieldIsConfigurable) {
  Dataset d =
      parse_dataset("c.jsonl", "{\"body\": \"x\"}", options(RowFormat::kCompletion, false, "body"));
  EXPECT_EQ(d.rows[0].text, "x");
  EXPECT_EQ(error_of(RowFormat::kCompletion, "{\"body\": \"x\"}"),
            "data.jsonl:1: missing field 'text'");
}

// ---------------------------------------------------------------- errors

TEST(ReadDatasetErrors, EveryMalformedRowNamesFileLineAndField) {
  const std::string ok = "{\"instruction\": \"i\", \"output\": \"o\"}\n";
  EXPECT_THAT(error_of(RowFormat::kAlpaca, ok + "{\"instruction\": \"i\", \"output\": 3}\n"),
              "data.jsonl:2: 'output' must be a string");
  EXPECT_THAT(error_of(RowFormat::kAlpaca, ok + ok + "{\"instruction\": \"i\"}\n"),
              "data.jsonl:3: missing field 'output'");
  EXPECT_THAT(error_of(RowFormat::kAlpaca, "{\"output\": \"o\"}"),
              "data.jsonl:1: missing field 'instruction'");
  EXPECT_THAT(error_of(RowFormat::kAlpaca,
                       "{\"instruction\": \"i\", \"input\": [], \"output\": "
                       "\"o\"}"),
              "data.jsonl:1: 'input' must be a string");
  EXPECT_THAT(error_of(RowFormat::kAlpaca, ok + "\n{\"instruction\": \"i\", "),
              StartsWith("data.jsonl:3: not valid JSON: "));
  EXPECT_THAT(error_of(RowFormat::kAlpaca, "[1, 2]\n"),
              "data.jsonl:1: a row must be a JSON object");
  EXPECT_THAT(error_of(RowFormat::kChatTemplate, "{\"messages\": \"hi\"}"),
              "data.jsonl:1: 'messages' must be a list");
  EXPECT_THAT(error_of(RowFormat::kChatTemplate, "{\"messages\": []}"),
              "data.jsonl:1: 'messages' is empty");
  EXPECT_THAT(error_of(RowFormat::kChatTemplate, "{\"msgs\": []}"),
              "data.jsonl:1: missing field 'messages'");
  EXPECT_THAT(error_of(RowFormat::kChatTemplate, "{\"messages\": [\"hi\"]}"),
              "data.jsonl:1: 'messages[0]' must be an object");
  EXPECT_THAT(error_of(RowFormat::kChatTemplate,
                       "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
                       "{\"role\": \"bot\", \"content\": \"a\"}]}"),
              "data.jsonl:1: 'messages[1].role': unknown role 'bot' (expected system, user, "
              "assistant, human or gpt)");
  EXPECT_THAT(error_of(RowFormat::kChatTemplate, "{\"messages\": [{\"content\": \"q\"}]}"),
              "data.jsonl:1: missing field 'messages[0].role'");
  EXPECT_THAT(error_of(RowFormat::kChatTemplate, "{\"messages\": [{\"role\": \"user\"}]}"),
              "data.jsonl:1: missing field 'messages[0].content'");
  EXPECT_THAT(
      error_of(RowFormat::kChatTemplate, "{\"messages\": [{\"role\": \"user\", \"content\": 1}]}"),
      "data.jsonl:1: 'messages[0].content' must be a string");
  EXPECT_THAT(error_of(RowFormat::kShareGpt,
                       "{\"conversations\": [{\"from\": \"bot\", \"value\": \"a\"}]}"),
              "data.jsonl:1: 'conversations[0].from': unknown role 'bot' (expected system, "
              "user, assistant, human or gpt)");
  EXPECT_THAT(error_of(RowFormat::kShareGpt, "{\"conversations\": [{\"from\": \"gpt\"}]}"),
              "data.jsonl:1: missing field 'conversations[0].value'");
  EXPECT_THAT(error_of(RowFormat::kShareGpt, "{\"conversations\": []}"),
              "data.jsonl:1: 'conversations' is empty");
  EXPECT_THAT(error_of(RowFormat::kCompletion, "{\"text\": null}"),
              "data.jsonl:1: 'text' must be a string");
}

TEST(ReadDatasetErrors, JsonArrayErrorsNameTheLineWhereTheRowStarts) {
  EXPECT_THAT(error_of(RowFormat::kCompletion, "[\n{\"text\": \"a\"},\n{\"text\":\n 5}\n]"),
              "data.jsonl:3: 'text' must be a string");
  EXPECT_THAT(error_of(RowFormat::kCompletion, "[{\"text\": \"a\"},\n{\"text\": \"b\"},\n]"),
              StartsWith("data.jsonl:3: not valid JSON: "));
  EXPECT_THAT(error_of(RowFormat::kCompletion, "[{\"text\": \"a\"},\n{\"text\": \"b\""),
              "data.jsonl:2: the JSON array is not closed with ']' (a truncated file?)");
  EXPECT_THAT(error_of(RowFormat::kCompletion, "[{\"text\": \"a\"}]\n{}"),
              "data.jsonl:2: unexpected text after the closing ']' of the JSON array");
}

TEST(ReadDatasetErrors, EmptyDatasetNamesTheFile) {
  EXPECT_EQ(error_of(RowFormat::kAlpaca, ""), "data.jsonl: the dataset has no rows");
  EXPECT_EQ(error_of(RowFormat::kAlpaca, "\n  \n"), "data.jsonl: the dataset has no rows");
  EXPECT_EQ(error_of(RowFormat::kAlpaca, " [ \n ] \n"), "data.jsonl: the dataset has no rows");
  EXPECT_THAT([] { parse_dataset("bad.jsonl", "{}\n", options(RowFormat::kAlpaca, true)); },
              ::testing::ThrowsMessage<UserError>(
                  "bad.jsonl: the dataset has no valid rows (1 invalid rows skipped)"));
}

TEST(ReadDatasetErrors, SkipInvalidRowsCountsEachReason) {
  const std::string text =
      "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n"
      "not json\n"
      "{\"messages\": [{\"role\": \"robot\", \"content\": \"q\"}]}\n"
      "{\"messages\": []}\n"
      "{\"other\": 1}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": 7}]}\n"
      "{\"messages\": 3}\n"
      "{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n";
  Dataset d = parse_dataset("data.jsonl", text, options(RowFormat::kChatTemplate, true));
  ASSERT_EQ(d.rows.size(), 2u);
  EXPECT_EQ(d.rows[0].line, 1);
  EXPECT_EQ(d.rows[1].line, 8);
  EXPECT_EQ(d.summary.rows, 2);
  EXPECT_EQ(d.summary.skipped_total(), 6);
  const std::map<std::string, int64_t> expected = {{"bad JSON", 1},
                                                   {"unknown role", 1},
                                                   {"empty conversation", 1},
                                                   {"missing field", 1},
                                                   {"wrong type", 2}};
  EXPECT_EQ(d.summary.skipped, expected);
}

TEST(ReadDataset, ChatTemplateMessageKeysAndShareGptRoleNamesAreConfigurable) {
  DatasetOptions o = options(RowFormat::kChatTemplate, false, "conversations");
  o.role_field = "from";
  o.content_field = "value";
  Dataset d = parse_dataset("data.jsonl",
                            "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, "
                            "{\"from\": \"gpt\", \"value\": \"a\"}]}\n",
                            o);
  ASSERT_EQ(d.rows.size(), 1u);
  ASSERT_EQ(d.rows[0].turns.size(), 2u);
  EXPECT_EQ(d.rows[0].turns[0].role, Role::kUser);
  EXPECT_EQ(d.rows[0].turns[1].role, Role::kAssistant);
  EXPECT_EQ(d.rows[0].turns[1].text, "a");
  EXPECT_THAT(
      [&] { parse_dataset("data.jsonl", "{\"conversations\": [{\"role\": \"user\"}]}", o); },
      ::testing::ThrowsMessage<UserError>("data.jsonl:1: missing field 'conversations[0].from'"));
}

TEST(ReadDatasetErrors, UnknownNamesListTheAcceptedOnes) {
  EXPECT_EQ(parse_row_format("sharegpt"), RowFormat::kShareGpt);
  EXPECT_EQ(row_format_name(RowFormat::kChatTemplate), "chat_template");
  EXPECT_THAT([] { parse_row_format("oasst"); },
              ::testing::ThrowsMessage<UserError>(
                  "unknown dataset type 'oasst' (expected alpaca, chat_template, sharegpt or "
                  "completion)"));
  EXPECT_EQ(parse_length_policy("drop"), LengthPolicy::kDrop);
  EXPECT_THAT([] { parse_length_policy("split"); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("unknown policy 'split'")));
}

// ---------------------------------------------------------------- sequence length

std::vector<TokenizedSample> length_samples() {
  // Lengths 3, 5, 4; labels as render_row gives them for completions.
  return {{{1, 10, 2}, {10, 2, kNo}},
          {{1, 10, 11, 12, 2}, {10, 11, 12, 2, kNo}},
          {{1, 20, 21, 2}, {20, 21, 2, kNo}}};
}

TEST(LengthPolicy, TruncateKeepsTheFirstTokensAndEndsLabelsWithIgnore) {
  std::vector<TokenizedSample> s = length_samples();
  LengthSummary summary = apply_length_policy(s, 4, LengthPolicy::kTruncate);
  EXPECT_EQ(summary.kept, 3);
  EXPECT_EQ(summary.truncated, 1);
  EXPECT_EQ(summary.dropped, 0);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].input_ids, (std::vector<int64_t>{1, 10, 2}));
  EXPECT_EQ(s[1].input_ids, (std::vector<int64_t>{1, 10, 11, 12}));
  EXPECT_EQ(s[1].labels, (std::vector<int64_t>{10, 11, 12, kNo}));
  EXPECT_EQ(s[2].input_ids, (std::vector<int64_t>{1, 20, 21, 2}));
  EXPECT_EQ(s[2].labels, (std::vector<int64_t>{20, 21, 2, kNo}));
}

TEST(LengthPolicy, DropRemovesLongSamplesAndKeepsOrder) {
  std::vector<TokenizedSample> s = length_samples();
  LengthSummary summary = apply_length_policy(s, 3, LengthPolicy::kDrop);
  EXPECT_EQ(summary.kept, 1);
  EXPECT_EQ(summary.truncated, 0);
  EXPECT_EQ(summary.dropped, 2);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].input_ids, (std::vector<int64_t>{1, 10, 2}));
  s = length_samples();
  summary = apply_length_policy(s, 4, LengthPolicy::kDrop);
  EXPECT_EQ(summary.dropped, 1);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].input_ids, (std::vector<int64_t>{1, 20, 21, 2}));
  EXPECT_THAT([&] { apply_length_policy(s, 0, LengthPolicy::kDrop); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("sequence_len must be positive")));
}

TEST(RenderDataset, RowsFromAFileBecomeSamples) {
  ByteTokenizer tok;
  Dataset d = parse_dataset("data.jsonl", "{\"text\": \"a\"}\n{\"text\": \"bc\"}\n",
                            options(RowFormat::kCompletion));
  std::vector<TokenizedSample> s = render_dataset(d, tok, RenderOptions{});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].input_ids, (std::vector<int64_t>{kBos, 'b' + 3, 'c' + 3, kEos}));
  Dataset chat = parse_dataset("chat.jsonl",
                               "\n{\"messages\": [{\"role\": \"user\", "
                               "\"content\": \"q\"}]}",
                               options(RowFormat::kChatTemplate));
  const RenderOptions chatml{false, "chatml"};
  EXPECT_THAT([&] { render_dataset(chat, tok, chatml); },
              ::testing::ThrowsMessage<UserError>(
                  StartsWith("chat.jsonl:2: the conversation ends with a user turn")));
}

}  // namespace
}  // namespace ptrain
