// Dataset rows: reading a JSONL or JSON-array file of rows in one of the Axolotl row formats and
// normalizing each row into a DatasetRow (alpaca fields, a conversation of turns, or raw text).
//
// Contract: every row keeps the 1-based line where it starts in its file, and every malformed row
// (bad JSON, missing field, wrong type, unknown role, empty conversation) is a UserError whose
// message starts with "file:line: " and names the field, e.g. "data.jsonl:7: 'output' must be a
// string". With skip_invalid_rows the row is skipped instead and counted per reason in the
// DatasetSummary. A file with no rows left is a UserError naming the file. A JSON array whose
// structure is broken (no closing bracket) is always an error: its rows cannot be delimited.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ptrain {

// The `type` of a dataset entry in the config.
enum class RowFormat { kAlpaca, kChatTemplate, kShareGpt, kCompletion };

// "alpaca", "chat_template", "sharegpt", "completion"; UserError naming the accepted names.
RowFormat parse_row_format(std::string_view name);
std::string row_format_name(RowFormat format);

enum class Role { kSystem, kUser, kAssistant };
std::string role_name(Role role);

struct Turn {
  Role role;
  std::string text;
};

struct AlpacaFields {
  std::string instruction;
  std::string input;  // empty: the row has no input
  std::string output;
};

// One row, normalized: alpaca rows fill `alpaca`, chat_template and sharegpt rows fill `turns`
// (never empty), completion rows fill `text`.
struct DatasetRow {
  enum class Kind { kAlpaca, kConversation, kCompletion };
  Kind kind = Kind::kCompletion;
  int64_t line = 0;  // 1-based line of the file where the row starts
  AlpacaFields alpaca;
  std::vector<Turn> turns;
  std::string text;
};

struct DatasetOptions {
  RowFormat format = RowFormat::kAlpaca;
  // The row's field holding the data: for chat_template the message list (default "messages"),
  // for completion the text (default "text"); empty picks the default. Unused by other formats.
  std::string field;
  // chat_template: the message's keys holding its role and its text (Axolotl's
  // message_field_role / message_field_content); empty picks "role" and "content".
  std::string role_field, content_field;
  bool skip_invalid_rows = false;
};

// What reading a file did: rows kept and rows skipped per reason ("bad JSON", "missing field",
// "wrong type", "unknown role", "empty conversation").
struct DatasetSummary {
  int64_t rows = 0;
  std::map<std::string, int64_t> skipped;
  int64_t skipped_total() const;
};

struct Dataset {
  std::string path;
  std::vector<DatasetRow> rows;
  DatasetSummary summary;
};

// Reads `path`: a JSON array when its first non-space byte is '[', else JSONL (one object per
// line, blank lines skipped).
Dataset read_dataset(const std::string& path, const DatasetOptions& options);

// The same on text already in memory; `path` only names the source in messages.
Dataset parse_dataset(const std::string& path, std::string_view text,
                      const DatasetOptions& options);

}  // namespace ptrain
