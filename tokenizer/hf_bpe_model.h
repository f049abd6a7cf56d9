// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}), private to
// tokenizer/.
//
// Owns the vocabulary and the merge table; merged words are cached per thread (no locks, so
// threads tokenizing in parallel never contend). tokenize() turns one pre-token into
// ids exactly as `tokenizers`' BPE::tokenize does: characters to ids (byte fallback to <0xNN>
// tokens, unknown characters to the unk token, fused when fuse_unk), then merges applied lowest
// rank first (leftmost on ties) through a heap over a linked list of symbols; with ignore_merges a
// pre-token that is itself in the vocabulary is that token. Const methods are thread-safe.
//
// SentencePiece-converted models have no pre-tokenizer, so a whole text is one BPE word. When the
// merges never join a token ending in something else to one starting with "▁" (true of Llama 2's
// and Mistral's), no merge crosses the start of a "▁"-run, so the word is cut there and each piece
// merged (and cached) alone: the same ids, at the speed of a pre-tokenized model.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ptrain {

class HfBpeModel {
 public:
  // `model` is tokenizer.json's "model" object; `file` names tokenizer.json in errors. UserError
  // for anything this implementation does not support (dropout, continuing_subword_prefix,
  // end_of_word_suffix) and for merges that name tokens outside the vocabulary.
  HfBpeModel(const nlohmann::json& model, const std::string& file);
  ~HfBpeModel();
  HfBpeModel(const HfBpeModel&) = delete;
  HfBpeModel& operator=(const HfBpeModel&) = delete;

  // Appends the ids of `word`, one non-empty pre-token.
  void tokenize(std::string_view word, std::vector<int64_t>& out) const;

  std::optional<int64_t> token_to_id(std::string_view token) const;
  // The token with this id, nullptr when the vocabulary has none.
  const std::string* id_to_token(int64_t id) const;
  // Number of vocabulary entries (what `tokenizers` calls the model's vocab size).
  size_t vocab_entries() const { return vocab_.size(); }
  int64_t max_id() const { return static_cast<int64_t>(tokens_.size()) - 1; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  // Open-addressing table of (left id << 32 | right id) -> Merge: merge lookups dominate BPE, and
  // a flat table keeps each one to a cache line or two.
  struct MergeSlot {
    uint64_t key;
    Merge merge;
  };

  void tokenize_piece(std::string_view word, std::vector<int64_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;
  const Merge* find_merge(int32_t left, int32_t right) const;
  void build_merge_table(const std::vector<std::pair<uint64_t, Merge>>& merges);

  std::string file_;
  std::vector<std::string> tokens_;  // by id; ids without a token hold an empty string
  std::vector<bool> has_token_;      // by id
  std::unordered_map<std::string_view, int32_t> vocab_;  // views into tokens_
  std::vector<MergeSlot> merge_table_;  // power-of-two size, empty slots hold kEmptyKey
  int merge_shift_ = 64;
  std::optional<std::string> unk_token_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool cut_before_metaspace_ = false;  // see the class comment
  int32_t byte_ids_[256];              // ids of "<0x00>".."<0xFF>" (byte_fallback), -1 where absent
  int32_t ascii_ids_[128];             // ids of the one-character ASCII tokens, -1 where absent
  uint64_t cache_id_;                  // this model's key in the per-thread word caches
};

}  // namespace ptrain
