// UTF-8 and Unicode helpers for the tokenizers: validation, code point iteration, Rust-compatible
// lossy decoding, the White_Space property and Unicode normalization forms (utf8proc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ptrain {

// Byte offset of the first byte that makes `s` invalid UTF-8 (overlong forms, surrogates and code
// points above U+10FFFF included), or std::string_view::npos when `s` is valid.
size_t utf8_invalid_offset(std::string_view s);

// The code point starting at s[i] in valid UTF-8; advances i past it.
uint32_t utf8_next(std::string_view s, size_t& i);

// Byte length of the UTF-8 sequence that starts with lead byte `b` (1 for invalid leads).
inline size_t utf8_char_len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF8 ? 4 : 1;
}

void utf8_append(std::string& out, uint32_t cp);

// Bytes to text as Rust's String::from_utf8_lossy does it: each maximal invalid subsequence
// becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Unicode's White_Space property (what Rust's char::is_whitespace and regex `\s` test).
bool is_unicode_white_space(uint32_t cp);

enum class UnicodeForm { kNfc, kNfd, kNfkc, kNfkd };

// `s` (valid UTF-8) in the given normalization form.
std::string unicode_normalize(std::string_view s, UnicodeForm form);

}  // namespace ptrain
