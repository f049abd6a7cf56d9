#include "tokenizer/hf_tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_file.h"
#include "tokenizer/hf_added_tokens.h"
#include "tokenizer/hf_bpe_model.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/hf_pipeline.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

struct HfBpeTokenizer::Impl {
  std::string file;  // tokenizer.json, for errors
  std::unique_ptr<HfNormalizer> normalizer;
  std::unique_ptr<HfPreTokenizer> pre_tokenizer;
  std::unique_ptr<HfBpeModel> model;
  std::unique_ptr<HfDecoder> decoder;
  std::vector<AddedToken> added;                     // one per id, in file order
  std::unordered_map<int64_t, size_t> added_by_id;   // id -> index into `added`
  std::unordered_set<std::string> special_contents;  // decode(skip_special) drops these
  std::unique_ptr<AddedTokenMatcher> raw_matcher;    // normalized: false, on the input text
  std::unique_ptr<AddedTokenMatcher> norm_matcher;   // normalized: true, on normalized text
  std::optional<int64_t> template_bos;               // the post_processor's leading token
  bool clean_up_spaces = false;

  std::optional<int64_t> token_to_id(const std::string& content) const {
    for (const AddedToken& t : added)
      if (t.content == content) return t.id;
    return model->token_to_id(content);
  }
  const std::string* id_to_token(int64_t id) const {
    auto it = added_by_id.find(id);
    return it != added_by_id.end() ? &added[it->second].content : model->id_to_token(id);
  }
};

namespace {

// ---------------------------------------------------------------- added tokens

// Reads added_tokens and checks each id against the one `tokenizers` would give the token when
// loading the file (it keeps the model's id for a content in the vocabulary and numbers the others
// from the vocabulary's size up, only warning when the file says otherwise).
void load_added_tokens(const nlohmann::json& root, HfBpeTokenizer::Impl& impl,
                       const JsonWhere& where) {
  const nlohmann::json* list = json_field(root, "added_tokens");
  if (list == nullptr) return;
  PTRAIN_CHECK(list->is_array(), "{}: expected an array", where["added_tokens"].str());
  std::unordered_map<std::string, int64_t> assigned;
  int64_t max_assigned = -1;
  const auto model_size = static_cast<int64_t>(impl.model->vocab_entries());
  for (size_t i = 0; i < list->size(); ++i) {
    const nlohmann::json& j = (*list)[i];
    const JsonWhere at = where["added_tokens"][i];
    AddedToken t;
    t.content = json_string(j, "content", at);
    const nlohmann::json* id = json_field(j, "id");
    PTRAIN_CHECK(id != nullptr && id->is_number_integer() && id->get<int64_t>() >= 0,
                 "{}: expected a non-negative integer", at["id"].str());
    t.id = id->get<int64_t>();
    t.single_word = json_bool(j, "single_word", false, at);
    t.lstrip = json_bool(j, "lstrip", false, at);
    t.rstrip = json_bool(j, "rstrip", false, at);
    t.special = json_bool(j, "special", false, at);
    t.normalized = json_bool(j, "normalized", !t.special, at);
    if (t.content.empty()) continue;  // tokenizers ignores these
    if (t.special) impl.special_contents.insert(t.content);

    int64_t expected;
    if (auto it = assigned.find(t.content); it != assigned.end()) {
      expected = it->second;
    } else if (std::optional<int64_t> in_vocab = impl.model->token_to_id(t.content)) {
      expected = *in_vocab;
    } else if (max_assigned < 0) {
      expected = model_size;
    } else {
      expected = max_assigned >= model_size || model_size == 0 ? max_assigned + 1 : model_size;
    }
    PTRAIN_CHECK(expected == t.id,
                 "{}: token '{}' has id {} but Hugging Face tokenizers gives it id {} when loading "
                 "this file (the model vocabulary and added_tokens disagree); fix the file",
                 at.str(), t.content, t.id, expected);
    assigned[t.content] = t.id;
    max_assigned = std::max(max_assigned, t.id);
    if (auto it = impl.added_by_id.find(t.id); it != impl.added_by_id.end()) {
      impl.added[it->second] = t;  // the later entry's flags win
    } else {
      impl.added_by_id[t.id] = impl.added.size();
      impl.added.push_back(t);
    }
  }
}

void build_matchers(HfBpeTokenizer::Impl& impl) {
  impl.raw_matcher = std::make_unique<AddedTokenMatcher>(&impl.added);
  impl.norm_matcher = std::make_unique<AddedTokenMatcher>(&impl.added);
  // tokenizers lists special tokens before the others; the first of equal patterns wins.
  for (bool special : {true, false}) {
    for (size_t i = 0; i < impl.added.size(); ++i) {
      AddedToken& t = impl.added[i];
      t.special = impl.special_contents.count(t.content) > 0;
      if (t.special != special) continue;
      if (!t.normalized) {
        impl.raw_matcher->add(t.content, static_cast<int32_t>(i));
        continue;
      }
      std::string pattern = t.content;
      if (impl.normalizer) impl.normalizer->normalize(pattern);
      impl.norm_matcher->add(pattern, static_cast<int32_t>(i));
    }
  }
}

// ---------------------------------------------------------------- post-processor

// The id a post_processor puts before the text, if any. Templates that add anything else (eos
// after the text, pair templates aside) are refused: encode_sequence adds at most a bos.
std::optional<int64_t> template_bos(const nlohmann::json& j, const JsonWhere& where) {
  if (j.is_null()) return std::nullopt;
  const std::string type = json_type(j, where);
  if (type == "ByteLevel") return std::nullopt;  // offsets only
  if (type == "Sequence") {
    const nlohmann::json& list = json_array(j, "processors", where);
    std::optional<int64_t> bos;
    for (size_t i = 0; i < list.size(); ++i) {
      std::optional<int64_t> b = template_bos(list[i], where["processors"][i]);
      PTRAIN_CHECK(!(b && bos), "{}: more than one template adds tokens", where.str());
      if (b) bos = b;
    }
    return bos;
  }
  PTRAIN_CHECK(type == "TemplateProcessing",
               "{}: post_processor type '{}' is not supported by ptrain (supported: "
               "TemplateProcessing, ByteLevel, Sequence)",
               where.str(), type);
  const nlohmann::json& single = json_array(j, "single", where);
  auto is_sequence = [](const nlohmann::json& item) { return item.contains("Sequence"); };
  if (single.size() == 1 && is_sequence(single[0])) return std::nullopt;
  PTRAIN_CHECK(single.size() == 2 && single[0].contains("SpecialToken") && is_sequence(single[1]),
               "{}: the template {} is not supported: ptrain adds at most one token (bos) before "
               "the text and none after it",
               where["single"].str(), single.dump());
  const std::string name = json_string(single[0]["SpecialToken"], "id", where["single"][0]);
  const nlohmann::json* specials = json_field(j, "special_tokens");
  const nlohmann::json* entry = specials ? json_field(*specials, name.c_str()) : nullptr;
  PTRAIN_CHECK(entry != nullptr, "{}: '{}' is not listed", where["special_tokens"].str(), name);
  const nlohmann::json* ids = json_field(*entry, "ids");
  PTRAIN_CHECK(ids != nullptr && ids->is_array() && ids->size() == 1 &&
                   (*ids)[0].is_number_unsigned() &&
                   (*ids)[0].get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()},
               "{}: expected one id, got {}", where["special_tokens"][name]["ids"].str(),
               ids != nullptr ? ids->dump() : "nothing");
  return (*ids)[0].get<int64_t>();
}

// ---------------------------------------------------------------- tokenizer_config.json

// A special token name: "<s>", {"content": "<s>", ...} or null.
std::optional<std::string> config_token(const nlohmann::json& config, const char* key,
                                        const JsonWhere& where) {
  const nlohmann::json* v = json_field(config, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_object()) return json_string(*v, "content", where[key]);
  PTRAIN_CHECK(v->is_string(), "{}: expected a token string, got {}", where[key].str(), v->dump());
  return v->get<std::string>();
}

bool normalizer_prepends(const nlohmann::json& j) {
  if (!j.is_object()) return false;
  const std::string type = j.value("type", "");
  if (type == "Prepend") return true;
  if (type == "Sequence" && j.contains("normalizers") && j["normalizers"].is_array()) {
    for (const nlohmann::json& n : j["normalizers"])
      if (normalizer_prepends(n)) return true;
  }
  return false;
}

void apply_config(const nlohmann::json& config, const nlohmann::json& tokenizer_json,
                  HfBpeTokenizer& tok, HfBpeTokenizer::Impl& impl, const JsonWhere& where) {
  auto id_of = [&](const char* key) -> std::optional<int64_t> {
    std::optional<std::string> name = config_token(config, key, where);
    if (!name) return std::nullopt;
    std::optional<int64_t> id = impl.token_to_id(*name);
    PTRAIN_CHECK(id.has_value(), "{}: '{}' is not a token of tokenizer.json", where[key].str(),
                 *name);
    return id;
  };
  tok.bos_id = id_of("bos_token");
  tok.eos_id = id_of("eos_token");
  tok.pad_id = id_of("pad_token");

  PTRAIN_CHECK(!json_bool(config, "add_eos_token", false, where),
               "{}: true is not supported: ptrain's templates append eos themselves",
               where["add_eos_token"].str());
  if (json_field(config, "add_bos_token") != nullptr) {
    // LlamaTokenizerFast and its kin rebuild the post-processor from this flag.
    tok.add_bos = json_bool(config, "add_bos_token", false, where);
    PTRAIN_CHECK(!tok.add_bos || tok.bos_id, "{}: true, but there is no bos_token",
                 where["add_bos_token"].str());
  } else {
    tok.add_bos = impl.template_bos.has_value();
    if (impl.template_bos) {
      PTRAIN_CHECK(!tok.bos_id || *tok.bos_id == *impl.template_bos,
                   "{}: the post_processor starts sequences with id {} but bos_token is id {}",
                   where.str(), *impl.template_bos, *tok.bos_id);
      tok.bos_id = impl.template_bos;
    }
  }
  impl.clean_up_spaces = json_bool(config, "clean_up_tokenization_spaces", false, where);

  // transformers rewrites (or, for Llama, re-converts) the pre-tokenizer when add_prefix_space
  // disagrees with tokenizer.json; ptrain only accepts agreement.
  if (const nlohmann::json* aps = json_field(config, "add_prefix_space")) {
    const bool wanted = json_bool(config, "add_prefix_space", false, where);
    std::optional<bool> has =
        pre_tokenizer_adds_prefix_space(tokenizer_json.value("pre_tokenizer", nlohmann::json()));
    if (!has) has = normalizer_prepends(tokenizer_json.value("normalizer", nlohmann::json()));
    PTRAIN_CHECK(*has == wanted,
                 "{}: {} disagrees with tokenizer.json, which {} a prefix space; transformers "
                 "would rebuild the tokenizer, which ptrain does not do",
                 where["add_prefix_space"].str(), aps->dump(), *has ? "adds" : "does not add");
  }

  // Tokens transformers would add on top of tokenizer.json: refused rather than guessed.
  if (const nlohmann::json* decoder = json_field(config, "added_tokens_decoder")) {
    PTRAIN_CHECK(decoder->is_object(), "{}: expected an object",
                 where["added_tokens_decoder"].str());
    for (auto it = decoder->begin(); it != decoder->end(); ++it) {
      const JsonWhere at = where["added_tokens_decoder"][it.key()];
      const std::string content = json_string(*it, "content", at);
      int64_t id = -1;
      try {
        id = std::stoll(it.key());
      } catch (const std::exception&) {
      }
      const std::string* have = impl.id_to_token(id);
      PTRAIN_CHECK(have != nullptr && *have == content,
                   "{}: '{}' is not token {} of tokenizer.json (tokenizer.json and "
                   "tokenizer_config.json disagree)",
                   at.str(), content, it.key());
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- loading

HfBpeTokenizer::HfBpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfBpeTokenizer::~HfBpeTokenizer() = default;

std::unique_ptr<HfBpeTokenizer> HfBpeTokenizer::load(const std::string& model_dir) {
  auto impl = std::make_unique<Impl>();
  impl->file = model_dir + "/tokenizer.json";
  const nlohmann::json root = read_json_file(impl->file);
  const JsonWhere where(impl->file);
  PTRAIN_CHECK(root.is_object(), "{}: expected a JSON object", where.str());

  const nlohmann::json* model = json_field(root, "model");
  PTRAIN_CHECK(model != nullptr && model->is_object(), "{}: missing", where["model"].str());
  // Files written by tokenizers before 0.9 carry no model type; such a model with merges is BPE.
  const std::string model_type = model->contains("type")     ? json_type(*model, where["model"])
                                 : model->contains("merges") ? "BPE"
                                                             : "unknown";
  PTRAIN_CHECK(model_type == "BPE",
               "{}: model type '{}' is not supported by ptrain (supported: BPE; WordPiece, "
               "Unigram and WordLevel are not)",
               where["model"]["type"].str(), model_type);
  impl->model = std::make_unique<HfBpeModel>(*model, impl->file);
  impl->normalizer =
      make_normalizer(root.value("normalizer", nlohmann::json()), where["normalizer"]);
  impl->pre_tokenizer =
      make_pre_tokenizer(root.value("pre_tokenizer", nlohmann::json()), where["pre_tokenizer"]);
  impl->decoder = make_decoder(root.value("decoder", nlohmann::json()), where["decoder"]);
  impl->template_bos =
      template_bos(root.value("post_processor", nlohmann::json()), where["post_processor"]);
  load_added_tokens(root, *impl, where);
  PTRAIN_CHECK(!impl->template_bos || impl->id_to_token(*impl->template_bos) != nullptr,
               "{}: the template starts sequences with id {}, which is not a token of the "
               "vocabulary",
               where["post_processor"].str(), *impl->template_bos);
  build_matchers(*impl);

  Impl& ref = *impl;
  std::unique_ptr<HfBpeTokenizer> tok(new HfBpeTokenizer(std::move(impl)));
  const std::string config_path = model_dir + "/tokenizer_config.json";
  std::error_code ec;
  const bool has_config = std::filesystem::exists(config_path, ec);
  // Without tokenizer_config.json there are no special tokens: worth saying where they are missed.
  tok->source = has_config ? fmt::format("'{}' and '{}'", ref.file, config_path)
                           : fmt::format("'{}'; no tokenizer_config.json", ref.file);
  const nlohmann::json config = has_config ? read_json_file(config_path) : nlohmann::json::object();
  PTRAIN_CHECK(config.is_object(), "'{}': expected a JSON object", config_path);
  apply_config(config, root, *tok, ref, JsonWhere(config_path));
  return tok;
}

// ---------------------------------------------------------------- encode / decode

std::vector<int64_t> HfBpeTokenizer::encode(std::string_view text) const {
  return encode_text(text, true);
}

std::vector<int64_t> HfBpeTokenizer::encode_after_special(std::string_view text) const {
  return encode_text(text, false);
}

std::vector<int64_t> HfBpeTokenizer::encode_text(std::string_view text, bool at_input_start) const {
  const size_t bad = utf8_invalid_offset(text);
  PTRAIN_CHECK(bad == std::string_view::npos,
               "text to tokenize is not valid UTF-8 (byte {} of {}: 0x{:02X})", bad, text.size(),
               bad == std::string_view::npos ? 0 : static_cast<unsigned char>(text[bad]));
  const Impl& impl = *impl_;
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 1);
  std::vector<TextSegment> raw, normalized;
  std::vector<TextPiece> pieces;
  impl.raw_matcher->split(text, raw);
  for (const TextSegment& seg : raw) {
    if (seg.token >= 0) {
      ids.push_back(impl.added[seg.token].id);
      continue;
    }
    std::string norm(text.substr(seg.start, seg.end - seg.start));
    if (impl.normalizer) impl.normalizer->normalize(norm);
    normalized.clear();
    impl.norm_matcher->split(norm, normalized);
    for (const TextSegment& part : normalized) {
      if (part.token >= 0) {
        ids.push_back(impl.added[part.token].id);
        continue;
      }
      if (part.end == part.start) continue;
      pieces.clear();
      pieces.push_back({norm.substr(part.start, part.end - part.start),
                        at_input_start && seg.start == 0 && part.start == 0});
      if (impl.pre_tokenizer) impl.pre_tokenizer->pre_tokenize(pieces);
      for (const TextPiece& piece : pieces) impl.model->tokenize(piece.text, ids);
    }
  }
  return ids;
}

std::string HfBpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  const Impl& impl = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    const std::string* token = impl.id_to_token(id);
    PTRAIN_CHECK(token != nullptr, "token id {} is not in the vocabulary of '{}'", id, impl.file);
    if (skip_special && impl.special_contents.count(*token)) continue;
    tokens.push_back(*token);
  }
  std::string text;
  if (impl.decoder) {
    impl.decoder->decode_chain(tokens);
    for (const std::string& t : tokens) text += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
  }
  if (impl.clean_up_spaces) {
    // transformers' clean_up_tokenization, in its order.
    static const std::pair<const char*, const char*> kRules[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kRules) {
      const std::string f(from), t(to);
      std::string out;
      size_t prev = 0;
      for (size_t p = text.find(f); p != std::string::npos; p = text.find(f, p + f.size())) {
        out.append(text, prev, p - prev);
        out += t;
        prev = p + f.size();
      }
      out.append(text, prev, std::string::npos);
      text = std::move(out);
    }
  }
  return text;
}

std::string HfBpeTokenizer::piece(int64_t id) const {
  const std::string* token = impl_->id_to_token(id);
  PTRAIN_CHECK(token != nullptr, "token id {} is not in the vocabulary of '{}'", id, impl_->file);
  return *token;
}

std::optional<int64_t> HfBpeTokenizer::token_id(std::string_view piece) const {
  return impl_->token_to_id(std::string(piece));
}

int64_t HfBpeTokenizer::vocab_size() const {
  int64_t max_id = impl_->model->max_id();
  for (const AddedToken& t : impl_->added) max_id = std::max(max_id, t.id);
  return max_id + 1;
}

}  // namespace ptrain
