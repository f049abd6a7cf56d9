// Tokenizers: text <-> token ids, chosen from a model directory.
//
// Contract shared by every implementation: encode() turns plain text into ids and never produces
// a special token (bos, eos, pad, chat markers) from text, whatever the text contains; callers
// (templates, generate) insert special tokens by id. decode() turns ids back into text, dropping
// special tokens when asked.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ptrain {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;  // "byte", ...
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // encode() of text that follows a special token in a longer text, as Hugging Face encodes the
  // stretch after an added token (a chat template's text after a marker): the same ids except where
  // a tokenizer treats the start of the whole text specially (Metaspace prepend_scheme "first").
  virtual std::vector<int64_t> encode_after_special(std::string_view text) const {
    return encode(text);
  }
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const = 0;
  // The token's own text as the vocabulary spells it (e.g. "<s>", "<0x0A>"), for display.
  virtual std::string piece(int64_t id) const = 0;
  // The id of the vocabulary entry or added token spelled exactly `piece` (e.g. "<s>",
  // "<|im_start|>"), special or not; nullopt when there is none. Chat templates insert their
  // markers by this id.
  virtual std::optional<int64_t> token_id(std::string_view piece) const = 0;
  virtual int64_t vocab_size() const = 0;
  // A sequence's ids as Hugging Face's tokenizer(text) gives them: bos (when the tokenizer adds
  // one) followed by encode(text).
  std::vector<int64_t> encode_sequence(std::string_view text) const;

  std::optional<int64_t> bos_id, eos_id, pad_id;
  bool add_bos = true;  // whether a sequence starts with bos (Llama: yes)
  // Set by load_tokenizer: the directory read (empty for a tokenizer built in code), and
  // tokenizer_config.json's "chat_template" (its "default" entry when it is a list of named
  // templates; empty when absent).
  std::string model_dir;
  std::string chat_template;
  // Set by the loaders: the files read, as messages show them ("'/m/tokenizer.json' and
  // '/m/tokenizer_config.json'"; empty for a tokenizer built in code).
  std::string source;

  // The tokenizer as messages that ask for a fix name it: "tokenizer 'hf-bpe' (from
  // '/m/tokenizer.json' and '/m/tokenizer_config.json')", else "(from '<model_dir>')", else bare.
  std::string describe() const;
};

// The built-in byte tokenizer for tiny test models: id 0 <pad>, 1 <s> (bos), 2 </s> (eos), and
// byte b as id b + 3 (the layout of Llama 2's byte-fallback tokens), 259 ids in all.
class ByteTokenizer : public Tokenizer {
 public:
  ByteTokenizer();
  static constexpr int64_t kOffset = 3;
  static constexpr int64_t kVocab = 256 + kOffset;
  std::string name() const override { return "byte"; }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override;
  std::string piece(int64_t id) const override;
  // "<pad>", "<s>", "</s>" and "<0xNN>".
  std::optional<int64_t> token_id(std::string_view piece) const override;
  int64_t vocab_size() const override { return kVocab; }
};

// The tokenizer_config.json that marks a model directory as using the byte tokenizer (written by
// `ptrain init-model --preset tiny`).
std::string byte_tokenizer_config_json();

// The tokenizer a model directory ships: ptrain's byte tokenizer when tokenizer_config.json names
// it, else a Hugging Face tokenizer.json (HfBpeTokenizer, hf_tokenizer.h), else a SentencePiece
// tokenizer.model (SentencePieceTokenizer, sentencepiece_tokenizer.h). UserError naming the
// directory and what it holds otherwise. Sets the tokenizer's model_dir and chat_template.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

}  // namespace ptrain
