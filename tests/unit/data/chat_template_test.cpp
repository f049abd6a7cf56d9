// Chat templates against hand-computed expectations: with the byte tokenizer (ids = byte + 3, bos
// 1, eos 2) the ids follow from the rendered text written out below, segment by segment with the
// segments the model learns marked. (The rendering of real templates with real vocabularies is
// compared with @huggingface/jinja and tokenizers.js in tests/unit/tokenizer/reference/.)
#include "data/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/prompt.h"

namespace ptrain {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ::testing::ThrowsMessage;
using Ids = std::vector<int64_t>;

constexpr int64_t kBos = 1;
constexpr int64_t kEos = 2;
constexpr int64_t kNo = -100;

// The byte tokenizer's ids, computed independently of it.
Ids bytes(const std::string& text) {
  Ids ids;
  for (unsigned char c : text) ids.push_back(static_cast<int64_t>(c) + 3);
  return ids;
}

// A sample written out as segments of ids, each learned or not.
struct Segment {
  Ids ids;
  bool learned;
};

TokenizedSample expected(const std::vector<Segment>& segments, bool train_on_inputs) {
  TokenizedSample s;
  std::vector<bool> learned;
  for (const Segment& seg : segments) {
    s.input_ids.insert(s.input_ids.end(), seg.ids.begin(), seg.ids.end());
    learned.insert(learned.end(), seg.ids.size(), seg.learned || train_on_inputs);
  }
  for (size_t t = 0; t < s.input_ids.size(); ++t) {
    const bool next_learned = t + 1 < s.input_ids.size() && learned[t + 1];
    s.labels.push_back(next_learned ? s.input_ids[t + 1] : kNo);
  }
  return s;
}

// A system message, then two exchanges; contents with white space around them.
DatasetRow conversation() {
  DatasetRow row;
  row.kind = DatasetRow::Kind::kConversation;
  row.line = 4;
  row.turns = {{Role::kSystem, " Be brief.\n"},
               {Role::kUser, "Hi "},
               {Role::kAssistant, "\tHello.  "},
               {Role::kUser, "And?"},
               {Role::kAssistant, "Bye."}};
  return row;
}

TokenizedSample render(const DatasetRow& row, const Tokenizer& tok, const std::string& format,
                       bool train_on_inputs = false) {
  RenderOptions options;
  options.train_on_inputs = train_on_inputs;
  options.chat_template = format;
  return render_row(row, "chat.jsonl", tok, options);
}

void expect_sample(const TokenizedSample& got, const TokenizedSample& want) {
  EXPECT_EQ(got.input_ids, want.input_ids);
  EXPECT_EQ(got.labels, want.labels);
}

// ---------------------------------------------------------------- the three formats

// chatml: contents as given, no bos (the byte tokenizer's add_bos is ignored), no system turn
// added, the "\n" after <|im_end|> not learned.
std::vector<Segment> chatml_segments() {
  return {{bytes("<|im_start|>system\n Be brief.\n<|im_end|>\n<|im_start|>user\nHi <|im_end|>\n"
                 "<|im_start|>assistant\n"),
           false},
          {bytes("\tHello.  <|im_end|>"), true},
          {bytes("\n<|im_start|>user\nAnd?<|im_end|>\n<|im_start|>assistant\n"), false},
          {bytes("Bye.<|im_end|>"), true},
          {bytes("\n"), false}};
}

TEST(ChatTemplate, ChatMlLearnsAnswersAndImEnd) {
  ByteTokenizer tok;
  expect_sample(render(conversation(), tok, "chatml"), expected(chatml_segments(), false));
  expect_sample(render(conversation(), tok, "chatml", true), expected(chatml_segments(), true));
}

// llama3: bos, contents trimmed, <|eot_id|> learned.
std::vector<Segment> llama3_segments() {
  return {{{kBos}, false},
          {bytes("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n"),
           false},
          {bytes("Hello.<|eot_id|>"), true},
          {bytes("<|start_header_id|>user<|end_header_id|>\n\nAnd?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n"),
           false},
          {bytes("Bye.<|eot_id|>"), true}};
}

TEST(ChatTemplate, Llama3LearnsTrimmedAnswersAndEotId) {
  ByteTokenizer tok;
  expect_sample(render(conversation(), tok, "llama3"), expected(llama3_segments(), false));
  expect_sample(render(conversation(), tok, "llama3", true), expected(llama3_segments(), true));
}

// llama2: the system turn folded into the first user turn before the strip (its own leading
// space stays), bos and eos by id, " answer " and </s> learned.
std::vector<Segment> llama2_segments() {
  return {{{kBos}, false},
          {bytes("[INST] <<SYS>>\n Be brief.\n\n<</SYS>>\n\nHi [/INST]"), false},
          {bytes(" Hello. "), true},
          {{kEos}, true},
          {{kBos}, false},
          {bytes("[INST] And? [/INST]"), false},
          {bytes(" Bye. "), true},
          {{kEos}, true}};
}

TEST(ChatTemplate, Llama2FoldsTheSystemTurnAndLearnsAnswersAndEos) {
  ByteTokenizer tok;
  expect_sample(render(conversation(), tok, "llama2"), expected(llama2_segments(), false));
  expect_sample(render(conversation(), tok, "llama2", true), expected(llama2_segments(), true));
}

TEST(ChatTemplate, TextIsWhatTheTemplateRenders) {
  ByteTokenizer tok;
  const DatasetRow row = conversation();
  EXPECT_EQ(chat_text(render_chat(row.turns, ChatFormat::kLlama2, tok, "")),
            "<s>[INST] <<SYS>>\n Be brief.\n\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] And? "
            "[/INST] Bye. </s>");
  // Python's strip: U+3000 and U+001F are white space, U+200B is not.
  const std::vector<Turn> turns = {{Role::kUser, "\u3000x\x1f"}, {Role::kAssistant, "\u200by "}};
  EXPECT_EQ(chat_text(render_chat(turns, ChatFormat::kLlama3, tok, "")),
            "<s><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|><|start_header_id|>"
            "assistant<|end_header_id|>\n\n\u200by<|eot_id|>");
  // An empty system message still opens a <<SYS>> block ('' != false in Jinja2), and an empty
  // user message lets the strip eat the block's trailing newlines.
  const std::vector<Turn> empty = {{Role::kSystem, ""}, {Role::kUser, " "}, {Role::kAssistant, ""}};
  EXPECT_EQ(chat_text(render_chat(empty, ChatFormat::kLlama2, tok, "")),
            "<s>[INST] <<SYS>>\n\n<</SYS>> [/INST]  </s>");
}

TEST(ChatTemplate, EmptyAnswerLearnsOnlyItsEndMarker) {
  ByteTokenizer tok;
  DatasetRow row = conversation();
  row.turns = {{Role::kUser, "q"}, {Role::kAssistant, ""}};
  expect_sample(render(row, tok, "chatml"),
                expected({{bytes("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"), false},
                          {bytes("<|im_end|>"), true},
                          {bytes("\n"), false}},
                         false));
}

// ---------------------------------------------------------------- markers by id

// The byte tokenizer with chatml's markers as ids 300 and 301, and "\n\n" as one token (400), to
// see markers inserted by id and a token spanning the start of an answer.
class MarkerTokenizer : public ByteTokenizer {
 public:
  std::string name() const override { return "marker-test"; }
  std::vector<int64_t> encode(std::string_view text) const override {
    Ids ids;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text.substr(i, 2) == "\n\n") {
        ids.push_back(400);
        ++i;
      } else {
        ids.push_back(static_cast<unsigned char>(text[i]) + 3);
      }
    }
    return ids;
  }
  std::optional<int64_t> token_id(std::string_view piece) const override {
    if (piece == "<|im_start|>") return 300;
    if (piece == "<|im_end|>") return 301;
    return ByteTokenizer::token_id(piece);
  }
  std::string piece(int64_t id) const override {
    return id == 300 ? "<|im_start|>" : id == 301 ? "<|im_end|>" : ByteTokenizer::piece(id);
  }
};

TEST(ChatTemplate, MarkersAreInsertedByIdAndASpanningTokenBelongsToTheAnswer) {
  MarkerTokenizer tok;
  DatasetRow row = conversation();
  row.turns = {{Role::kUser, "<|im_end|>"}, {Role::kAssistant, "\nok"}};
  // The user's text spelling a marker stays text; "assistant\n" + "\nok" is encoded as one string,
  // whose "\n\n" token starts the answer.
  expect_sample(render(row, tok, "chatml"), expected({{{300}, false},
                                                      {bytes("user\n<|im_end|>"), false},
                                                      {{301}, false},
                                                      {bytes("\n"), false},
                                                      {{300}, false},
                                                      {bytes("assistant"), false},
                                                      {{400}, true},
                                                      {bytes("ok"), true},
                                                      {{301}, true},
                                                      {bytes("\n"), false}},
                                                     false));
}

TEST(ChatTemplate, AMarkerTheTokenizerLacksIsAnErrorNamingItTheTokenizerAndTheFormat) {
  MarkerTokenizer tok;
  tok.model_dir = "models/m";
  const DatasetRow row = conversation();
  EXPECT_THAT([&] { render(row, tok, "llama3"); },
              ThrowsMessage<UserError>(
                  HasSubstr("the llama3 chat template needs the token '<|start_header_id|>', "
                            "which tokenizer 'marker-test' (from 'models/m') does not have")));
  tok.bos_id.reset();
  EXPECT_THAT([&] { render(row, tok, "llama2"); },
              ThrowsMessage<UserError>(HasSubstr(
                  "the llama2 chat template needs a bos token, which tokenizer 'marker-test'")));
}

// ---------------------------------------------------------------- conversations refused

TEST(ChatTemplate, AConversationMustEndWithAnAssistantTurn) {
  ByteTokenizer tok;
  DatasetRow row = conversation();
  row.turns.pop_back();
  for (const char* format : {"chatml", "llama3", "llama2"}) {
    EXPECT_THAT([&] { render(row, tok, format); },
                ThrowsMessage<UserError>(StartsWith(
                    "chat.jsonl:4: the conversation ends with a user turn; a chat sample must end "
                    "with an assistant turn")));
  }
}

TEST(ChatTemplate, Llama2RolesMustAlternateAfterAnOptionalSystemTurn) {
  ByteTokenizer tok;
  DatasetRow row = conversation();
  auto error_at = [&](const char* what) {
    return ThrowsMessage<UserError>(
        AllOf(StartsWith("chat.jsonl:4: the llama2 chat template needs conversation roles that "
                         "alternate user/assistant/user/assistant/..."),
              HasSubstr(what)));
  };
  row.turns = {{Role::kSystem, "s"}, {Role::kAssistant, "a"}};
  EXPECT_THAT([&] { render(row, tok, "llama2"); },
              error_at("turn 2 is assistant where user is expected"));
  row.turns = {
      {Role::kUser, "u"}, {Role::kAssistant, "a"}, {Role::kSystem, "s"}, {Role::kAssistant, "a"}};
  EXPECT_THAT([&] { render(row, tok, "llama2"); },
              error_at("turn 3 is system where user is expected"));
  row.turns = {{Role::kUser, "u"}, {Role::kUser, "u"}, {Role::kAssistant, "a"}};
  EXPECT_THAT([&] { render(row, tok, "llama2"); },
              error_at("turn 2 is user where assistant is expected"));
  // chatml and llama3 render any order, as their templates do.
  EXPECT_NO_THROW(render(row, tok, "chatml"));
  EXPECT_NO_THROW(render(row, tok, "llama3"));
}

// ---------------------------------------------------------------- choosing the format

// Llama-2-7b-chat-hf's, as its tokenizer_config.json spells it.
const char kLlama2Template[] =
    R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %})"
    R"({% set system_message = messages[0]['content'] %}{% else %})"
    R"({% set loop_messages = messages %}{% set system_message = false %}{% endif %})"
    R"({% for message in loop_messages %})"
    R"({% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %})"
    R"({{ raise_exception('Conversation roles must alternate )"
    R"(user/assistant/user/assistant/...') }})"
    R"({% endif %}{% if loop.index0 == 0 and system_message != false %})"
    R"({% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + )"
    R"(message['content'] %})"
    R"({% else %}{% set content = message['content'] %}{% endif %})"
    R"({% if message['role'] == 'user' %})"
    R"({{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }})"
    R"({% elif message['role'] == 'assistant' %})"
    R"({{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

// Qwen2-Instruct's: chatml markers, but a default system turn.
const char kQwen2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

TEST(ChatTemplate, KnownTemplatesAreDetectedWhateverTheirLayout) {
  EXPECT_EQ(detect_chat_format(kLlama2Template), ChatFormat::kLlama2);
  // The same template over several lines, with trim marks, a comment and double quotes.
  EXPECT_EQ(detect_chat_format(
                "{#- chatml -#}\n{%- for message in messages %}\n  {{- \"<|im_start|>\" + "
                "message['role'] + \"\\n\" + message['content'] + '<|im_end|>' + '\n' }}\n"
                "{%- endfor %}\n{%- if add_generation_prompt %}\n  {{- '<|im_start|>assistant\\n' "
                "-}}\n{%- endif %}\n"),
            ChatFormat::kChatMl);
  EXPECT_EQ(detect_chat_format(
                "{% set loop_messages = messages %}{% for message in loop_messages %}{% set "
                "content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
                "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set "
                "content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
                "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' "
                "}}{% endif %}"),
            ChatFormat::kLlama3);
  // White space inside a string literal counts.
  std::string changed = kLlama2Template;
  changed.replace(changed.find("' [/INST]'"), 10, "'  [/INST]'");
  EXPECT_EQ(detect_chat_format(changed), std::nullopt);
  EXPECT_EQ(detect_chat_format(kQwen2Template), std::nullopt);
  EXPECT_EQ(detect_chat_format(""), std::nullopt);
}

TEST(ChatTemplate, TokenizerDefaultUsesTheModelsTemplateOrSaysWhatToSet) {
  ByteTokenizer tok;
  const DatasetRow row = conversation();
  EXPECT_THAT([&] { render(row, tok, "tokenizer_default"); },
              ThrowsMessage<UserError>(
                  AllOf(HasSubstr("chat_template is tokenizer_default, but tokenizer 'byte' (no "
                                  "tokenizer_config.json was read) has no chat_template"),
                        HasSubstr("set `chat_template: chatml|llama3|llama2` in the config"))));
  tok.model_dir = "models/tiny";
  tok.chat_template = kQwen2Template;
  EXPECT_THAT([&] { render(row, tok, "tokenizer_default"); },
              ThrowsMessage<UserError>(AllOf(
                  HasSubstr("the chat_template of 'models/tiny/tokenizer_config.json' is none of "
                            "the templates ptrain renders"),
                  HasSubstr("set `chat_template: chatml|llama3|llama2` in the config"))));
  tok.chat_template = kLlama2Template;
  expect_sample(render(row, tok, "tokenizer_default"), expected(llama2_segments(), false));
  // An explicit name wins over the model's template.
  expect_sample(render(row, tok, "chatml"), expected(chatml_segments(), false));
}

TEST(ChatTemplate, UnknownNamesAreErrorsListingTheAcceptedOnes) {
  ByteTokenizer tok;
  EXPECT_THAT([&] { render(conversation(), tok, "vicuna"); },
              ThrowsMessage<UserError>(
                  HasSubstr("unknown chat_template 'vicuna' (expected chatml, llama3, llama2 or "
                            "tokenizer_default)")));
  EXPECT_EQ(parse_chat_format("llama3"), ChatFormat::kLlama3);
  EXPECT_EQ(chat_format_name(ChatFormat::kChatMl), "chatml");
}

// ---------------------------------------------------------------- tokenizer lookups

class TempDir {
 public:
  explicit TempDir(const std::string& name) : path_(::testing::TempDir() + name) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  void write(const std::string& file, const std::string& text) const {
    std::ofstream(path_ + "/" + file) << text;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(TokenizerLookup, ByteTokenizerKnowsItsSpecialsAndBytes) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.token_id("<pad>"), 0);
  EXPECT_EQ(tok.token_id("<s>"), kBos);
  EXPECT_EQ(tok.token_id("</s>"), kEos);
  EXPECT_EQ(tok.token_id("<0x0A>"), '\n' + 3);
  EXPECT_EQ(tok.token_id("<0x0a>"), std::nullopt);
  EXPECT_EQ(tok.token_id("a"), std::nullopt);
  EXPECT_EQ(tok.token_id("<|im_start|>"), std::nullopt);
}

TEST(TokenizerLookup, HfTokenizerFindsAddedTokensAndVocabularyEntries) {
  TempDir dir("ptrain_chat_hf");
  nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}},
      {"added_tokens",
       {{{"id", 3}, {"content", "<|im_start|>"}, {"special", true}},
        {{"id", 4}, {"content", "<tool>"}, {"special", false}}}}};
  dir.write("tokenizer.json", j.dump());
  dir.write("tokenizer_config.json", nlohmann::json({{"chat_template", kLlama2Template}}).dump());
  const auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->token_id("ab"), 2);
  EXPECT_EQ(tok->token_id("<|im_start|>"), 3);
  EXPECT_EQ(tok->token_id("<tool>"), 4);
  EXPECT_EQ(tok->token_id("ba"), std::nullopt);
  EXPECT_EQ(tok->chat_template, kLlama2Template);
  EXPECT_EQ(tok->model_dir, dir.path());
}

// Metaspace with prepend_scheme "first" prepends "▁" only at the start of the whole text, so text
// after a marker encodes without it (as tokenizers encodes the stretch after an added token).
TEST(TokenizerLookup, TextAfterASpecialTokenGetsNoFirstOnlyPrefix) {
  TempDir dir("ptrain_chat_metaspace");
  nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"▁", 1}, {"▁a", 2}}}, {"merges", {"▁ a"}}}},
      {"pre_tokenizer",
       {{"type", "Metaspace"},
        {"replacement", "▁"},
        {"prepend_scheme", "first"},
        {"split", false}}},
      {"added_tokens", {{{"id", 3}, {"content", "<|im_start|>"}, {"special", true}}}}};
  dir.write("tokenizer.json", j.dump());
  const auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->encode("a a"), (Ids{2, 2}));
  EXPECT_EQ(tok->encode_after_special("a a"), (Ids{0, 2}));
  ByteTokenizer bytes_tok;
  EXPECT_EQ(bytes_tok.encode_after_special("a"), bytes("a"));
}

TEST(TokenizerLookup, ChatTemplateComesFromTheConfigStringOrItsDefaultEntry) {
  TempDir dir("ptrain_chat_config");
  nlohmann::json config = nlohmann::json::parse(byte_tokenizer_config_json());
  dir.write("tokenizer_config.json", config.dump());
  EXPECT_EQ(load_tokenizer(dir.path())->chat_template, "");
  config["chat_template"] = {{{"name", "tool_use"}, {"template", "T"}},
                             {{"name", "default"}, {"template", kQwen2Template}}};
  dir.write("tokenizer_config.json", config.dump());
  EXPECT_EQ(load_tokenizer(dir.path())->chat_template, kQwen2Template);
  config["chat_template"] = {{{"name", "tool_use"}, {"template", "T"}}};
  dir.write("tokenizer_config.json", config.dump());
  EXPECT_EQ(load_tokenizer(dir.path())->chat_template, "");
}

// SentencePiece: the ids spm_encode gives the user-defined markers, and the CONTROL pieces <s> and
// </s>, which spm_encode never produces from text.
TEST(TokenizerLookup, SentencePieceFindsEveryPieceTypeAsSpmEncodeNumbersThem) {
  ASSERT_EQ(std::system("command -v spm_train >/dev/null 2>&1 && command -v spm_encode "
                        ">/dev/null 2>&1"),
            0)
      << "spm_train and spm_encode are needed (scripts/install-deps.sh installs them)";
  TempDir dir("ptrain_chat_spm");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "hello world number " + std::to_string(i) + " of many\n";
  dir.write("train.txt", text);
  const std::string prefix = dir.path() + "/tokenizer";
  ASSERT_EQ(std::system(("spm_train --input=" + dir.path() + "/train.txt --model_prefix=" + prefix +
                         " --vocab_size=60 --hard_vocab_limit=false --num_threads=1 "
                         "--user_defined_symbols='<|im_start|>,<|im_end|>' >/dev/null 2>&1")
                            .c_str()),
            0);
  ASSERT_EQ(std::system(("printf '<|im_start|><|im_end|>' | spm_encode --model=" + prefix +
                         ".model --output_format=id >" + prefix + ".ids")
                            .c_str()),
            0);
  std::ifstream in(prefix + ".ids");
  Ids spm;  // "▁" (the dummy prefix), then the two markers
  for (int64_t id; in >> id;) spm.push_back(id);
  ASSERT_EQ(spm.size(), 3u);
  const auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->token_id("<|im_start|>"), spm[1]);
  EXPECT_EQ(tok->token_id("<|im_end|>"), spm[2]);
  EXPECT_EQ(tok->token_id("<s>"), tok->bos_id);
  EXPECT_EQ(tok->token_id("</s>"), tok->eos_id);
  EXPECT_EQ(tok->token_id("<unk>"), 0);
  EXPECT_EQ(tok->token_id("<|eot_id|>"), std::nullopt);
  // chatml on it: markers by id, the text between them through encode().
  DatasetRow row = conversation();
  row.turns = {{Role::kUser, "hello"}, {Role::kAssistant, "world"}};
  Ids want;
  for (const char* text : {"user\nhello", "assistant\nworld"}) {
    want.push_back(spm[1]);
    for (const Ids& ids : {tok->encode(text), Ids{spm[2]}, tok->encode("\n")})
      want.insert(want.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(render(row, *tok, "chatml").input_ids, want);
}

}  // namespace
}  // namespace ptrain
