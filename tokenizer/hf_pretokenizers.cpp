// Normalizers and pre-tokenizers of tokenizer.json (see hf_pipeline.h).
#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "tokenizer/hf_pipeline.h"
#include "tokenizer/hf_regex.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

namespace {

// A {"String": ...} or {"Regex": ...} pattern of Split and Replace.
HfRegex make_pattern(const nlohmann::json& j, const char* key, const JsonWhere& where) {
  const JsonWhere at = where[key];
  const nlohmann::json* p = json_field(j, key);
  PTRAIN_CHECK(p != nullptr && p->is_object() && p->size() == 1,
               "{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}", at.str());
  if (std::optional<std::string> s = json_optional_string(*p, "String", at))
    return HfRegex::from_literal(*s, at["String"].str());
  if (std::optional<std::string> r = json_optional_string(*p, "Regex", at))
    return HfRegex::from_pattern(*r, at["Regex"].str());
  throw UserError(fmt::format("{}: pattern kind {} is not supported (String or Regex)", at.str(),
                              p->begin().key()));
}

[[noreturn]] void unsupported(const std::string& kind, const std::string& type,
                              const JsonWhere& where, const char* supported) {
  throw UserError(fmt::format("{}: {} type '{}' is not supported by ptrain (supported: {})",
                              where.str(), kind, type, supported));
}

// ---------------------------------------------------------------- normalizers

class SequenceNormalizer : public HfNormalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<HfNormalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& p : parts_) p->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<HfNormalizer>> parts_;
};

class PrependNormalizer : public HfNormalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public HfNormalizer {
 public:
  ReplaceNormalizer(HfRegex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    pattern_.find_all(text, matches);
    if (matches.empty()) return;
    std::string out;
    out.reserve(text.size() + matches.size() * content_.size());
    size_t prev = 0;
    for (const auto& [s, e] : matches) {
      out.append(text, prev, s - prev);
      out += content_;
      prev = e;
    }
    out.append(text, prev, std::string::npos);
    text = std::move(out);
  }

 private:
  HfRegex pattern_;
  std::string content_;
};

class UnicodeNormalizer : public HfNormalizer {
 public:
  explicit UnicodeNormalizer(UnicodeForm form) : form_(form) {}
  void normalize(std::string& text) const override { text = unicode_normalize(text, form_); }

 private:
  UnicodeForm form_;
};

// ---------------------------------------------------------------- splitting

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

SplitBehavior parse_behavior(const nlohmann::json& j, const JsonWhere& where) {
  const std::string b = json_string(j, "behavior", where);
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  throw UserError(fmt::format("{}: unknown split behavior '{}'", where["behavior"].str(), b));
}

struct Span {
  size_t start, end;
  bool is_match;
};

// tokenizers' NormalizedString::split: the text covered by alternating non-match / match spans,
// grouped by the behavior; removed spans and empty pieces dropped.
void split_piece(const TextPiece& piece, const std::vector<std::pair<size_t, size_t>>& matches,
                 bool invert, SplitBehavior behavior, std::vector<TextPiece>& out) {
  const std::string& text = piece.text;
  std::vector<Span> spans;
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) spans.push_back({prev, s, invert});
    spans.push_back({s, e, !invert});
    prev = e;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), invert});

  std::vector<Span> kept;  // is_match reused as "remove"
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) kept.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      kept = spans;
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.start, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.start, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().start = it->start;
        } else {
          kept.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Span& s : kept) {
    if (s.is_match || s.end == s.start) continue;
    out.push_back({text.substr(s.start, s.end - s.start), piece.at_input_start && s.start == 0});
  }
}

// ---------------------------------------------------------------- pre-tokenizers

class SequencePreTokenizer : public HfPreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<HfPreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<HfPreTokenizer>> parts_;
};

class SplitPreTokenizer : public HfPreTokenizer {
 public:
  SplitPreTokenizer(HfRegex pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    std::vector<TextPiece> out;
    out.reserve(pieces.size() * 4);
    std::vector<std::pair<size_t, size_t>> matches;
    for (const TextPiece& piece : pieces) {
      matches.clear();
      pattern_.find_all(piece.text, matches);
      split_piece(piece, matches, invert_, behavior_, out);
    }
    pieces = std::move(out);
  }

 private:
  HfRegex pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's pre-tokenization regex, which tokenizers' ByteLevel applies when use_regex is set.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public HfPreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    static const HfRegex gpt2 = HfRegex::from_pattern(kGpt2Pattern, "ByteLevel");
    std::vector<TextPiece> out;
    out.reserve(use_regex_ ? pieces.size() * 8 : pieces.size());
    std::vector<std::pair<size_t, size_t>> matches;
    for (TextPiece& piece : pieces) {
      if (add_prefix_space_ && !piece.text.empty() && piece.text[0] != ' ')
        piece.text.insert(0, " ");
      if (use_regex_) {
        matches.clear();
        gpt2.find_all(piece.text, matches);
        split_piece(piece, matches, false, SplitBehavior::kIsolated, out);
      } else {
        out.push_back(std::move(piece));
      }
    }
    for (TextPiece& piece : out) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (char c : piece.text) mapped += byte_level_char(static_cast<unsigned char>(c));
      piece.text = std::move(mapped);
    }
    pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
};

class MetaspacePreTokenizer : public HfPreTokenizer {
 public:
  explicit MetaspacePreTokenizer(MetaspaceOptions options)
      : options_(std::move(options)),
        replacement_(HfRegex::from_literal(options_.replacement, "Metaspace")) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    std::vector<TextPiece> out;
    out.reserve(pieces.size());
    std::vector<std::pair<size_t, size_t>> matches;
    const std::string& rep = options_.replacement;
    for (TextPiece& piece : pieces) {
      std::string replaced;
      replaced.reserve(piece.text.size() + rep.size());
      for (char c : piece.text) {
        if (c == ' ') {
          replaced += rep;
        } else {
          replaced.push_back(c);
        }
      }
      piece.text = std::move(replaced);
      const bool starts = piece.text.compare(0, rep.size(), rep) == 0;
      if (!starts && (options_.scheme == PrependScheme::kAlways ||
                      (options_.scheme == PrependScheme::kFirst && piece.at_input_start)))
        piece.text.insert(0, rep);
      if (options_.split) {
        matches.clear();
        replacement_.find_all(piece.text, matches);
        split_piece(piece, matches, false, SplitBehavior::kMergedWithNext, out);
      } else {
        out.push_back(std::move(piece));
      }
    }
    pieces = std::move(out);
  }

 private:
  MetaspaceOptions options_;
  HfRegex replacement_;
};

std::unique_ptr<HfPreTokenizer> make_pre_tokenizer_at(const nlohmann::json& j,
                                                      const JsonWhere& where, bool first_stage) {
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    const nlohmann::json& list = json_array(j, "pretokenizers", where);
    std::vector<std::unique_ptr<HfPreTokenizer>> parts;
    for (size_t i = 0; i < list.size(); ++i)
      parts.push_back(
          make_pre_tokenizer_at(list[i], where["pretokenizers"][i], first_stage && i == 0));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(json_bool(j, "add_prefix_space", true, where),
                                                   json_bool(j, "use_regex", true, where));
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(make_pattern(j, "pattern", where),
                                               parse_behavior(j, where),
                                               json_bool(j, "invert", false, where));
  if (type == "Digits") {
    const bool individual = json_bool(j, "individual_digits", false, where);
    return std::make_unique<SplitPreTokenizer>(
        HfRegex::from_pattern(individual ? "\\p{N}" : "\\p{N}+", where.str()),
        SplitBehavior::kIsolated, false);
  }
  if (type == "Metaspace") {
    MetaspaceOptions options = parse_metaspace(j, where);
    // "first" depends on where a piece sits in the original text; ptrain tracks that exactly
    // only before any other pre-tokenizer has split the text.
    PTRAIN_CHECK(options.scheme != PrependScheme::kFirst || first_stage,
                 "{}: Metaspace with prepend_scheme \"first\" after another pre-tokenizer in a "
                 "Sequence is not supported",
                 where.str());
    return std::make_unique<MetaspacePreTokenizer>(std::move(options));
  }
  unsupported("pre_tokenizer", type, where, "Sequence, ByteLevel, Split, Metaspace, Digits");
}

}  // namespace

// ---------------------------------------------------------------- factories

std::unique_ptr<HfNormalizer> make_normalizer(const nlohmann::json& j, const JsonWhere& where) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    const nlohmann::json& list = json_array(j, "normalizers", where);
    std::vector<std::unique_ptr<HfNormalizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      std::unique_ptr<HfNormalizer> part = make_normalizer(list[i], where["normalizers"][i]);
      PTRAIN_CHECK(part != nullptr, "{}: null", where["normalizers"][i].str());
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(json_string(j, "prepend", where));
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(make_pattern(j, "pattern", where),
                                               json_string(j, "content", where));
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::kNfkd);
  unsupported("normalizer", type, where, "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD");
}

std::unique_ptr<HfPreTokenizer> make_pre_tokenizer(const nlohmann::json& j,
                                                   const JsonWhere& where) {
  if (j.is_null()) return nullptr;
  return make_pre_tokenizer_at(j, where, true);
}

const std::string& byte_level_char(unsigned char b) {
  // GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
  // take the code points from U+0100 up, in byte order.
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int n = 0;
    for (int byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                             (byte >= 0xAE && byte <= 0xFF);
      utf8_append(t[byte], printable ? static_cast<uint32_t>(byte) : 256 + n++);
    }
    return t;
  }();
  return table[b];
}

std::optional<bool> pre_tokenizer_adds_prefix_space(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  const std::string type = j.value("type", "");
  if (type == "ByteLevel") return j.value("add_prefix_space", true);
  if (type == "Metaspace") return parse_metaspace(j, JsonWhere("")).scheme != PrependScheme::kNever;
  if (type == "Sequence" && j.contains("pretokenizers") && j["pretokenizers"].is_array()) {
    for (const nlohmann::json& p : j["pretokenizers"])
      if (std::optional<bool> v = pre_tokenizer_adds_prefix_space(p)) return v;
  }
  return std::nullopt;
}

}  // namespace ptrain
