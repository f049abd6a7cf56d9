// SentencePiece tokenizer.model files (a serialized ModelProto), without libsentencepiece.
//
// Debian's libsentencepiece carries its own copy of protobuf and crashes at load time next to
// libprotobuf (libtorch and gRPC load it), so the file is read with ptrain's own definition of the
// ModelProto fields (sentencepiece_model.proto) and the encoders are implemented here, with ids
// identical to spm_encode's:
//   unigram: Viterbi over the pieces' scores (SentencePiece's optimized encoder), an unknown
//     character becomes the unk piece (a run of them one unk) or, with byte_fallback, its UTF-8
//     bytes as <0xNN> pieces;
//   bpe: repeatedly merge the adjacent pair whose merged piece has the highest score (leftmost on
//     ties), unknown characters as for unigram.
// USER_DEFINED pieces are matched whole in the text; CONTROL pieces (<s>, </s>) and BYTE pieces
// are never produced from their spelling in text. The normalizer (sentencepiece_normalizer.h)
// applies any precompiled_charsmap (nmt_nfkc, nfkc, identity, custom rules), add_dummy_prefix,
// remove_extra_whitespaces and escape_whitespaces. UserError naming the file and the field for
// what is not supported: model types word and char, treat_whitespace_as_suffix, a
// denormalizer_spec with rules, malformed files. bos/eos/pad come from trainer_spec (an id of -1
// means none); add_bos from tokenizer_config.json's add_bos_token when present, else true.
// encode_after_special() is encode(): every call gets the dummy prefix, as transformers' legacy
// LlamaTokenizer gives one to each stretch of text between added tokens.
// encode() and decode() are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ptrain {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Reads `model_file` (a tokenizer.model).
  static std::unique_ptr<SentencePieceTokenizer> load_file(const std::string& model_file);
  // Reads model_dir/tokenizer.model and, when present, model_dir/tokenizer_config.json.
  static std::unique_ptr<SentencePieceTokenizer> load(const std::string& model_dir);
  ~SentencePieceTokenizer() override;

  std::string name() const override;  // "sentencepiece-unigram" or "sentencepiece-bpe"
  // As spm_encode --output_format=id; invalid UTF-8 bytes are read as U+FFFD, as SentencePiece
  // reads them.
  std::vector<int64_t> encode(std::string_view text) const override;
  // As spm_decode: "▁" to space, the first piece's leading space dropped, byte pieces assembled
  // into UTF-8 (an invalid byte as U+FFFD), unk as trainer_spec.unk_surface. CONTROL pieces are
  // dropped when skip_special, else spelled out. UserError for an id outside the vocabulary.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override;
  std::string piece(int64_t id) const override;
  // Any piece, CONTROL and BYTE pieces included (not the unk fallback of SentencePiece's
  // PieceToId).
  std::optional<int64_t> token_id(std::string_view piece) const override;
  int64_t vocab_size() const override;

  struct Impl;

 private:
  explicit SentencePieceTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ptrain
