#include "tokenizer/hf_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "core/error.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

// ---------------------------------------------------------------- Oniguruma -> PCRE2 translation

namespace {

bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

class OnigTranslator {
 public:
  OnigTranslator(const std::string& pattern, const std::string& where)
      : p_(pattern), where_(where) {}

  std::string run() {
    while (i_ < p_.size()) {
      const char c = p_[i_];
      if (c == '\\') {
        escape();
      } else if (in_class_) {
        class_char();
      } else if (c == '[') {
        open_class();
      } else if (c == '(') {
        group();
      } else if (c == '{') {
        interval();
      } else {
        out_.push_back(c);
        ++i_;
      }
    }
    if (in_class_) fail("an unterminated character class");
    return out_;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw UserError(fmt::format(
        "{}: the regular expression '{}' uses {} (at offset {}), which ptrain cannot match as "
        "Hugging Face tokenizers (Oniguruma) does",
        where_, p_, what, i_));
  }

  void open_class() {
    in_class_ = true;
    out_.push_back('[');
    ++i_;
    if (i_ < p_.size() && p_[i_] == '^') {
      out_.push_back('^');
      ++i_;
    }
    if (i_ < p_.size() && p_[i_] == ']') {  // a leading ']' is a literal in both syntaxes
      out_ += "\\]";
      ++i_;
    }
  }

  void class_char() {
    const char c = p_[i_];
    if (c == '[') fail("a nested character class or POSIX bracket");
    if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&') fail("class intersection '&&'");
    if (c == ']') in_class_ = false;
    out_.push_back(c);
    ++i_;
  }

  void group() {
    out_.push_back('(');
    ++i_;
    if (i_ >= p_.size() || p_[i_] != '?') return;
    out_.push_back('?');
    ++i_;
    if (i_ >= p_.size()) fail("an unterminated group");
    const char c = p_[i_];
    if (c == ':' || c == '=' || c == '!' || c == '>' || c == '#') return;
    if (c == '<') {  // lookbehind or named group: same syntax in both
      return;
    }
    // Option letters: Ruby's 'm' is dot-all (PCRE2's 's'); 'i' and 'x' mean the same.
    while (i_ < p_.size() && p_[i_] != ':' && p_[i_] != ')') {
      const char o = p_[i_];
      if (o == 'i' || o == 'x' || o == '-') {
        out_.push_back(o);
      } else if (o == 'm') {
        out_.push_back('s');
      } else {
        fail(fmt::format("the group option '{}'", o));
      }
      ++i_;
    }
    if (i_ >= p_.size()) fail("an unterminated group");
  }

  // Ruby's {,n} is {0,n}; Ruby's "{n}?" is an optional {n} and "{n,m}+" a repeated interval,
  // where PCRE2 reads them as lazy and possessive: refused.
  void interval() {
    size_t j = i_ + 1;
    const size_t lo_start = j;
    while (j < p_.size() && is_digit(p_[j])) ++j;
    const bool has_lo = j > lo_start;
    bool comma = false, has_hi = false;
    if (j < p_.size() && p_[j] == ',') {
      comma = true;
      const size_t hi_start = ++j;
      while (j < p_.size() && is_digit(p_[j])) ++j;
      has_hi = j > hi_start;
    }
    if (j >= p_.size() || p_[j] != '}' || (!has_lo && !has_hi)) {  // not an interval: literal
      out_ += "\\{";
      ++i_;
      return;
    }
    std::string body = p_.substr(i_ + 1, j - i_ - 1);
    if (!has_lo) body = "0" + body;
    out_ += "{" + body + "}";
    i_ = j + 1;
    if (i_ < p_.size() && ((p_[i_] == '?' && !comma) || p_[i_] == '+'))
      fail(fmt::format("an interval followed by '{}'", p_[i_]));
  }

  void escape() {
    if (i_ + 1 >= p_.size()) fail("a trailing backslash");
    const char c = p_[i_ + 1];
    const auto uc = static_cast<unsigned char>(c);
    i_ += 2;
    if (uc >= 0x80 || !std::isalnum(uc)) {  // an escaped symbol is that symbol in both
      out_.push_back('\\');
      out_.push_back(c);
      if (uc >= 0x80) {  // copy the rest of a multi-byte character
        for (size_t k = 1; k < utf8_char_len(uc) && i_ < p_.size(); ++k) out_.push_back(p_[i_++]);
      }
      return;
    }
    switch (c) {
      case 'd':
        out_ += "\\p{Nd}";
        return;
      case 'D':
        out_ += "\\P{Nd}";
        return;
      case 's':
        out_ += "\\p{White_Space}";
        return;
      case 'S':
        out_ += "\\P{White_Space}";
        return;
      case 'n':
      case 'r':
      case 't':
      case 'f':
      case 'a':
      case 'e':
        out_.push_back('\\');
        out_.push_back(c);
        return;
      case 'v':
        out_ += "\\x{0B}";
        return;
      case 'A':
      case 'z':
      case 'Z':
        if (in_class_) fail(fmt::format("'\\{}' inside a character class", c));
        out_.push_back('\\');
        out_.push_back(c);
        return;
      case 'x':
        hex_escape();
        return;
      case 'u': {
        if (i_ + 4 > p_.size() || !is_hex(p_[i_]) || !is_hex(p_[i_ + 1]) || !is_hex(p_[i_ + 2]) ||
            !is_hex(p_[i_ + 3]))
          fail("'\\u' without four hex digits");
        out_ += "\\x{" + p_.substr(i_, 4) + "}";
        i_ += 4;
        return;
      }
      case 'p':
      case 'P': {
        if (i_ >= p_.size() || p_[i_] != '{') fail(fmt::format("'\\{}' without braces", c));
        const size_t close = p_.find('}', i_);
        if (close == std::string::npos) fail("an unterminated property");
        out_.push_back('\\');
        out_.push_back(c);
        out_ += p_.substr(i_, close - i_ + 1);
        i_ = close + 1;
        return;
      }
      default:
        fail(fmt::format("'\\{}'", c));
    }
  }

  void hex_escape() {
    if (i_ < p_.size() && p_[i_] == '{') {
      const size_t close = p_.find('}', i_);
      if (close == std::string::npos) fail("an unterminated '\\x{'");
      out_ += "\\x" + p_.substr(i_, close - i_ + 1);
      i_ = close + 1;
      return;
    }
    size_t n = 0;
    while (n < 2 && i_ + n < p_.size() && is_hex(p_[i_ + n])) ++n;
    if (n == 0) fail("'\\x' without hex digits");
    out_ += "\\x{" + p_.substr(i_, n) + "}";
    i_ += n;
  }

  const std::string& p_;
  const std::string& where_;
  std::string out_;
  size_t i_ = 0;
  bool in_class_ = false;
};

}  // namespace

std::string onig_to_pcre2(const std::string& pattern, const std::string& where) {
  return OnigTranslator(pattern, where).run();
}

// ---------------------------------------------------------------- PCRE2 matching

struct HfRegex::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string pattern;  // as the file spells it, and where it sits, for errors
  std::string where;
  ~Compiled() { pcre2_code_free(code); }
};

namespace {

// PCRE2 gives up on a search after kMatchLimitPerByte steps per byte of text left to search (at
// least PCRE2's default of 10 million). Tokenizer patterns cost about one step per byte at most
// (Llama 3's `\s*[\r\n]+` backtracks over a whole run of spaces: a fixed limit of 10 million
// failed on a text with a 10 MB run of them); a pattern with nested repetition, such as `(a+)+$`,
// needs exponentially many steps on some texts, and fails fast with the limit.
constexpr uint32_t kMatchLimitPerByte = 16;
constexpr uint32_t kMinMatchLimit = 10000000;

// Per-thread match state: match data with room for the whole match, and a JIT stack (used by
// groups, not by repeated characters or classes, so a released tokenizer's patterns need little).
struct ThreadMatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  ThreadMatchState() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~ThreadMatchState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& match_state() {
  thread_local ThreadMatchState state;
  return state;
}

// Limits on the memory a search may use: the JIT stack, the interpreter's backtracking frames.
bool is_memory_limit(int rc) {
  return rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
         rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_NOMEMORY;
}

std::string pcre2_message(int rc) {
  PCRE2_UCHAR message[256];
  pcre2_get_error_message(rc, message, sizeof(message));
  return reinterpret_cast<const char*>(message);
}

// Searches from `start`; true with the match's offsets when there is one.
bool search(const HfRegex::Compiled& re, std::string_view text, size_t start, uint32_t options,
            size_t& match_start, size_t& match_end) {
  ThreadMatchState& state = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const uint64_t scaled = uint64_t{kMatchLimitPerByte} * (text.size() - start);
  pcre2_set_match_limit(state.context,
                        static_cast<uint32_t>(std::min<uint64_t>(
                            std::max<uint64_t>(kMinMatchLimit, scaled), UINT32_MAX)));
  // The subject was validated once (encode checks its input), so PCRE2 need not re-check it.
  options |= PCRE2_NO_UTF_CHECK;
  // pcre2_jit_match takes no PCRE2_ANCHORED; pcre2_match runs such a search interpreted.
  const int rc =
      re.jit && (options & PCRE2_ANCHORED) == 0
          ? pcre2_jit_match(re.code, subject, text.size(), start, options, state.data,
                            state.context)
          : pcre2_match(re.code, subject, text.size(), start, options, state.data, state.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc == PCRE2_ERROR_MATCHLIMIT)
    throw UserError(fmt::format(
        "{}: the regular expression '{}' gave up on a text of {} bytes ({}): it backtracks too "
        "much, as nested repetition such as '(a+)+' does on some texts; rewrite it without "
        "nested repetition, or use the tokenizer.json the model was released with",
        re.where, re.pattern, text.size(), pcre2_message(rc)));
  if (is_memory_limit(rc))
    throw UserError(fmt::format(
        "{}: the regular expression '{}' ran out of matching memory on a text of {} bytes ({}): "
        "a repeated group such as '(?:a|b)+' keeps state for every repetition; repeat a "
        "character class instead ('[ab]+'), or use the tokenizer.json the model was released "
        "with",
        re.where, re.pattern, text.size(), pcre2_message(rc)));
  PTRAIN_ASSERT(rc >= 0, "{}: matching '{}' failed: {}", re.where, re.pattern, pcre2_message(rc));
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
  match_start = ovector[0];
  match_end = ovector[1];
  return true;
}

}  // namespace

HfRegex HfRegex::from_pattern(const std::string& pattern, const std::string& where) {
  const std::string translated = onig_to_pcre2(pattern, where);
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, context);
  pcre2_compile_context_free(context);
  if (code == nullptr)
    throw UserError(fmt::format("{}: the regular expression '{}' does not compile: {}", where,
                                pattern, pcre2_message(error)));
  HfRegex re;
  re.compiled_ = std::make_unique<Compiled>();
  re.compiled_->code = code;
  re.compiled_->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  re.compiled_->pattern = pattern;
  re.compiled_->where = where;
  return re;
}

HfRegex HfRegex::from_literal(const std::string& text, const std::string& where) {
  PTRAIN_CHECK(!text.empty(), "{}: an empty String pattern is not supported", where);
  HfRegex re;
  re.literal_ = text;
  return re;
}

HfRegex::HfRegex(HfRegex&&) noexcept = default;
HfRegex& HfRegex::operator=(HfRegex&&) noexcept = default;
HfRegex::~HfRegex() = default;

void HfRegex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  if (!compiled_) {
    for (size_t pos = text.find(literal_); pos != std::string_view::npos;
         pos = text.find(literal_, pos + literal_.size()))
      out.emplace_back(pos, pos + literal_.size());
    return;
  }
  // rust-onig's FindMatches: search from the end of the last match; an empty match that ends
  // where the previous match ended is skipped by stepping one character.
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    size_t s = 0, e = 0;
    if (!search(*compiled_, text, last_end, 0, s, e)) break;
    if (s == e && have_last && last_match_end == e) {
      last_end +=
          last_end < text.size() ? utf8_char_len(static_cast<unsigned char>(text[last_end])) : 1;
      continue;
    }
    last_end = e;
    have_last = true;
    last_match_end = e;
    out.emplace_back(s, e);
  }
}

bool HfRegex::matches_at(std::string_view text, size_t pos) const {
  if (!compiled_) return text.compare(pos, literal_.size(), literal_) == 0;
  size_t s = 0, e = 0;
  return search(*compiled_, text, pos, PCRE2_ANCHORED, s, e);
}

}  // namespace ptrain
