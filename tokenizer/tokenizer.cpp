#include "tokenizer/tokenizer.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_file.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/sentencepiece_tokenizer.h"

namespace ptrain {

std::vector<int64_t> Tokenizer::encode_sequence(std::string_view text) const {
  std::vector<int64_t> ids;
  if (add_bos && bos_id) ids.push_back(*bos_id);
  std::vector<int64_t> body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::string Tokenizer::describe() const {
  if (!source.empty()) return fmt::format("tokenizer '{}' (from {})", name(), source);
  if (!model_dir.empty()) return fmt::format("tokenizer '{}' (from '{}')", name(), model_dir);
  return fmt::format("tokenizer '{}'", name());
}

ByteTokenizer::ByteTokenizer() {
  pad_id = 0;
  bos_id = 1;
  eos_id = 2;
  add_bos = true;
}

std::vector<int64_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(static_cast<int64_t>(c) + kOffset);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string out;
  for (int64_t id : ids) {
    PTRAIN_CHECK(id >= 0 && id < kVocab, "token id {} is outside the byte vocabulary [0, {})", id,
                 kVocab);
    if (id >= kOffset) {
      out.push_back(static_cast<char>(id - kOffset));
    } else if (!skip_special) {
      out += piece(id);
    }
  }
  return out;
}

std::string ByteTokenizer::piece(int64_t id) const {
  static const char* kSpecial[] = {"<pad>", "<s>", "</s>"};
  PTRAIN_CHECK(id >= 0 && id < kVocab, "token id {} is outside the byte vocabulary [0, {})", id,
               kVocab);
  if (id < kOffset) return kSpecial[id];
  return fmt::format("<0x{:02X}>", id - kOffset);
}

std::optional<int64_t> ByteTokenizer::token_id(std::string_view piece) const {
  static const char* kSpecial[] = {"<pad>", "<s>", "</s>"};
  for (int64_t id = 0; id < kOffset; ++id)
    if (piece == kSpecial[id]) return id;
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x") return std::nullopt;
  for (int64_t id = kOffset; id < kVocab; ++id)
    if (piece == this->piece(id)) return id;
  return std::nullopt;
}

std::string byte_tokenizer_config_json() {
  nlohmann::ordered_json j = {{"tokenizer_class", "PtrainByteTokenizer"},
                              {"ptrain_tokenizer", "byte"},
                              {"bos_token", "<s>"},
                              {"eos_token", "</s>"},
                              {"pad_token", "<pad>"},
                              {"add_bos_token", true}};
  return j.dump(2) + "\n";
}

namespace {

// tokenizer_config.json's "chat_template": a string, or (newer transformers) a list of
// {"name", "template"} entries, of which apply_chat_template uses the one named "default".
std::string config_chat_template(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("chat_template")) return "";
  const nlohmann::json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const nlohmann::json& entry : t) {
      if (entry.is_object() && entry.value("name", nlohmann::json()) == "default" &&
          entry.contains("template") && entry["template"].is_string())
        return entry["template"].get<std::string>();
    }
  }
  return "";
}

std::unique_ptr<Tokenizer> load_tokenizer_files(const std::string& model_dir,
                                                const nlohmann::json& config) {
  namespace fs = std::filesystem;
  // Compared as JSON: a "ptrain_tokenizer" that is not a string is simply not "byte".
  if (config.is_object() && config.contains("ptrain_tokenizer") &&
      config["ptrain_tokenizer"] == "byte") {
    auto tok = std::make_unique<ByteTokenizer>();
    tok->source = fmt::format("'{}/tokenizer_config.json'", model_dir);
    return tok;
  }
  std::error_code ec;  // a path that cannot be examined (too long, a loop) has no tokenizer
  if (fs::exists(model_dir + "/tokenizer.json", ec)) return HfBpeTokenizer::load(model_dir);
  if (fs::exists(model_dir + "/tokenizer.model", ec))
    return SentencePieceTokenizer::load(model_dir);
  return nullptr;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const std::string config_path = model_dir + "/tokenizer_config.json";
  std::error_code ec;
  const nlohmann::json config = fs::exists(config_path, ec) ? read_json_file(config_path) : nullptr;
  if (std::unique_ptr<Tokenizer> tok = load_tokenizer_files(model_dir, config)) {
    tok->model_dir = model_dir;
    tok->chat_template = config_chat_template(config);
    return tok;
  }
  std::vector<std::string> present;
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"})
    if (fs::exists(model_dir + "/" + name, ec)) present.push_back(name);
  throw UserError(fmt::format(
      "model '{}': no supported tokenizer (found: {}); supported: a Hugging Face tokenizer.json "
      "with a BPE model, a SentencePiece tokenizer.model (unigram or BPE), and ptrain's byte "
      "tokenizer (tokenizer_config.json with \"ptrain_tokenizer\": \"byte\"). Pass token ids "
      "instead (--prompt-ids)",
      model_dir, present.empty() ? "none" : fmt::format("{}", fmt::join(present, ", "))));
}

}  // namespace ptrain
