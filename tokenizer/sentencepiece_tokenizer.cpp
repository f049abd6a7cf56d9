#include "tokenizer/sentencepiece_tokenizer.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <queue>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_file.h"
#include "tokenizer/sentencepiece_model.pb.h"
#include "tokenizer/sentencepiece_normalizer.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";      // U+2581 "▁"
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// SentencePiece's ModelProto.SentencePiece.Type and TrainerSpec.ModelType values.
enum PieceType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};
enum ModelType { kUnigram = 1, kBpe = 2 };

// SentencePiece's unigram encoder scores an unknown character this far below the worst piece.
constexpr float kUnkPenalty = 10.0F;

// A piece of the encoded text: its id and its bytes in the normalized text.
struct Span {
  int id;
  std::string_view text;
};

std::optional<int> byte_piece_value(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return std::nullopt;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    if (d < 0) return std::nullopt;
    v = v * 16 + d;
  }
  return v;
}

}  // namespace

struct SentencePieceTokenizer::Impl {
  std::string file;
  int model_type = kUnigram;
  bool byte_fallback = false;
  std::string unk_surface;
  int unk_id = -1;
  bool strip_leading_space = true;  // decode drops the first piece's "▁"
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int> types;
  // NORMAL, USER_DEFINED and UNUSED pieces: what the encoders may produce (views into pieces).
  std::unordered_map<std::string_view, int> matchable;
  // CONTROL, UNKNOWN and BYTE pieces, which SentencePiece's PieceToId also finds.
  std::unordered_map<std::string_view, int> reserved;
  // Unigram: every prefix of a matchable piece -> that piece's id, or -1 when the prefix is not a
  // piece itself; the Viterbi stops extending a match at the first prefix of no piece.
  std::unordered_map<std::string_view, int> prefixes;
  int byte_ids[256];
  size_t max_piece_bytes = 0;
  float min_score = 0, max_score = 0;
  std::optional<SentencePieceNormalizer> normalizer;

  int piece_to_id(std::string_view s) const {
    if (auto it = matchable.find(s); it != matchable.end()) return it->second;
    if (auto it = reserved.find(s); it != reserved.end()) return it->second;
    return unk_id;
  }
  size_t char_len(std::string_view s, size_t pos) const {
    return std::min(utf8_char_len(static_cast<unsigned char>(s[pos])), s.size() - pos);
  }
  std::vector<Span> encode_unigram(std::string_view text) const;
  std::vector<Span> encode_bpe(std::string_view text) const;
};

// ---------------------------------------------------------------- unigram
// SentencePiece's optimized Viterbi (unigram_model.cc, EncodeOptimized), including its
// arithmetic: a candidate's score is computed in double and stored in float, so ties resolve as
// they do there (the first candidate found wins).

std::vector<Span> SentencePieceTokenizer::Impl::encode_unigram(std::string_view text) const {
  struct Best {
    int id = -1;
    float score = 0;
    int start = -1;
  };
  const size_t n = text.size();
  std::vector<Best> best(n + 1);
  const float unk_score = min_score - kUnkPenalty;
  for (size_t start = 0; start < n;) {
    const float till_here = best[start].score;
    const size_t mblen = char_len(text, start);
    bool has_single = false;
    const size_t limit = std::min(n - start, max_piece_bytes);
    for (size_t len = 1; len <= limit; ++len) {
      auto it = prefixes.find(text.substr(start, len));
      if (it == prefixes.end()) break;
      const int id = it->second;
      if (id < 0 || types[id] == kUnused) continue;
      const double score = types[id] == kUserDefined
                               ? static_cast<double>(static_cast<float>(len) * max_score) - 0.1
                               : static_cast<double>(scores[id]);
      const double candidate = score + till_here;
      Best& target = best[start + len];
      if (target.start == -1 || candidate > target.score) {
        target = {id, static_cast<float>(candidate), static_cast<int>(start)};
      }
      if (len == mblen) has_single = true;
    }
    if (!has_single) {
      Best& target = best[start + mblen];
      const float candidate = unk_score + till_here;
      if (target.start == -1 || candidate > target.score)
        target = {unk_id, candidate, static_cast<int>(start)};
    }
    start += mblen;
  }
  std::vector<Span> out;
  for (size_t end = n; end > 0;) {
    const Best& b = best[end];
    PTRAIN_ASSERT(b.start >= 0, "unigram lattice has no path to byte {}", end);
    out.push_back({b.id, text.substr(b.start, end - b.start)});
    end = static_cast<size_t>(b.start);
  }
  std::reverse(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------- BPE
// SentencePiece's BPE encoder (bpe_model.cc): characters (user-defined symbols whole and frozen)
// merged pair by pair, the pair whose merged piece scores highest first, leftmost on ties; an
// UNUSED piece that a merge made is split back into the pieces that formed it.

std::vector<Span> SentencePieceTokenizer::Impl::encode_bpe(std::string_view text) const {
  struct Symbol {
    int prev, next;
    bool freeze;
    std::string_view piece;
  };
  struct Pair {
    float score;
    int left, right;
    size_t size;
  };
  auto lower = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(lower)> agenda(lower);
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < text.size();) {
    size_t len = normalizer->match_user_symbol(text.substr(pos));
    const bool freeze = len > 0;
    if (!freeze) len = char_len(text, pos);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back(
        {index - 1, pos + len < text.size() ? index + 1 : -1, freeze, text.substr(pos, len)});
    pos += len;
  }
  auto add_pair = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string_view merged(symbols[left].piece.data(),
                                  symbols[left].piece.size() + symbols[right].piece.size());
    auto it = matchable.find(merged);
    if (it == matchable.end()) return;
    agenda.push({scores[it->second], left, right, merged.size()});
    if (types[it->second] == kUnused)
      rev_merge[merged] = {symbols[left].piece, symbols[right].piece};
  };
  for (size_t i = 1; i < symbols.size(); ++i)
    add_pair(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.piece.empty() || right.piece.empty() ||
        left.piece.size() + right.piece.size() != top.size)
      continue;  // a symbol of this pair was merged away since the pair was queued
    left.piece = std::string_view(left.piece.data(), top.size);
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = std::string_view();
    add_pair(left.prev, top.left);
    add_pair(top.left, left.next);
  }
  std::vector<Span> out;
  std::function<void(std::string_view)> resegment = [&](std::string_view w) {
    const int id = piece_to_id(w);
    auto it = types[id] == kUnused ? rev_merge.find(w) : rev_merge.end();
    if (it == rev_merge.end()) {
      out.push_back({id, w});
      return;
    }
    resegment(it->second.first);
    resegment(it->second.second);
  };
  for (int i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) resegment(symbols[i].piece);
  return out;
}

// ---------------------------------------------------------------- Tokenizer

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::string SentencePieceTokenizer::name() const {
  return impl_->model_type == kBpe ? "sentencepiece-bpe" : "sentencepiece-unigram";
}

int64_t SentencePieceTokenizer::vocab_size() const {
  return static_cast<int64_t>(impl_->pieces.size());
}

std::string SentencePieceTokenizer::piece(int64_t id) const {
  PTRAIN_CHECK(id >= 0 && id < vocab_size(),
               "token id {} is outside the vocabulary of '{}' [0, {})", id, impl_->file,
               vocab_size());
  return impl_->pieces[id];
}

std::optional<int64_t> SentencePieceTokenizer::token_id(std::string_view piece) const {
  for (const auto* map : {&impl_->matchable, &impl_->reserved}) {
    if (auto it = map->find(piece); it != map->end()) return it->second;
  }
  return std::nullopt;
}

std::vector<int64_t> SentencePieceTokenizer::encode(std::string_view text) const {
  const Impl& m = *impl_;
  const std::string normalized = m.normalizer->normalize(text);
  const std::vector<Span> spans =
      m.model_type == kBpe ? m.encode_bpe(normalized) : m.encode_unigram(normalized);
  // As SentencePieceProcessor::Encode: an unknown piece becomes its bytes with byte_fallback;
  // without, a run of unknown pieces is one.
  std::vector<int64_t> ids;
  ids.reserve(spans.size());
  bool prev_unk = false;
  for (const Span& s : spans) {
    const bool unk = s.id == m.unk_id;
    if (unk && m.byte_fallback) {
      for (unsigned char b : s.text) ids.push_back(m.byte_ids[b] >= 0 ? m.byte_ids[b] : m.unk_id);
      continue;
    }
    if (!(unk && prev_unk)) ids.push_back(s.id);
    prev_unk = unk;
  }
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids,
                                           bool skip_special) const {
  const Impl& m = *impl_;
  std::string out;
  bool visible = false;  // whether text other than control pieces was written
  std::string bytes;
  auto flush_bytes = [&] {
    for (size_t i = 0; i < bytes.size();) {
      const std::string_view rest = std::string_view(bytes).substr(i);
      const size_t n = utf8_char_len(static_cast<unsigned char>(rest[0]));
      if (n <= rest.size() && utf8_invalid_offset(rest.substr(0, n)) == std::string_view::npos) {
        out.append(rest.substr(0, n));
        i += n;
      } else {
        out.append(kReplacementChar);
        ++i;
      }
      visible = true;
    }
    bytes.clear();
  };
  for (int64_t id : ids) {
    PTRAIN_CHECK(id >= 0 && id < vocab_size(),
                 "token id {} is outside the vocabulary of '{}' [0, {})", id, m.file, vocab_size());
    const int type = m.types[id];
    if (type == kByte) {
      bytes.push_back(static_cast<char>(*byte_piece_value(m.pieces[id])));
      continue;
    }
    flush_bytes();
    if (type == kControl) {
      if (!skip_special) out += m.pieces[id];
      continue;
    }
    if (type == kUnknown) {
      out += m.unk_surface;
      visible = visible || !m.unk_surface.empty();
      continue;
    }
    std::string_view p = m.pieces[id];
    if (!visible && m.strip_leading_space && p.substr(0, kSpaceSymbol.size()) == kSpaceSymbol)
      p.remove_prefix(kSpaceSymbol.size());
    for (size_t i = 0; i < p.size();) {
      if (p.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
        out.push_back(' ');
        i += kSpaceSymbol.size();
      } else {
        out.push_back(p[i++]);
      }
    }
    visible = visible || !p.empty();
  }
  flush_bytes();
  return out;
}

// ---------------------------------------------------------------- loading

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load_file(
    const std::string& model_file) {
  auto m = std::make_unique<Impl>();
  m->file = model_file;
  const std::string bytes = read_text_file(model_file);
  spm::ModelProto proto;
  PTRAIN_CHECK(proto.ParseFromString(bytes) && proto.pieces_size() > 0,
               "'{}': not a SentencePiece model (no ModelProto with pieces could be read)",
               model_file);
  const spm::TrainerSpec& trainer = proto.trainer_spec();
  const spm::NormalizerSpec& norm = proto.normalizer_spec();
  m->model_type = trainer.model_type();
  PTRAIN_CHECK(m->model_type == kUnigram || m->model_type == kBpe,
               "'{}': trainer_spec.model_type {} ({}) is not supported; supported: unigram (1) and "
               "bpe (2)",
               model_file, m->model_type,
               m->model_type == 3   ? "word"
               : m->model_type == 4 ? "char"
                                    : "unknown");
  PTRAIN_CHECK(!trainer.treat_whitespace_as_suffix(),
               "'{}': trainer_spec.treat_whitespace_as_suffix is not supported", model_file);
  PTRAIN_CHECK(proto.denormalizer_spec().precompiled_charsmap().empty(),
               "'{}': a denormalizer_spec with rules ('{}') is not supported", model_file,
               proto.denormalizer_spec().name());
  m->byte_fallback = trainer.byte_fallback();
  m->unk_surface = trainer.unk_surface();
  m->strip_leading_space = norm.add_dummy_prefix() || norm.remove_extra_whitespaces();

  std::fill(std::begin(m->byte_ids), std::end(m->byte_ids), -1);
  m->min_score = std::numeric_limits<float>::max();
  m->max_score = std::numeric_limits<float>::min();  // as SentencePiece: FLT_MIN, not lowest()
  std::vector<std::string> user_symbols;
  const int n = proto.pieces_size();
  m->pieces.reserve(n);
  for (int i = 0; i < n; ++i) {
    const auto& p = proto.pieces(i);
    m->pieces.push_back(p.piece());
    m->scores.push_back(p.score());
    m->types.push_back(p.type());
  }
  for (int i = 0; i < n; ++i) {
    const std::string& piece = m->pieces[i];
    const int type = m->types[i];
    PTRAIN_CHECK(type >= kNormal && type <= kByte,
                 "'{}': piece {} ('{}') has type {}, which is not a SentencePiece piece type",
                 model_file, i, piece, type);
    PTRAIN_CHECK(!piece.empty(), "'{}': piece {} is empty", model_file, i);
    const bool matchable = type == kNormal || type == kUserDefined || type == kUnused;
    auto& map = matchable ? m->matchable : m->reserved;
    PTRAIN_CHECK(map.emplace(piece, i).second, "'{}': piece '{}' is defined twice (ids {} and {})",
                 model_file, piece, map.at(piece), i);
    if (matchable) m->max_piece_bytes = std::max(m->max_piece_bytes, piece.size());
    if (type == kNormal) {
      m->min_score = std::min(m->min_score, m->scores[i]);
      m->max_score = std::max(m->max_score, m->scores[i]);
    }
    if (type == kUserDefined) user_symbols.push_back(piece);
    if (type == kUnknown) {
      PTRAIN_CHECK(m->unk_id < 0, "'{}': pieces {} and {} are both UNKNOWN", model_file, m->unk_id,
                   i);
      m->unk_id = i;
    }
    if (type == kByte) {
      const std::optional<int> b = byte_piece_value(piece);
      PTRAIN_CHECK(b.has_value(), "'{}': BYTE piece {} is '{}', not <0xNN>", model_file, i, piece);
      PTRAIN_CHECK(m->byte_fallback,
                   "'{}': piece {} is a BYTE piece but trainer_spec.byte_fallback is false",
                   model_file, i);
      m->byte_ids[*b] = i;
    }
  }
  PTRAIN_CHECK(m->unk_id >= 0, "'{}': no piece of type UNKNOWN", model_file);
  if (m->model_type == kUnigram) {
    for (const auto& [piece, id] : m->matchable) {
      for (size_t len = 1; len < piece.size(); ++len) m->prefixes.emplace(piece.substr(0, len), -1);
    }
    for (const auto& [piece, id] : m->matchable) m->prefixes[piece] = id;
  }

  SentencePieceNormalizerSpec spec;
  spec.charsmap = norm.precompiled_charsmap();
  spec.add_dummy_prefix = norm.add_dummy_prefix();
  spec.remove_extra_whitespaces = norm.remove_extra_whitespaces();
  spec.escape_whitespaces = norm.escape_whitespaces();
  m->normalizer.emplace(std::move(spec), std::move(user_symbols), model_file);

  auto tok = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(m)));
  auto special = [&](int id, const char* field) -> std::optional<int64_t> {
    if (id < 0) return std::nullopt;
    PTRAIN_CHECK(id < n, "'{}': trainer_spec.{} {} is outside the vocabulary [0, {})", model_file,
                 field, id, n);
    return id;
  };
  tok->bos_id = special(trainer.bos_id(), "bos_id");
  tok->eos_id = special(trainer.eos_id(), "eos_id");
  tok->pad_id = special(trainer.pad_id(), "pad_id");
  tok->add_bos = tok->bos_id.has_value();
  tok->source = fmt::format("'{}'", model_file);
  return tok;
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const std::string& model_dir) {
  auto tok = load_file(model_dir + "/tokenizer.model");
  const std::string config_path = model_dir + "/tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(config_path, ec)) return tok;
  tok->source += fmt::format(" and '{}'", config_path);
  const nlohmann::json j = read_json_file(config_path);
  if (j.is_object() && j.contains("add_bos_token") && !j["add_bos_token"].is_null()) {
    PTRAIN_CHECK(j["add_bos_token"].is_boolean(), "'{}': add_bos_token must be true or false",
                 config_path);
    tok->add_bos = j["add_bos_token"].get<bool>();
    PTRAIN_CHECK(!tok->add_bos || tok->bos_id,
                 "'{}': add_bos_token is true but '{}/tokenizer.model' has no bos piece "
                 "(trainer_spec.bos_id is -1)",
                 config_path, model_dir);
  }
  return tok;
}

}  // namespace ptrain
