#include "tokenizer/hf_added_tokens.h"

#include <algorithm>

#include "tokenizer/hf_regex.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

namespace {

// Rust regex's Unicode `\w` (what tokenizers' single_word test uses).
const HfRegex& word_char() {
  static const HfRegex re = HfRegex::from_pattern(
      "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]", "single_word");
  return re;
}

size_t previous_char_start(std::string_view s, size_t pos) {
  size_t i = pos - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

}  // namespace

int32_t AddedTokenMatcher::child(int32_t node, unsigned char b) const {
  const auto& children = nodes_[node].children;
  auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(b, int32_t{-1}));
  return it != children.end() && it->first == b ? it->second : -1;
}

void AddedTokenMatcher::add(const std::string& text, int32_t index) {
  if (text.empty()) return;
  int32_t node = 0;
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    int32_t next = child(node, b);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& children = nodes_[node].children;
      children.insert(std::lower_bound(children.begin(), children.end(), std::make_pair(b, -1)),
                      {b, next});
    }
    node = next;
  }
  if (nodes_[node].token < 0) nodes_[node].token = index;
  first_byte_[static_cast<unsigned char>(text[0])] = true;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSegment>& out) const {
  size_t start_offset = 0;
  size_t pos = 0;
  while (!empty() && pos < text.size()) {
    // The longest pattern starting at the leftmost position that has one.
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    int32_t node = 0, found = -1;
    size_t found_end = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      node = child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) {
        found = nodes_[node].token;
        found_end = i + 1;
      }
    }
    if (found < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = found_end;
    pos = found_end;  // matching resumes after this match whether or not it is used
    const AddedToken& token = (*tokens_)[found];
    if (token.special) continue;
    if (token.single_word) {
      const bool start_space =
          start == 0 || !word_char().matches_at(text, previous_char_start(text, start));
      const bool stop_space = stop == text.size() || !word_char().matches_at(text, stop);
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const size_t p = previous_char_start(text, new_start);
        size_t i = p;
        if (!is_unicode_white_space(utf8_next(text, i))) break;
        new_start = p;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!is_unicode_white_space(utf8_next(text, i))) break;
        stop = i;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, found});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace ptrain
