#include "data/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {
namespace {

// ---------------------------------------------------------------- known templates

// The Hugging Face templates each format reproduces, as the tokenizer_config.json files and
// Axolotl spell them; they render a conversation of string contents identically.
struct KnownTemplate {
  ChatFormat format;
  const char* jinja;
};

const KnownTemplate kKnownTemplates[] = {
    // Axolotl's chatml (src/axolotl/utils/chat_templates/templates/chatml.jinja).
    {ChatFormat::kChatMl,
     "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
     "{% endif %}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
     "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|im_start|>assistant\n' }}{% endif %}"},
    // The same without the first line (OpenHermes-2.5, Qwen1.5-Chat, SmolLM2-Instruct).
    {ChatFormat::kChatMl,
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
     "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|im_start|>assistant\n' }}{% endif %}"},
    // meta-llama/Meta-Llama-3-8B-Instruct.
    {ChatFormat::kLlama3,
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
     "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
     "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
     "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"},
    // Axolotl's llama3, older (the same with a first line) and current (list contents too).
    {ChatFormat::kLlama3,
     "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
     "{% endif %}{% set loop_messages = messages %}{% for message in loop_messages %}"
     "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
     "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
     "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"},
    {ChatFormat::kLlama3,
     "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
     "{% endif %}{% set loop_messages = messages %}{% for message in loop_messages %}"
     "{% if message['content'] is string %}{% set message_text = message['content'] | trim %}"
     "{% else %}{% set message_text = message['content'] | selectattr('text', 'defined') | "
     "map(attribute='text') | join('') | trim %}{% endif %}{% set content = "
     "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message_text + "
     "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
     "{{ content }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"},
    // meta-llama/Llama-2-7b-chat-hf (its string literals spell \n as an escape).
    {ChatFormat::kLlama2,
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
     R"({{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})"},
};

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Appends the string literal starting at t[i] (a quote) with its escapes decoded, delimited by
// \x01 whichever quote it used; returns the index after it.
size_t append_string_literal(std::string_view t, size_t i, std::string& out) {
  const char quote = t[i++];
  out += '\x01';
  while (i < t.size() && t[i] != quote) {
    if (t[i] != '\\' || i + 1 == t.size()) {
      out += t[i++];
      continue;
    }
    const char e = t[i + 1];
    const char decoded = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
    if (e == 'n' || e == 't' || e == 'r' || e == '\\' || e == '\'' || e == '"') {
      out += decoded;
    } else {
      out += t.substr(i, 2);
    }
    i += 2;
  }
  out += '\x01';
  return i + 1;
}

// The template with white space outside string literals, comments and trim marks ({%- -%} and
// {%+) dropped and string literals decoded: what decides how the templates compared here render.
std::string normalize_jinja(std::string_view t) {
  std::string out;
  size_t i = 0;
  while (i < t.size()) {
    const std::string_view rest = t.substr(i);
    if (rest.substr(0, 2) == "{#") {
      const size_t end = t.find("#}", i + 2);
      i = end == std::string_view::npos ? t.size() : end + 2;
      continue;
    }
    if (rest.substr(0, 2) != "{{" && rest.substr(0, 2) != "{%") {
      if (!is_ascii_space(t[i])) out += t[i];
      ++i;
      continue;
    }
    const std::string close = t[i + 1] == '{' ? "}}" : "%}";
    out += rest.substr(0, 2);
    i += 2;
    if (i < t.size() && (t[i] == '-' || t[i] == '+')) ++i;
    while (i < t.size()) {
      const char c = t[i];
      if (c == '\'' || c == '"') {
        i = append_string_literal(t, i, out);
      } else if (t.substr(i, 2) == close) {
        out += close;
        i += 2;
        break;
      } else if ((c == '-' || c == '+') && t.substr(i + 1, 2) == close) {
        ++i;
      } else {
        if (!is_ascii_space(c)) out += c;
        ++i;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- rendering helpers

// Python's str.strip() (what Jinja2's trim and a string's strip() call): white space is
// Unicode's White_Space and U+001C..U+001F.
std::string python_strip(std::string_view s) {
  auto is_space = [](uint32_t cp) {
    return is_unicode_white_space(cp) || (cp >= 0x1C && cp <= 0x1F);
  };
  size_t begin = 0;
  size_t end = 0;  // after the last non-space character
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const bool space = is_space(utf8_next(s, i));
    if (!space && end == 0) begin = start;
    if (!space) end = i;
  }
  return end == 0 ? std::string() : std::string(s.substr(begin, end - begin));
}

class PieceWriter {
 public:
  PieceWriter(ChatFormat format, const Tokenizer& tokenizer)
      : format_(format), tokenizer_(tokenizer) {}

  void text(std::string text, bool learned) {
    pieces_.push_back({std::move(text), std::nullopt, learned});
  }

  // A marker inserted by id; the byte tokenizer spells the ones it lacks as text.
  void marker(const std::string& spelling, bool learned) {
    std::optional<int64_t> id = tokenizer_.token_id(spelling);
    if (!id && tokenizer_.name() == "byte") return text(spelling, learned);
    PTRAIN_CHECK(id.has_value(),
                 "the {} chat template needs the token '{}', which {} does not have; use the "
                 "chat template the model was trained with (chat_template: chatml, llama3 or "
                 "llama2)",
                 chat_format_name(format_), spelling, tokenizer_.describe());
    pieces_.push_back({spelling, id, learned});
  }

  // bos or eos, as the template's bos_token and eos_token.
  void special(const std::optional<int64_t>& id, const char* what, bool learned) {
    PTRAIN_CHECK(id.has_value(), "the {} chat template needs a {} token, which {} does not have",
                 chat_format_name(format_), what, tokenizer_.describe());
    pieces_.push_back({tokenizer_.piece(*id), id, learned});
  }

  std::vector<ChatPiece> take() { return std::move(pieces_); }

 private:
  ChatFormat format_;
  const Tokenizer& tokenizer_;
  std::vector<ChatPiece> pieces_;
};

// ---------------------------------------------------------------- formats

void render_chatml(const std::vector<Turn>& turns, PieceWriter& out) {
  for (const Turn& turn : turns) {
    const bool answer = turn.role == Role::kAssistant;
    out.marker("<|im_start|>", false);
    out.text(role_name(turn.role) + "\n", false);
    out.text(turn.text, answer);
    out.marker("<|im_end|>", answer);
    out.text("\n", false);
  }
}

void render_llama3(const std::vector<Turn>& turns, const Tokenizer& tokenizer, PieceWriter& out) {
  out.special(tokenizer.bos_id, "bos", false);
  for (const Turn& turn : turns) {
    const bool answer = turn.role == Role::kAssistant;
    out.marker("<|start_header_id|>", false);
    out.text(role_name(turn.role), false);
    out.marker("<|end_header_id|>", false);
    out.text("\n\n", false);
    out.text(python_strip(turn.text), answer);
    out.marker("<|eot_id|>", answer);
  }
}

// Llama-2-chat's template raises unless the roles after an optional first system turn go user,
// assistant, user, ..., except for a later system turn at an odd position, which it drops
// silently; ptrain refuses that one too.
void check_llama2_roles(const std::vector<Turn>& turns, std::string_view where) {
  const size_t first = turns.front().role == Role::kSystem ? 1 : 0;
  for (size_t k = first; k < turns.size(); ++k) {
    const Role expected = (k - first) % 2 == 0 ? Role::kUser : Role::kAssistant;
    PTRAIN_CHECK(turns[k].role == expected,
                 "{}the llama2 chat template needs conversation roles that alternate "
                 "user/assistant/user/assistant/... after an optional first system turn, but turn "
                 "{} is {} where {} is expected",
                 where, k + 1, role_name(turns[k].role), role_name(expected));
  }
}

void render_llama2(const std::vector<Turn>& turns, const Tokenizer& tokenizer, PieceWriter& out) {
  const bool has_system = turns.front().role == Role::kSystem;
  for (size_t k = has_system ? 1 : 0; k < turns.size(); ++k) {
    const Turn& turn = turns[k];
    if (turn.role == Role::kUser) {
      const std::string content =
          has_system && k == 1 ? "<<SYS>>\n" + turns.front().text + "\n<</SYS>>\n\n" + turn.text
                               : turn.text;
      out.special(tokenizer.bos_id, "bos", false);
      out.text("[INST] " + python_strip(content) + " [/INST]", false);
    } else {
      out.text(" " + python_strip(turn.text) + " ", true);
      out.special(tokenizer.eos_id, "eos", true);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- formats by name

ChatFormat parse_chat_format(std::string_view name) {
  if (name == "chatml") return ChatFormat::kChatMl;
  if (name == "llama3") return ChatFormat::kLlama3;
  if (name == "llama2") return ChatFormat::kLlama2;
  throw UserError(fmt::format(
      "unknown chat_template '{}' (expected chatml, llama3, llama2 or tokenizer_default)", name));
}

std::string chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::kChatMl:
      return "chatml";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kLlama2:
      return "llama2";
  }
  PTRAIN_ASSERT(false, "chat format {}", static_cast<int>(format));
}

std::optional<ChatFormat> detect_chat_format(std::string_view jinja_template) {
  const std::string normalized = normalize_jinja(jinja_template);
  for (const KnownTemplate& known : kKnownTemplates) {
    if (normalize_jinja(known.jinja) == normalized) return known.format;
  }
  return std::nullopt;
}

ChatFormat resolve_chat_format(std::string_view name, const Tokenizer& tokenizer) {
  if (name != "tokenizer_default") return parse_chat_format(name);
  const std::string config =
      tokenizer.model_dir.empty()
          ? fmt::format("tokenizer '{}' (no tokenizer_config.json was read)", tokenizer.name())
          : fmt::format(
                "'{}'",
                (std::filesystem::path(tokenizer.model_dir) / "tokenizer_config.json").string());
  PTRAIN_CHECK(!tokenizer.chat_template.empty(),
               "chat_template is tokenizer_default, but {} has no chat_template; set "
               "`chat_template: chatml|llama3|llama2` in the config",
               config);
  const std::optional<ChatFormat> format = detect_chat_format(tokenizer.chat_template);
  PTRAIN_CHECK(format.has_value(),
               "chat_template is tokenizer_default, but the chat_template of {} is none of the "
               "templates ptrain renders (the Hugging Face templates of chatml, llama3 and llama2, "
               "compared ignoring white space); set `chat_template: chatml|llama3|llama2` in the "
               "config to render one of those instead",
               config);
  return *format;
}

// ---------------------------------------------------------------- rendering

std::vector<ChatPiece> render_chat(const std::vector<Turn>& turns, ChatFormat format,
                                   const Tokenizer& tokenizer, std::string_view where) {
  PTRAIN_CHECK(!turns.empty(), "{}the conversation has no turns", where);
  for (const Turn& turn : turns) {
    PTRAIN_CHECK(utf8_invalid_offset(turn.text) == std::string_view::npos,
                 "{}a {} turn's content is not valid UTF-8", where, role_name(turn.role));
  }
  if (format == ChatFormat::kLlama2) check_llama2_roles(turns, where);
  PTRAIN_CHECK(turns.back().role == Role::kAssistant,
               "{}the conversation ends with a {} turn; a chat sample must end with an assistant "
               "turn, which is what the model learns",
               where, role_name(turns.back().role));
  PieceWriter out(format, tokenizer);
  switch (format) {
    case ChatFormat::kChatMl:
      render_chatml(turns, out);
      break;
    case ChatFormat::kLlama3:
      render_llama3(turns, tokenizer, out);
      break;
    case ChatFormat::kLlama2:
      render_llama2(turns, tokenizer, out);
      break;
  }
  return out.take();
}

std::string chat_text(const std::vector<ChatPiece>& pieces) {
  std::string text;
  for (const ChatPiece& piece : pieces) text += piece.text;
  return text;
}

ChatTokens tokenize_chat(const std::vector<ChatPiece>& pieces, const Tokenizer& tokenizer) {
  ChatTokens out;
  auto append = [&](const std::vector<int64_t>& ids, size_t begin, size_t end, bool learned) {
    out.ids.insert(out.ids.end(), ids.begin() + begin, ids.begin() + end);
    out.learned.insert(out.learned.end(), end - begin, learned);
  };
  for (size_t i = 0; i < pieces.size();) {
    if (pieces[i].id) {
      out.ids.push_back(*pieces[i].id);
      out.learned.push_back(pieces[i].learned);
      ++i;
      continue;
    }
    // The run of text up to the next marker, and where in it the learned flag changes.
    auto encode = [&tokenizer, after_marker = i > 0](std::string_view s) {
      return after_marker ? tokenizer.encode_after_special(s) : tokenizer.encode(s);
    };
    std::string text;
    std::vector<std::pair<size_t, bool>> spans;  // (byte offset, learned) from there on
    for (; i < pieces.size() && !pieces[i].id; ++i) {
      if (spans.empty() || spans.back().second != pieces[i].learned)
        spans.emplace_back(text.size(), pieces[i].learned);
      text += pieces[i].text;
    }
    const std::vector<int64_t> ids = encode(text);
    size_t begin = 0;
    for (size_t s = 0; s < spans.size(); ++s) {
      size_t end = ids.size();
      if (s + 1 < spans.size()) {
        const std::vector<int64_t> before =
            encode(std::string_view(text).substr(0, spans[s + 1].first));
        const size_t common = std::min(before.size(), ids.size());
        end = std::mismatch(before.begin(), before.begin() + common, ids.begin()).first -
              before.begin();
        end = std::max(end, begin);
      }
      append(ids, begin, end, spans[s].second);
      begin = end;
    }
  }
  return out;
}

}  // namespace ptrain
