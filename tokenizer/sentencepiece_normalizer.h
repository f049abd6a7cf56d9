// SentencePiece's text normalizer (normalizer.cc), private to tokenizer/.
//
// Owns a copy of the model's precompiled_charsmap (a Darts-clone double-array trie of rules and
// the NUL-terminated replacement strings they point to; empty for the "identity" rule) and the
// user-defined symbols, which are passed through unnormalized. normalize() gives the text the
// encoders see, exactly as SentencePiece's Normalizer::Normalize: at each position the longest
// user-defined symbol, else the longest charsmap rule, else one UTF-8 character (an invalid byte
// becomes U+FFFD); leading, trailing and repeated spaces dropped when remove_extra_whitespaces;
// spaces escaped to U+2581 "▁" when escape_whitespaces; "▁" prepended when add_dummy_prefix.
// Thread-safe after construction.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ptrain {

struct SentencePieceNormalizerSpec {
  std::string charsmap;  // precompiled_charsmap bytes; empty: no rules
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

class SentencePieceNormalizer {
 public:
  // `file` names the model in errors: UserError when the charsmap is malformed.
  SentencePieceNormalizer(SentencePieceNormalizerSpec spec, std::vector<std::string> user_symbols,
                          const std::string& file);

  std::string normalize(std::string_view text) const;

  // Length in bytes of the longest user-defined symbol `s` starts with, 0 when none.
  size_t match_user_symbol(std::string_view s) const;

 private:
  // The normalized text of the prefix of `s` and the number of input bytes it consumes.
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view s) const;
  // Length of the longest charsmap rule `s` starts with (0: none) and its replacement's offset.
  std::pair<size_t, uint32_t> longest_rule(std::string_view s) const;

  SentencePieceNormalizerSpec spec_;
  std::vector<std::string> user_symbols_;  // longest first
  std::vector<uint32_t> trie_;             // Darts-clone units
  std::string replacements_;               // NUL-terminated strings the trie's values index
};

}  // namespace ptrain
