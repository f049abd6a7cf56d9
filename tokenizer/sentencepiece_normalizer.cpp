#include "tokenizer/sentencepiece_normalizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";      // U+2581 "▁"
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// ---------------------------------------------------------------- Darts-clone double array
// A unit packs a label, a has-leaf flag and an offset to its children; a leaf unit holds a value.

bool unit_has_leaf(uint32_t unit) {
  return ((unit >> 8) & 1) != 0;
}
uint32_t unit_value(uint32_t unit) {
  return unit & ((1U << 31) - 1);
}
uint32_t unit_label(uint32_t unit) {
  return unit & ((1U << 31) | 0xFF);
}
uint32_t unit_offset(uint32_t unit) {
  return (unit >> 10) << ((unit & (1U << 9)) >> 6);
}

// Length in bytes of the valid UTF-8 character at the start of `s`, 0 when it is invalid.
size_t valid_char_len(std::string_view s) {
  const size_t n = utf8_char_len(static_cast<unsigned char>(s[0]));
  if (n > s.size()) return 0;
  return utf8_invalid_offset(s.substr(0, n)) == std::string_view::npos ? n : 0;
}

}  // namespace

SentencePieceNormalizer::SentencePieceNormalizer(SentencePieceNormalizerSpec spec,
                                                 std::vector<std::string> user_symbols,
                                                 const std::string& file)
    : spec_(std::move(spec)), user_symbols_(std::move(user_symbols)) {
  std::sort(user_symbols_.begin(), user_symbols_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  const std::string& blob = spec_.charsmap;
  if (blob.empty()) return;
  // Layout: uint32 (little endian) trie size in bytes, the trie, then the replacement strings.
  PTRAIN_CHECK(blob.size() >= 4, "'{}': normalizer_spec.precompiled_charsmap is truncated", file);
  uint32_t trie_bytes = 0;
  for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<unsigned char>(blob[i]);
  PTRAIN_CHECK(trie_bytes % 4 == 0 && trie_bytes > 0 && trie_bytes <= blob.size() - 4,
               "'{}': normalizer_spec.precompiled_charsmap has a trie of {} bytes in {} bytes",
               file, trie_bytes, blob.size());
  trie_.resize(trie_bytes / 4);
  for (size_t u = 0; u < trie_.size(); ++u) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(blob[4 + 4 * u + i]);
    trie_[u] = v;
  }
  replacements_ = blob.substr(4 + trie_bytes);
  // A trailing NUL bounds every replacement string inside the blob, so a malformed value (checked
  // against the size in normalize_prefix) can never read past it.
  if (replacements_.empty() || replacements_.back() != '\0') replacements_.push_back('\0');
}

size_t SentencePieceNormalizer::match_user_symbol(std::string_view s) const {
  for (const std::string& sym : user_symbols_)
    if (s.size() >= sym.size() && s.compare(0, sym.size(), sym) == 0) return sym.size();
  return 0;
}

std::pair<size_t, uint32_t> SentencePieceNormalizer::longest_rule(std::string_view s) const {
  size_t best_len = 0;
  uint32_t best_value = 0;
  size_t node = unit_offset(trie_[0]);
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) break;
    node ^= c;
    if (node >= trie_.size()) break;
    const uint32_t unit = trie_[node];
    if (unit_label(unit) != c) break;
    node ^= unit_offset(unit);
    if (node >= trie_.size()) break;
    if (unit_has_leaf(unit)) {
      best_len = i + 1;
      best_value = unit_value(trie_[node]);
    }
  }
  return {best_len, best_value};
}

std::pair<std::string_view, size_t> SentencePieceNormalizer::normalize_prefix(
    std::string_view s) const {
  if (const size_t n = match_user_symbol(s); n > 0) return {s.substr(0, n), n};
  if (!trie_.empty()) {
    const auto [len, value] = longest_rule(s);
    if (len > 0 && value < replacements_.size()) {
      const char* r = replacements_.data() + value;
      return {std::string_view(r, std::strlen(r)), len};
    }
  }
  const size_t n = valid_char_len(s);
  if (n == 0) return {kReplacementChar, 1};
  return {s.substr(0, n), n};
}

std::string SentencePieceNormalizer::normalize(std::string_view text) const {
  std::string out;
  if (spec_.remove_extra_whitespaces) {
    while (!text.empty()) {
      const auto [piece, consumed] = normalize_prefix(text);
      if (piece != " ") break;
      text.remove_prefix(consumed);
    }
  }
  if (text.empty()) return out;
  out.reserve(text.size() * 3 / 2 + 3);
  if (spec_.add_dummy_prefix) out += spec_.escape_whitespaces ? kSpaceSymbol : " ";
  bool prev_space = spec_.remove_extra_whitespaces;
  while (!text.empty()) {
    auto [piece, consumed] = normalize_prefix(text);
    while (prev_space && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    if (!piece.empty()) {
      for (char c : piece) {
        if (spec_.escape_whitespaces && c == ' ')
          out += kSpaceSymbol;
        else
          out.push_back(c);
      }
      prev_space = piece.back() == ' ';
    }
    text.remove_prefix(consumed);
    if (!spec_.remove_extra_whitespaces) prev_space = false;
  }
  if (spec_.remove_extra_whitespaces) {
    const std::string_view space = spec_.escape_whitespaces ? kSpaceSymbol : " ";
    while (out.size() >= space.size() &&
           out.compare(out.size() - space.size(), space.size(), space.data(), space.size()) == 0)
      out.resize(out.size() - space.size());
  }
  return out;
}

}  // namespace ptrain
