// tokenizer.json's added_tokens and how `tokenizers` finds them in text, private to tokenizer/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ptrain {

struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A stretch of text: an added token (token >= 0, an index into the token list) or plain text.
struct TextSegment {
  size_t start, end;
  int32_t token = -1;
};

// Finds added tokens in text as tokenizers' AddedVocabulary::find_matches does with
// encode_special_tokens set: leftmost-longest matches over the patterns; a match of a special
// token is skipped (special tokens are never produced from text: callers insert them by id); a
// single_word token must not touch a word character; lstrip/rstrip tokens absorb the white space
// beside them.
class AddedTokenMatcher {
 public:
  // `tokens` must outlive the matcher.
  explicit AddedTokenMatcher(const std::vector<AddedToken>* tokens) : tokens_(tokens) {}
  // Adds the pattern `text` for tokens_[index]; the first of equal patterns wins. Empty patterns
  // are ignored.
  void add(const std::string& text, int32_t index);
  bool empty() const { return nodes_.size() <= 1; }
  // The segments covering `text` (valid UTF-8) in order; empty when `text` is.
  void split(std::string_view text, std::vector<TextSegment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;
  };
  int32_t child(int32_t node, unsigned char b) const;

  const std::vector<AddedToken>* tokens_;
  std::vector<Node> nodes_{Node{}};
  bool first_byte_[256] = {};
};

}  // namespace ptrain
