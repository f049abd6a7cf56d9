// Reading Hugging Face tokenizer files with nlohmann::json: typed field access whose errors name
// the file and the JSON path of the offending value. Private to tokenizer/.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "core/error.h"
#include "tokenizer/unicode_text.h"

namespace ptrain {

// Where a value sits: "'/m/tokenizer.json': pre_tokenizer.pretokenizers[1]".
class JsonWhere {
 public:
  explicit JsonWhere(std::string file, std::string path = "")
      : file_(std::move(file)), path_(std::move(path)) {}
  JsonWhere operator[](std::string_view key) const {
    return JsonWhere(file_, path_.empty() ? std::string(key) : path_ + "." + std::string(key));
  }
  JsonWhere operator[](size_t index) const {
    return JsonWhere(file_, path_ + "[" + std::to_string(index) + "]");
  }
  std::string str() const {
    return path_.empty() ? "'" + file_ + "'" : "'" + file_ + "': " + path_;
  }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
  std::string path_;
};

inline const nlohmann::json* json_field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

inline bool json_bool(const nlohmann::json& obj, const char* key, bool fallback,
                      const JsonWhere& where) {
  const nlohmann::json* v = json_field(obj, key);
  if (v == nullptr) return fallback;
  PTRAIN_CHECK(v->is_boolean(), "{}: expected true or false, got {}", where[key].str(), v->dump());
  return v->get<bool>();
}

inline std::optional<std::string> json_optional_string(const nlohmann::json& obj, const char* key,
                                                       const JsonWhere& where) {
  const nlohmann::json* v = json_field(obj, key);
  if (v == nullptr) return std::nullopt;
  PTRAIN_CHECK(v->is_string(), "{}: expected a string, got {}", where[key].str(), v->dump());
  return v->get<std::string>();
}

inline std::string json_string(const nlohmann::json& obj, const char* key, const JsonWhere& where) {
  std::optional<std::string> v = json_optional_string(obj, key, where);
  PTRAIN_CHECK(v.has_value(), "{}: missing", where[key].str());
  return *v;
}

// A tokenizer.json component's "type" (normalizer, pre_tokenizer, model, ...).
inline std::string json_type(const nlohmann::json& obj, const JsonWhere& where) {
  PTRAIN_CHECK(obj.is_object(), "{}: expected an object, got {}", where.str(), obj.dump());
  return json_string(obj, "type", where);
}

inline const nlohmann::json& json_array(const nlohmann::json& obj, const char* key,
                                        const JsonWhere& where) {
  const nlohmann::json* v = json_field(obj, key);
  PTRAIN_CHECK(v != nullptr && v->is_array(), "{}: expected an array", where[key].str());
  return *v;
}

// A single character given as a JSON string (Metaspace's replacement, Strip's content).
inline std::string json_char(const nlohmann::json& obj, const char* key, const JsonWhere& where) {
  std::string s = json_string(obj, key, where);
  PTRAIN_CHECK(!s.empty() && utf8_char_len(static_cast<unsigned char>(s[0])) == s.size(),
               "{}: expected a single character, got '{}'", where[key].str(), s);
  return s;
}

}  // namespace ptrain
