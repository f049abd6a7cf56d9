// Hugging Face tokenizer.json BPE tokenizers, without Python or the Rust `tokenizers` library.
//
// Supports the two BPE families real models ship, with ids identical to `tokenizers`:
//   byte-level (GPT-2, Llama 3, Qwen2): ByteLevel / Split / Digits pre-tokenizers, NFC-style
//     normalizers, the GPT-2 byte alphabet, the ByteLevel decoder;
//   SentencePiece-converted (Llama 2, Mistral, TinyLlama): Prepend/Replace normalizers or the
//     Metaspace pre-tokenizer, byte_fallback, unk and fuse_unk, the Replace / ByteFallback / Fuse /
//     Strip or Metaspace decoders.
// added_tokens are matched in the text before the model as `tokenizers` matches them, except that
// special tokens are never produced from text (the Tokenizer contract; `tokenizers` with
// split_special_tokens=True). bos/eos/pad and add_bos come from tokenizer_config.json, else from
// tokenizer.json's post_processor. Anything a file asks for that is not implemented (another
// model type, an unknown normalizer, a regex construct without an exact translation, a template
// that appends tokens, ...) is a UserError naming the file and the JSON key; nothing is
// approximated. encode() and decode() are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ptrain {

class HfBpeTokenizer : public Tokenizer {
 public:
  // Reads model_dir/tokenizer.json and, when present, model_dir/tokenizer_config.json.
  static std::unique_ptr<HfBpeTokenizer> load(const std::string& model_dir);
  ~HfBpeTokenizer() override;

  std::string name() const override { return "hf-bpe"; }
  // UserError when `text` is not valid UTF-8.
  std::vector<int64_t> encode(std::string_view text) const override;
  std::vector<int64_t> encode_after_special(std::string_view text) const override;
  // As `tokenizers`' decode (and transformers' clean_up_tokenization_spaces when the config sets
  // it); UserError for an id without a token.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override;
  std::string piece(int64_t id) const override;
  // An added token's content first, else the model vocabulary's entry.
  std::optional<int64_t> token_id(std::string_view piece) const override;
  int64_t vocab_size() const override;

  struct Impl;

 private:
  explicit HfBpeTokenizer(std::unique_ptr<Impl> impl);
  // at_input_start: whether the text starts the input (false after a special token).
  std::vector<int64_t> encode_text(std::string_view text, bool at_input_start) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ptrain
