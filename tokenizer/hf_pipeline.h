// The text-processing stages of a Hugging Face tokenizer.json, private to tokenizer/: normalizers
// and pre-tokenizers (before the BPE model) and decoders (after it). Each stage reproduces the
// `tokenizers` component of the same name; make_*() read a component's JSON and throw UserError
// naming the file, the JSON path and the type for anything not implemented. Stages are immutable
// and thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/hf_json.h"

namespace ptrain {

// A piece of input text between pre-tokenization steps.
struct TextPiece {
  std::string text;
  // Starts at byte 0 of the text given to encode() (Metaspace's prepend_scheme "first").
  bool at_input_start = false;
};

class HfNormalizer {
 public:
  virtual ~HfNormalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

class HfPreTokenizer {
 public:
  virtual ~HfPreTokenizer() = default;
  // Replaces `pieces` by their pre-tokenized pieces; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<TextPiece>& pieces) const = 0;
};

class HfDecoder {
 public:
  virtual ~HfDecoder() = default;
  // `tokenizers`' decode_chain: token strings in, strings out (joined by the caller).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Null JSON gives nullptr (no such stage).
std::unique_ptr<HfNormalizer> make_normalizer(const nlohmann::json& j, const JsonWhere& where);
std::unique_ptr<HfPreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const JsonWhere& where);
std::unique_ptr<HfDecoder> make_decoder(const nlohmann::json& j, const JsonWhere& where);

// Metaspace's options, shared by the pre-tokenizer and the decoder of that name.
enum class PrependScheme { kAlways, kFirst, kNever };
struct MetaspaceOptions {
  std::string replacement;  // one character
  PrependScheme scheme = PrependScheme::kAlways;
  bool split = true;
};
// As tokenizers reads it: prepend_scheme defaults to "always"; the legacy add_prefix_space: false
// is accepted only beside prepend_scheme "never" (tokenizers rejects the file otherwise).
MetaspaceOptions parse_metaspace(const nlohmann::json& j, const JsonWhere& where);

// GPT-2's byte-to-unicode table: byte b is represented by the UTF-8 of this character.
const std::string& byte_level_char(unsigned char b);

// What a pre-tokenizer configuration implies for tokenizer_config.json's add_prefix_space:
// ByteLevel's add_prefix_space, Metaspace's prepend_scheme != never; nullopt when it has neither.
std::optional<bool> pre_tokenizer_adds_prefix_space(const nlohmann::json& j);

}  // namespace ptrain
