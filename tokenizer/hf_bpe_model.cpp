#include "tokenizer/hf_bpe_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <limits>

#include "core/error.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

// ---------------------------------------------------------------- word cache

namespace {

// Words are cached as `tokenizers` caches them (short words only), in a cache per thread and
// model; a cache stops growing when full rather than evicting. Caching never changes the ids.
constexpr size_t kCacheEntries = 131072;
constexpr size_t kMaxCachedWordBytes = 256;

std::atomic<uint64_t> g_next_cache_id{1};

struct WordCache {
  uint64_t model = 0;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

// This thread's cache for model `id`: a thread keeps the caches of the last few models it used
// (ids are never reused, so a cache can never outlive its model's vocabulary and be mistaken).
WordCache& thread_cache(uint64_t id) {
  thread_local std::array<WordCache, 4> caches;
  thread_local size_t next = 0;
  for (WordCache& cache : caches)
    if (cache.model == id) return cache;
  WordCache& cache = caches[next++ % caches.size()];
  cache.model = id;
  cache.words.clear();
  return cache;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

constexpr uint64_t kEmptyKey = ~uint64_t{0};  // ids are below 2^31, so no pair has this key

uint64_t slot_of(uint64_t key, int shift) {
  return (key * 0x9E3779B97F4A7C15ull) >> shift;
}

}  // namespace

// ---------------------------------------------------------------- loading

HfBpeModel::HfBpeModel(const nlohmann::json& model, const std::string& file)
    : file_(file), cache_id_(g_next_cache_id.fetch_add(1)) {
  const JsonWhere where = JsonWhere(file)["model"];
  const nlohmann::json* dropout = json_field(model, "dropout");
  PTRAIN_CHECK(dropout == nullptr || (dropout->is_number() && dropout->get<double>() == 0.0),
               "{}: BPE dropout {} is not supported (tokenization would be random); set it to "
               "null",
               where["dropout"].str(), dropout ? dropout->dump() : "");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    std::optional<std::string> v = json_optional_string(model, key, where);
    PTRAIN_CHECK(!v || v->empty(), "{}: '{}' is not supported (only null or \"\")",
                 where[key].str(), *v);
  }
  unk_token_ = json_optional_string(model, "unk_token", where);
  fuse_unk_ = json_bool(model, "fuse_unk", false, where);
  byte_fallback_ = json_bool(model, "byte_fallback", false, where);
  ignore_merges_ = json_bool(model, "ignore_merges", false, where);

  // Vocabulary: token -> id; tokens_ is filled completely before vocab_ takes views into it.
  const nlohmann::json* vocab = json_field(model, "vocab");
  PTRAIN_CHECK(vocab != nullptr && vocab->is_object(), "{}: expected an object of token: id",
               where["vocab"].str());
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    PTRAIN_CHECK(it->is_number_integer() && it->get<int64_t>() >= 0 &&
                     it->get<int64_t>() < std::numeric_limits<int32_t>::max(),
                 "{}: token '{}' has id {}, expected a non-negative integer", where["vocab"].str(),
                 it.key(), it->dump());
    max_id = std::max(max_id, it->get<int64_t>());
  }
  tokens_.resize(static_cast<size_t>(max_id + 1));
  has_token_.assign(tokens_.size(), false);
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const auto id = static_cast<size_t>(it->get<int64_t>());
    PTRAIN_CHECK(!has_token_[id], "{}: id {} is given to both '{}' and '{}'", where["vocab"].str(),
                 id, tokens_[id], it.key());
    tokens_[id] = it.key();
    has_token_[id] = true;
  }
  vocab_.reserve(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id)
    if (has_token_[id]) vocab_.emplace(tokens_[id], static_cast<int32_t>(id));

  // Merges: "a b" strings (a "#version" line skipped) or ["a", "b"] pairs; rank = position. A
  // pair listed twice keeps its later rank, as `tokenizers`' HashMap collect does.
  const nlohmann::json& merges = json_array(model, "merges", where);
  std::vector<std::pair<uint64_t, Merge>> merge_list;
  merge_list.reserve(merges.size());
  uint32_t rank = 0;
  constexpr std::string_view kMeta = "\xE2\x96\x81";  // U+2581 "▁"
  bool merge_crosses_meta = false;
  for (size_t i = 0; i < merges.size(); ++i) {
    const nlohmann::json& m = merges[i];
    auto at = [&] { return where["merges"][i]; };
    std::string left, right;
    if (m.is_string()) {
      const std::string& line = m.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      PTRAIN_CHECK(space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
                   "{}: expected \"left right\" (two tokens and one space), got '{}'", at().str(),
                   line);
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else {
      PTRAIN_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                   "{}: expected \"left right\" or [\"left\", \"right\"], got {}", at().str(),
                   m.dump());
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    }
    const std::optional<int64_t> l = token_to_id(left), r = token_to_id(right),
                                 merged = token_to_id(left + right);
    PTRAIN_CHECK(l && r && merged, "{}: merge '{} {}' names a token outside the vocabulary ('{}')",
                 at().str(), left, right,
                 !l   ? left
                 : !r ? right
                      : left + right);
    const bool left_ends_meta = left.size() >= kMeta.size() &&
                                left.compare(left.size() - kMeta.size(), kMeta.size(), kMeta) == 0;
    if (!left_ends_meta && right.compare(0, kMeta.size(), kMeta) == 0) merge_crosses_meta = true;
    merge_list.push_back({pair_key(static_cast<int32_t>(*l), static_cast<int32_t>(*r)),
                          {rank++, static_cast<int32_t>(*merged)}});
  }
  build_merge_table(merge_list);
  cut_before_metaspace_ = !merge_crosses_meta && !ignore_merges_ && token_to_id(kMeta).has_value();

  for (int b = 0; b < 256; ++b) {
    std::optional<int64_t> id = token_to_id(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = id ? static_cast<int32_t>(*id) : -1;
  }
  for (int c = 0; c < 128; ++c) {
    const char ch = static_cast<char>(c);
    std::optional<int64_t> id = token_to_id(std::string_view(&ch, 1));
    ascii_ids_[c] = id ? static_cast<int32_t>(*id) : -1;
  }
}

void HfBpeModel::build_merge_table(const std::vector<std::pair<uint64_t, Merge>>& merges) {
  int bits = 4;
  while ((size_t{1} << bits) < merges.size() * 2) ++bits;
  merge_shift_ = 64 - bits;
  merge_table_.assign(size_t{1} << bits, MergeSlot{kEmptyKey, {0, 0}});
  const size_t mask = merge_table_.size() - 1;
  for (const auto& [key, merge] : merges) {
    size_t i = slot_of(key, merge_shift_);
    while (merge_table_[i].key != kEmptyKey && merge_table_[i].key != key) i = (i + 1) & mask;
    merge_table_[i] = {key, merge};  // a pair listed twice keeps its later rank
  }
}

HfBpeModel::~HfBpeModel() = default;

std::optional<int64_t> HfBpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* HfBpeModel::id_to_token(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(tokens_.size()) || !has_token_[id]) return nullptr;
  return &tokens_[id];
}

const HfBpeModel::Merge* HfBpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  const size_t mask = merge_table_.size() - 1;
  for (size_t i = slot_of(key, merge_shift_);; i = (i + 1) & mask) {
    const MergeSlot& slot = merge_table_[i];
    if (slot.key == key) return &slot.merge;
    if (slot.key == kEmptyKey) return nullptr;
  }
}

// ---------------------------------------------------------------- tokenize

void HfBpeModel::tokenize(std::string_view word, std::vector<int64_t>& out) const {
  if (!cut_before_metaspace_) {
    tokenize_piece(word, out);
    return;
  }
  // Cut before each "▁" that does not follow another "▁" (see the class comment).
  constexpr std::string_view kMeta = "\xE2\x96\x81";
  size_t start = 0;
  for (size_t p = word.find(kMeta, 1); p != std::string_view::npos; p = word.find(kMeta, p + 1)) {
    if (p >= kMeta.size() && word.compare(p - kMeta.size(), kMeta.size(), kMeta) == 0) continue;
    tokenize_piece(word.substr(start, p - start), out);
    start = p;
  }
  tokenize_piece(word.substr(start), out);
}

void HfBpeModel::tokenize_piece(std::string_view word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (std::optional<int64_t> id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  WordCache* cache = nullptr;
  std::string key;
  if (cacheable) {
    key.assign(word);
    cache = &thread_cache(cache_id_);
    auto it = cache->words.find(key);
    if (it != cache->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable && cache->words.size() < kCacheEntries) cache->words.emplace(std::move(key), ids);
}

namespace {

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t len;  // bytes of the word it covers; 0 once merged into its left neighbour
};

struct QueuedMerge {
  uint32_t rank;
  uint32_t pos;
  int32_t new_id;
  // std heaps are max-heaps: "greater" is the lower rank, then the lower position.
  bool operator<(const QueuedMerge& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

void add_symbol(std::vector<Symbol>& symbols, int32_t id, uint32_t len) {
  const auto n = static_cast<int32_t>(symbols.size());
  if (!symbols.empty()) symbols.back().next = n;
  symbols.push_back({id, n - 1, -1, len});
}

}  // namespace

void HfBpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  // Characters to symbols (tokenizers' BPE::merge_word).
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool unk_pending = false;
  int32_t unk_id = -1;
  uint32_t unk_len = 0;
  auto resolve_unk = [&] {
    std::optional<int64_t> id = token_to_id(*unk_token_);
    PTRAIN_CHECK(id.has_value(), "'{}': model.unk_token '{}' is not in the vocabulary", file_,
                 *unk_token_);
    return static_cast<int32_t>(*id);
  };
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(utf8_char_len(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view ch = word.substr(i, n);
    i += n;
    const auto lead = static_cast<unsigned char>(ch[0]);
    std::optional<int64_t> id;
    if (lead < 0x80) {
      if (ascii_ids_[lead] >= 0) id = ascii_ids_[lead];
    } else {
      id = token_to_id(ch);
    }
    if (id) {
      if (unk_pending) {
        add_symbol(symbols, unk_id, unk_len);
        unk_pending = false;
      }
      add_symbol(symbols, static_cast<int32_t>(*id), static_cast<uint32_t>(n));
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {  // a pending unk stays pending here, as in tokenizers
        for (char c : ch) add_symbol(symbols, byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (!unk_token_) continue;  // no unk token: the character is dropped, as in tokenizers
    if (unk_pending && fuse_unk_) {
      unk_len += static_cast<uint32_t>(n);
    } else {
      if (unk_pending) add_symbol(symbols, unk_id, unk_len);
      unk_id = resolve_unk();
      unk_len = static_cast<uint32_t>(n);
      unk_pending = true;
    }
  }
  if (unk_pending) add_symbol(symbols, unk_id, unk_len);

  // Merges, lowest rank first, leftmost on ties (tokenizers' Word::merge_all without dropout).
  std::vector<QueuedMerge> queue;
  queue.reserve(symbols.size());
  for (size_t pos = 0; pos + 1 < symbols.size(); ++pos) {
    if (const Merge* m = find_merge(symbols[pos].id, symbols[pos + 1].id))
      queue.push_back({m->rank, static_cast<uint32_t>(pos), m->new_id});
  }
  std::make_heap(queue.begin(), queue.end());
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end());
    const QueuedMerge top = queue.back();
    queue.pop_back();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const int32_t right_pos = cur.next;
    const Symbol right = symbols[right_pos];
    const Merge* still = find_merge(cur.id, right.id);
    if (still == nullptr || still->new_id != top.new_id) continue;  // a stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[right_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = static_cast<int32_t>(top.pos);
    if (cur.prev >= 0) {
      if (const Merge* m = find_merge(symbols[cur.prev].id, cur.id)) {
        queue.push_back({m->rank, static_cast<uint32_t>(cur.prev), m->new_id});
        std::push_heap(queue.begin(), queue.end());
      }
    }
    if (cur.next >= 0) {
      if (const Merge* m = find_merge(cur.id, symbols[cur.next].id)) {
        queue.push_back({m->rank, top.pos, m->new_id});
        std::push_heap(queue.begin(), queue.end());
      }
    }
  }
  for (const Symbol& s : symbols)
    if (s.len != 0) ids.push_back(s.id);
}

}  // namespace ptrain
