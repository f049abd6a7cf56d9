#include "data/dataset.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <utility>

#include "core/error.h"
#include "core/file_util.h"

namespace ptrain {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------- row errors

// A malformed row: a UserError that also says why, so that skip_invalid_rows can count it.
class RowError : public UserError {
 public:
  RowError(std::string reason, const std::string& message)
      : UserError(message), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

constexpr const char* kBadJson = "bad JSON";
constexpr const char* kMissingField = "missing field";
constexpr const char* kWrongType = "wrong type";
constexpr const char* kUnknownRole = "unknown role";
constexpr const char* kEmptyConversation = "empty conversation";

// Where the row being parsed sits: "data.jsonl:7".
struct RowPlace {
  const std::string& path;
  int64_t line;

  [[noreturn]] void fail(const char* reason, const std::string& what) const {
    throw RowError(reason, fmt::format("{}:{}: {}", path, line, what));
  }
};

// ---------------------------------------------------------------- typed fields

// `obj[key]` (obj is an object); `label` names it in messages ("messages[2].role").
const json& required_field(const json& obj, const std::string& key, const std::string& label,
                           const RowPlace& at) {
  auto it = obj.find(key);
  if (it == obj.end()) at.fail(kMissingField, fmt::format("missing field '{}'", label));
  return *it;
}

std::string string_value(const json& value, const std::string& label, const RowPlace& at) {
  if (!value.is_string()) at.fail(kWrongType, fmt::format("'{}' must be a string", label));
  return value.get<std::string>();
}

std::string required_string(const json& obj, const std::string& key, const std::string& label,
                            const RowPlace& at) {
  return string_value(required_field(obj, key, label, at), label, at);
}

// ---------------------------------------------------------------- row formats

DatasetRow alpaca_row(const json& row, const RowPlace& at) {
  DatasetRow out;
  out.kind = DatasetRow::Kind::kAlpaca;
  out.alpaca.instruction = required_string(row, "instruction", "instruction", at);
  auto input = row.find("input");
  if (input != row.end() && !input->is_null()) out.alpaca.input = string_value(*input, "input", at);
  out.alpaca.output = required_string(row, "output", "output", at);
  return out;
}

// Role names as Axolotl's chat_template and sharegpt types map them by default.
std::optional<Role> role_of(const std::string& name) {
  if (name == "system") return Role::kSystem;
  if (name == "user" || name == "human") return Role::kUser;
  if (name == "assistant" || name == "gpt") return Role::kAssistant;
  return std::nullopt;
}

constexpr const char* kExpectedRoles = "system, user, assistant, human or gpt";

std::string or_default(const std::string& value, const char* fallback) {
  return value.empty() ? fallback : value;
}

// A list of {role_key, text_key} objects under `field`, roles mapped by role_of().
DatasetRow conversation_row(const json& row, const std::string& field, const std::string& role_key,
                            const std::string& text_key, const RowPlace& at) {
  const json& list = required_field(row, field, field, at);
  if (!list.is_array()) at.fail(kWrongType, fmt::format("'{}' must be a list", field));
  if (list.empty()) at.fail(kEmptyConversation, fmt::format("'{}' is empty", field));
  DatasetRow out;
  out.kind = DatasetRow::Kind::kConversation;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string label = fmt::format("{}[{}]", field, i);
    const json& message = list[i];
    if (!message.is_object()) at.fail(kWrongType, fmt::format("'{}' must be an object", label));
    const std::string role_label = label + "." + role_key;
    const std::string role = required_string(message, role_key, role_label, at);
    std::optional<Role> mapped = role_of(role);
    if (!mapped) {
      at.fail(kUnknownRole, fmt::format("'{}': unknown role '{}' (expected {})", role_label, role,
                                        kExpectedRoles));
    }
    const std::string text_label = label + "." + text_key;
    out.turns.push_back({*mapped, required_string(message, text_key, text_label, at)});
  }
  return out;
}

DatasetRow completion_row(const json& row, const std::string& field, const RowPlace& at) {
  DatasetRow out;
  out.kind = DatasetRow::Kind::kCompletion;
  out.text = required_string(row, field, field, at);
  return out;
}

DatasetRow parse_row(std::string_view text, const DatasetOptions& options, const RowPlace& at) {
  json row;
  try {
    row = json::parse(text);
  } catch (const json::exception& e) {
    at.fail(kBadJson, fmt::format("not valid JSON: {}", e.what()));
  }
  if (!row.is_object()) at.fail(kWrongType, "a row must be a JSON object");
  DatasetRow out;
  switch (options.format) {
    case RowFormat::kAlpaca:
      out = alpaca_row(row, at);
      break;
    case RowFormat::kChatTemplate:
      out = conversation_row(row, or_default(options.field, "messages"),
                             or_default(options.role_field, "role"),
                             or_default(options.content_field, "content"), at);
      break;
    case RowFormat::kShareGpt:
      out = conversation_row(row, "conversations", "from", "value", at);
      break;
    case RowFormat::kCompletion:
      out = completion_row(row, options.field.empty() ? "text" : options.field, at);
      break;
  }
  out.line = at.line;
  return out;
}

// ---------------------------------------------------------------- file layouts

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

// Parses one row, or counts it as skipped when allowed.
void add_row(Dataset& dataset, std::string_view text, int64_t line, const DatasetOptions& options) {
  try {
    dataset.rows.push_back(parse_row(text, options, RowPlace{dataset.path, line}));
  } catch (const RowError& e) {
    if (!options.skip_invalid_rows) throw;
    ++dataset.summary.skipped[e.reason()];
  }
}

void read_jsonl(Dataset& dataset, std::string_view text, const DatasetOptions& options) {
  int64_t line = 1;
  for (size_t begin = 0; begin < text.size(); ++line) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view row = text.substr(begin, end - begin);
    bool blank = true;
    for (char c : row) blank = blank && is_space(c);
    if (!blank) add_row(dataset, row, line, options);
    begin = end + 1;
  }
}

// Splits the array at its top-level commas (outside strings) so that every element keeps the line
// where it starts and a malformed element spoils only its own row.
void read_json_array(Dataset& dataset, std::string_view text, size_t open,
                     const DatasetOptions& options) {
  int64_t line = 1;
  for (size_t i = 0; i < open; ++i) line += text[i] == '\n';
  size_t pos = open + 1;
  auto skip_space = [&] {
    for (; pos < text.size() && is_space(text[pos]); ++pos) line += text[pos] == '\n';
  };
  skip_space();
  bool closed = pos < text.size() && text[pos] == ']';
  if (closed) ++pos;
  while (!closed) {
    skip_space();
    const size_t begin = pos;
    const int64_t begin_line = line;
    int depth = 0;
    bool in_string = false;
    bool element_done = false;
    for (; pos < text.size() && !element_done; ++pos) {
      const char c = text[pos];
      line += c == '\n';
      if (in_string) {
        if (c == '\\' && pos + 1 < text.size()) {
          ++pos;
          line += text[pos] == '\n';
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && depth > 0) {
        --depth;
      } else if (depth == 0 && (c == ',' || c == ']')) {
        element_done = true;
        closed = c == ']';
      }
    }
    if (!element_done) {
      throw UserError(
          fmt::format("{}:{}: the JSON array is not closed with ']' (a truncated file?)",
                      dataset.path, begin_line));
    }
    std::string_view element = text.substr(begin, pos - 1 - begin);
    while (!element.empty() && is_space(element.back())) element.remove_suffix(1);
    add_row(dataset, element, begin_line, options);
  }
  skip_space();
  if (pos != text.size()) {
    throw UserError(fmt::format("{}:{}: unexpected text after the closing ']' of the JSON array",
                                dataset.path, line));
  }
}

}  // namespace

// ---------------------------------------------------------------- public

RowFormat parse_row_format(std::string_view name) {
  if (name == "alpaca") return RowFormat::kAlpaca;
  if (name == "chat_template") return RowFormat::kChatTemplate;
  if (name == "sharegpt") return RowFormat::kShareGpt;
  if (name == "completion") return RowFormat::kCompletion;
  throw UserError(fmt::format(
      "unknown dataset type '{}' (expected alpaca, chat_template, sharegpt or completion)", name));
}

std::string row_format_name(RowFormat format) {
  switch (format) {
    case RowFormat::kAlpaca:
      return "alpaca";
    case RowFormat::kChatTemplate:
      return "chat_template";
    case RowFormat::kShareGpt:
      return "sharegpt";
    case RowFormat::kCompletion:
      return "completion";
  }
  PTRAIN_ASSERT(false, "row format {}", static_cast<int>(format));
}

std::string role_name(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
  }
  PTRAIN_ASSERT(false, "role {}", static_cast<int>(role));
}

int64_t DatasetSummary::skipped_total() const {
  int64_t total = 0;
  for (const auto& [reason, count] : skipped) total += count;
  return total;
}

Dataset parse_dataset(const std::string& path, std::string_view text,
                      const DatasetOptions& options) {
  Dataset dataset;
  dataset.path = path;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 byte order mark
  size_t first = 0;
  while (first < text.size() && is_space(text[first])) ++first;
  if (first < text.size() && text[first] == '[') {
    read_json_array(dataset, text, first, options);
  } else {
    read_jsonl(dataset, text, options);
  }
  dataset.summary.rows = static_cast<int64_t>(dataset.rows.size());
  if (dataset.rows.empty()) {
    const int64_t skipped = dataset.summary.skipped_total();
    throw UserError(skipped == 0
                        ? fmt::format("{}: the dataset has no rows", path)
                        : fmt::format("{}: the dataset has no valid rows ({} invalid rows skipped)",
                                      path, skipped));
  }
  return dataset;
}

Dataset read_dataset(const std::string& path, const DatasetOptions& options) {
  // Mapped, not copied: the rows are the only copy of the data held in memory.
  const MappedFile file(path);
  const char* data = reinterpret_cast<const char*>(file.data());
  return parse_dataset(path, data ? std::string_view(data, file.size()) : std::string_view(),
                       options);
}

}  // namespace ptrain
