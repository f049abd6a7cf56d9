// Decoders of tokenizer.json (see hf_pipeline.h), and the Metaspace options they share with the
// pre-tokenizer.
#include <fmt/format.h>

#include <unordered_map>
#include <utility>

#include "tokenizer/hf_pipeline.h"
#include "tokenizer/hf_regex.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

MetaspaceOptions parse_metaspace(const nlohmann::json& j, const JsonWhere& where) {
  MetaspaceOptions o;
  o.replacement = json_char(j, "replacement", where);
  const std::string scheme = json_optional_string(j, "prepend_scheme", where).value_or("always");
  if (scheme == "always") {
    o.scheme = PrependScheme::kAlways;
  } else if (scheme == "first") {
    o.scheme = PrependScheme::kFirst;
  } else if (scheme == "never") {
    o.scheme = PrependScheme::kNever;
  } else {
    throw UserError(fmt::format("{}: unknown prepend_scheme '{}' (always, first or never)",
                                where["prepend_scheme"].str(), scheme));
  }
  const nlohmann::json* legacy = json_field(j, "add_prefix_space");
  if (legacy != nullptr && legacy->is_boolean() && !legacy->get<bool>())
    PTRAIN_CHECK(o.scheme == PrependScheme::kNever,
                 "{}: add_prefix_space false does not match prepend_scheme '{}' (Hugging Face "
                 "tokenizers refuses this file too); use prepend_scheme \"never\"",
                 where.str(), scheme);
  o.split = json_bool(j, "split", true, where);
  return o;
}

namespace {

class SequenceDecoder : public HfDecoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<HfDecoder>> parts)
      : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<HfDecoder>> parts_;
};

// Byte-level characters back to bytes, all tokens into one string; a token holding a character
// outside the byte alphabet (an added token, say) contributes its own UTF-8 bytes.
class ByteLevelDecoder : public HfDecoder {
 public:
  ByteLevelDecoder() {
    for (int b = 0; b < 256; ++b) {
      const std::string& c = byte_level_char(static_cast<unsigned char>(b));
      size_t i = 0;
      bytes_[utf8_next(c, i)] = static_cast<char>(b);
    }
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const size_t mark = bytes.size();
      bool all = true;
      for (size_t i = 0; i < t.size() && all;) {
        auto it = bytes_.find(utf8_next(t, i));
        if (it == bytes_.end()) {
          all = false;
        } else {
          bytes.push_back(it->second);
        }
      }
      if (!all) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }

 private:
  std::unordered_map<uint32_t, char> bytes_;
};

class ReplaceDecoder : public HfDecoder {
 public:
  ReplaceDecoder(HfRegex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& t : tokens) {
      matches.clear();
      pattern_.find_all(t, matches);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const auto& [s, e] : matches) {
        out.append(t, prev, s - prev);
        out += content_;
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  HfRegex pattern_;
  std::string content_;
};

// "<0xNN>" tokens back to bytes; a run of them that is not valid UTF-8 becomes one U+FFFD per
// byte, as tokenizers' ByteFallback does.
class ByteFallbackDecoder : public HfDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_invalid_offset(pending) == std::string::npos) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') byte = parse_hex_byte(t);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  // Rust's u8::from_str_radix(&token[3..5], 16): two hex digits, or '+' and one.
  static int parse_hex_byte(const std::string& t) {
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int lo = hex(t[4]);
    if (lo < 0) return -1;
    if (t[3] == '+') return lo;
    const int hi = hex(t[3]);
    return hi < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder : public HfDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing occurrences of one character from each token.
class StripDecoder : public HfDecoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const size_t n = content_.size();
    for (std::string& t : tokens) {
      size_t begin = 0, end = t.size();
      for (size_t k = 0; k < start_ && end - begin >= n && t.compare(begin, n, content_) == 0; ++k)
        begin += n;
      for (size_t k = 0; k < stop_ && end - begin >= n && t.compare(end - n, n, content_) == 0; ++k)
        end -= n;
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class MetaspaceDecoder : public HfDecoder {
 public:
  explicit MetaspaceDecoder(MetaspaceOptions options) : options_(std::move(options)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const std::string& rep = options_.replacement;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const bool drop = i == 0 && options_.scheme != PrependScheme::kNever;
      std::string out;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, rep.size(), rep) == 0) {
          if (!drop) out.push_back(' ');
          p += rep.size();
        } else {
          out.push_back(t[p++]);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  MetaspaceOptions options_;
};

size_t json_count(const nlohmann::json& j, const char* key, const JsonWhere& where) {
  const nlohmann::json* v = json_field(j, key);
  if (v == nullptr) return 0;
  PTRAIN_CHECK(v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0),
               "{}: expected a non-negative integer, got {}", where[key].str(), v->dump());
  return v->get<size_t>();
}

}  // namespace

std::unique_ptr<HfDecoder> make_decoder(const nlohmann::json& j, const JsonWhere& where) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    const nlohmann::json& list = json_array(j, "decoders", where);
    std::vector<std::unique_ptr<HfDecoder>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      std::unique_ptr<HfDecoder> part = make_decoder(list[i], where["decoders"][i]);
      PTRAIN_CHECK(part != nullptr, "{}: null", where["decoders"][i].str());
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(parse_metaspace(j, where));
  if (type == "Strip")
    return std::make_unique<StripDecoder>(json_char(j, "content", where),
                                          json_count(j, "start", where),
                                          json_count(j, "stop", where));
  if (type == "Replace") {
    const nlohmann::json* p = json_field(j, "pattern");
    PTRAIN_CHECK(p != nullptr && p->is_object(), "{}: missing", where["pattern"].str());
    HfRegex pattern = p->contains("String")
                          ? HfRegex::from_literal(json_string(*p, "String", where["pattern"]),
                                                  where["pattern"]["String"].str())
                          : HfRegex::from_pattern(json_string(*p, "Regex", where["pattern"]),
                                                  where["pattern"]["Regex"].str());
    return std::make_unique<ReplaceDecoder>(std::move(pattern), json_string(j, "content", where));
  }
  throw UserError(fmt::format(
      "{}: decoder type '{}' is not supported by ptrain (supported: Sequence, ByteLevel, "
      "ByteFallback, Fuse, Metaspace, Strip, Replace)",
      where.str(), type));
}

}  // namespace ptrain
