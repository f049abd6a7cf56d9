// The regular expressions of Hugging Face tokenizer.json files, matched as `tokenizers` matches
// them.
//
// `tokenizers` compiles its patterns with Oniguruma (Ruby syntax); ptrain compiles them with PCRE2
// (UTF + UCP, JIT) after translating the few constructs whose meaning differs: `\s` is Unicode
// White_Space, `\w` the UTS #18 word class, `\d` \p{Nd}, `\v` the vertical tab, `\uHHHH` a code
// point, `^`/`$` line anchors. Constructs that cannot be translated exactly (nested classes, `&&`,
// POSIX brackets, `\h`, `\b`, `\G`, back-references, ...) are a UserError naming the pattern.
// A search that exceeds PCRE2's limits is a UserError naming the pattern and its place. The limit
// on backtracking steps grows with the text, so patterns whose cost is linear in the text (those
// of released tokenizers) never reach it, while nested repetition such as `(a+)+$` does on some
// texts; the JIT stack limits a group repeated over a very long run (`(?:a|b)+`).
// An HfRegex is immutable and safe to use from several threads.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ptrain {

class HfRegex {
 public:
  // `pattern` in Oniguruma syntax; `where` names its place for errors ("tokenizer.json:
  // pre_tokenizer.pretokenizers[0].pattern.Regex").
  static HfRegex from_pattern(const std::string& pattern, const std::string& where);
  // Matches `text` literally (a tokenizer.json {"String": ...} pattern). Non-empty.
  static HfRegex from_literal(const std::string& text, const std::string& where);

  HfRegex(HfRegex&&) noexcept;
  HfRegex& operator=(HfRegex&&) noexcept;
  ~HfRegex();

  // Appends the (start, end) byte offsets of the matches in `text`, as Rust onig's find_iter
  // yields them: left to right, non-overlapping, an empty match right after the previous match
  // skipped. `text` must be valid UTF-8.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  // Whether the pattern matches at exactly byte `pos` of `text` (anchored there).
  bool matches_at(std::string_view text, size_t pos) const;

  struct Compiled;  // the PCRE2 program, private to hf_regex.cpp

 private:
  HfRegex() = default;
  std::unique_ptr<Compiled> compiled_;
  std::string literal_;
};

// Translates an Oniguruma (Ruby syntax) pattern into PCRE2 syntax with the same meaning, or throws
// UserError naming `where`. Exposed for tests.
std::string onig_to_pcre2(const std::string& pattern, const std::string& where);

}  // namespace ptrain
