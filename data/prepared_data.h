// The prepared dataset: every configured dataset read, rendered, tokenized, split into train and
// validation, weighted and packed, once, into a directory of flat binary files that training
// memory-maps.
//
// Directory layout (`<dataset_prepared_path>/<fingerprint>/`), all integers little-endian:
//   meta.json             format, fingerprint, settings, counts, per-source summary, and the size
//                         and XXH3-64 checksum of every file below
//   tokens.bin            uint32 per token, all samples back to back: bits 0-30 the token id,
//                         bit 31 set when the token is learned (a loss target of the token before)
//   sample_offsets.bin    int64 [samples + 1]: sample i is tokens [offsets[i], offsets[i + 1])
//   sample_origin.bin     int64 per sample: data file index (meta.json "data_files") << 40 | the
//                         row's 1-based line (for pretokenized files: the document's 1-based index)
//   train_row_offsets.bin int64 [train rows + 1] into train_row_samples.bin
//   train_row_samples.bin int64 sample indices: the samples of each training row, in row order
//   val_samples.bin       int64 sample indices of the validation split
//
// Contract: the fingerprint covers everything the files depend on (the data files' bytes, the
// tokenizer files' bytes, every setting in DataPrepOptions, the format version), so a directory
// named by a fingerprint is only ever reused for identical inputs. build_prepared_dataset() writes
// into a temporary directory and renames it into place after fsyncing every file, so a reader
// sees a complete directory or none; when another builder publishes the same fingerprint first,
// its directory is kept (same inputs, same data). PreparedDataset checks every file's size and
// checksum and throws CorruptData naming the file otherwise, so a damaged cache is rebuilt rather
// than trained on. The format version (prepared_data_files.h) is part of the fingerprint and is
// raised whenever the layout or what the pipeline produces from the same inputs changes
// (templates, tokenizers), so an old cache is never reused by a build that would write other data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"  // CorruptData: a prepared directory that fails its checks
#include "core/file_util.h"
#include "data/packing.h"
#include "data/prompt.h"
#include "tokenizer/tokenizer.h"

namespace ptrain {

// One configured dataset (a `datasets:` entry).
struct DataSource {
  std::string path;             // a file, or a directory whose files are read in name order
  std::string type = "alpaca";  // a RowFormat name, or "pretokenized"
  std::string field;            // chat_template / completion field; "" for the default
  std::string role_field, content_field;  // chat_template message keys; "" for the defaults
  double weight = 1.0;                    // times each training sample is used per epoch
  std::string dtype = "uint16";           // pretokenized token id type: uint16 | uint32
};

struct DataPrepOptions {
  std::vector<DataSource> sources;
  RenderOptions render;
  int64_t sequence_len = 2048;
  bool sample_packing = false;
  int64_t packing_group_size = 100000;
  LengthPolicy length_policy = LengthPolicy::kDrop;
  bool skip_invalid_rows = false;
  double val_set_size = 0;  // fraction in [0, 1), or a sample count when >= 1
  uint64_t seed = 42;
};

// What one source contributed.
struct SourceSummary {
  std::string path;
  std::string type;
  int64_t rows = 0;                        // rows (documents for pretokenized) read and kept
  std::map<std::string, int64_t> skipped;  // malformed rows skipped, per reason
  int64_t samples = 0;                     // samples after the length policy
  int64_t truncated = 0, dropped = 0;      // by the length policy
  int64_t tokens = 0;                      // tokens in its samples
  int64_t train_samples = 0;               // uses in training per epoch (weight applied)
  int64_t val_samples = 0;
};

struct PreparedSummary {
  std::vector<SourceSummary> sources;
  int64_t samples = 0;        // distinct samples stored
  int64_t train_samples = 0;  // training sample uses per epoch (weights applied)
  int64_t val_samples = 0;
  int64_t train_rows = 0;
  int64_t train_tokens = 0;       // tokens in the training rows (padding excluded)
  int64_t learned_tokens = 0;     // loss targets in the training rows
  double packing_efficiency = 0;  // train_tokens / (train_rows * sequence_len)
};

// The summary as meta.json stores it (and `ptrain preprocess --json` prints it).
nlohmann::json summary_to_json(const PreparedSummary& summary);
PreparedSummary summary_from_json(const nlohmann::json& json);

// The prepared dataset's identity: 16 hex digits of XXH3-64 over the format version, every option,
// each source's type, settings and file bytes, and the tokenizer files of `tokenizer_dir`.
std::string data_fingerprint(const DataPrepOptions& options, const std::string& tokenizer_dir);

// 16 hex digits of XXH3-64 over the tokenizer files of `tokenizer_dir` (tokenizer.json,
// tokenizer.model, tokenizer_config.json, special_tokens_map.json; those present).
std::string tokenizer_fingerprint(const std::string& tokenizer_dir);

// The data files of a source: the file itself, or a directory's regular files (hidden ones
// excluded) in name order. UserError naming the path when it is missing or an empty directory.
std::vector<std::string> source_files(const DataSource& source);

// Called now and then (every few thousand rows) while a build runs.
using PrepProgress = std::function<void()>;

// Builds the prepared dataset into `dir` (which must not exist), using `threads` threads to
// tokenize. UserError for bad data (naming file:line), an empty result or a vocabulary mismatch.
PreparedSummary build_prepared_dataset(const DataPrepOptions& options, const Tokenizer& tokenizer,
                                       const std::string& fingerprint, const std::string& dir,
                                       int threads = 1, const PrepProgress& progress = {});

constexpr uint32_t kLearnedBit = 1u << 31;

struct SampleView {
  const uint32_t* tokens = nullptr;  // bit 31: learned (see the layout above)
  int64_t length = 0;
  int64_t token(int64_t i) const { return static_cast<int64_t>(tokens[i] & ~kLearnedBit); }
  bool learned(int64_t i) const { return (tokens[i] & kLearnedBit) != 0; }
};

// Host arrays of a micro-batch, [rows, width] row-major: PackedBatch's fields (model/)
// before they become tensors. Padding has id 0, position 0, sequence id -1, label -100.
struct RowBatch {
  int64_t rows = 0, width = 0;
  std::vector<int64_t> input_ids, position_ids, sequence_ids, labels;
};

// A data file the dataset was read from, and the index of its `datasets:` entry.
struct DataFile {
  std::string path;
  int64_t source = 0;
};

class PreparedDataset {
 public:
  // Maps `dir` and checks its files' sizes, offsets and indices, and (verify_checksums) their
  // XXH3-64 checksums: CorruptData naming the file when the directory's contents fail a check.
  // Errors of the system (permissions, resources) propagate as they are.
  explicit PreparedDataset(const std::string& dir, bool verify_checksums = true);

  const std::string& dir() const { return dir_; }
  const std::string& fingerprint() const { return fingerprint_; }
  int64_t sequence_len() const { return sequence_len_; }
  bool sample_packing() const { return sample_packing_; }
  const PreparedSummary& summary() const { return summary_; }
  const std::vector<DataFile>& data_files() const { return data_files_; }

  int64_t samples() const { return samples_; }
  SampleView sample(int64_t i) const;
  // The data file (index into data_files()) and line (document) a sample came from.
  std::pair<int64_t, int64_t> origin(int64_t i) const;

  int64_t train_rows() const { return train_rows_; }
  // The samples of training row r, in layout order.
  std::vector<int64_t> train_row(int64_t r) const;
  const int64_t* val_samples_data() const;
  int64_t val_samples() const { return val_samples_; }

  // Training rows `rows` laid out as a batch of `width` columns (width >= every row's tokens).
  RowBatch collate(const std::vector<int64_t>& rows, int64_t width) const;
  // The tokens of training row r.
  int64_t row_tokens(int64_t r) const;

 private:
  const int64_t* array(const std::string& name) const;

  std::string dir_, fingerprint_;
  int64_t sequence_len_ = 0;
  bool sample_packing_ = false;
  PreparedSummary summary_;
  std::vector<DataFile> data_files_;
  int64_t samples_ = 0, train_rows_ = 0, val_samples_ = 0;
  std::map<std::string, std::unique_ptr<MappedFile>> files_;
};

// The labelled form of sample tokens: labels[t] = token t + 1 when it is learned, else -100.
std::vector<int64_t> sample_labels(const SampleView& sample);

}  // namespace ptrain
