// Reading a prepared dataset (verification, sample and row access, collation), its fingerprint
// and the options from the config. Building one is prepared_data_build.cpp.
#include "data/prepared_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/prepared_data_files.h"

namespace fs = std::filesystem;

namespace ptrain {

// ---------------------------------------------------------------- options and fingerprint

std::vector<std::string> source_files(const DataSource& source) {
  std::error_code ec;
  const fs::file_status status = fs::status(source.path, ec);
  PTRAIN_CHECK(!ec && fs::exists(status),
               "dataset '{}' does not exist (datasets are local files: JSONL, a JSON array, a "
               "directory of them, or a pretokenized .bin; Hugging Face Hub datasets must be "
               "downloaded first)",
               source.path);
  if (!fs::is_directory(status)) return {source.path};
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(source.path)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name[0] != '.' && entry.is_regular_file())
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  PTRAIN_CHECK(!files.empty(), "dataset directory '{}' holds no data files", source.path);
  return files;
}

namespace {

// Feeds length-prefixed fields into one XXH3 stream, so ("ab", "c") and ("a", "bc") differ.
class Hasher {
 public:
  void add(const void* data, size_t size) {
    const uint64_t n = size;
    stream_.update(&n, sizeof n);
    stream_.update(data, size);
  }
  void add(const std::string& text) { add(text.data(), text.size()); }
  void add_file(const std::string& path) {
    MappedFile file(path);
    add(file.data() ? file.data() : reinterpret_cast<const uint8_t*>(""), file.size());
  }
  std::string hex() const { return stream_.hex(); }

 private:
  Xxh3Stream stream_;
};

void add_tokenizer_files(Hasher& h, const std::string& tokenizer_dir) {
  for (const char* name :
       {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path file = fs::path(tokenizer_dir) / name;
    if (!fs::is_regular_file(file)) continue;
    h.add(name);
    h.add_file(file.string());
  }
}

}  // namespace

std::string tokenizer_fingerprint(const std::string& tokenizer_dir) {
  Hasher h;
  add_tokenizer_files(h, tokenizer_dir);
  return h.hex();
}

std::string data_fingerprint(const DataPrepOptions& options, const std::string& tokenizer_dir) {
  Hasher h;
  h.add(fmt::format("ptrain-prepared-data v{}", kPreparedFormatVersion));
  h.add(fmt::format("seq {} packing {} group {} policy {} skip {} val {} seed {} inputs {} chat {}",
                    options.sequence_len, options.sample_packing, options.packing_group_size,
                    options.length_policy == LengthPolicy::kDrop ? "drop" : "truncate",
                    options.skip_invalid_rows, options.val_set_size, options.seed,
                    options.render.train_on_inputs, options.render.chat_template));
  for (const DataSource& source : options.sources) {
    h.add(fmt::format("source {} field '{}' role '{}' content '{}' weight {} dtype {}", source.type,
                      source.field, source.role_field, source.content_field, source.weight,
                      source.dtype));
    for (const std::string& file : source_files(source)) {
      h.add(fs::path(file).filename().string());
      h.add_file(file);
    }
  }
  add_tokenizer_files(h, tokenizer_dir);
  return h.hex();
}

// ---------------------------------------------------------------- reading

namespace {

[[noreturn]] void corrupt(const std::string& dir, const std::string& what) {
  throw CorruptData(fmt::format("prepared dataset '{}' is damaged: {}", dir, what));
}

}  // namespace

PreparedDataset::PreparedDataset(const std::string& dir, bool verify_checksums) : dir_(dir) {
  // Only what the directory's own contents get wrong is CorruptData (rebuilt by the caller); an
  // error of the system (permissions, too many open files, no memory) propagates as it is.
  const fs::path meta_path = fs::path(dir) / kMetaFile;
  if (!fs::exists(meta_path)) corrupt(dir, fmt::format("{} is missing", kMetaFile));
  const std::string meta_text = read_text_file(meta_path.string());
  try {
    const nlohmann::json meta = nlohmann::json::parse(meta_text);
    if (meta.value("format", "") != kPreparedFormat)
      corrupt(dir, fmt::format("{} is not a prepared dataset's", kMetaFile));
    if (meta.at("version").get<int>() != kPreparedFormatVersion)
      corrupt(dir, fmt::format("format version {} (this build reads {})",
                               meta.at("version").get<int>(), kPreparedFormatVersion));
    fingerprint_ = meta.at("fingerprint").get<std::string>();
    sequence_len_ = meta.at("sequence_len").get<int64_t>();
    sample_packing_ = meta.at("sample_packing").get<bool>();
    summary_ = summary_from_json(meta.at("summary"));
    for (const auto& file : meta.at("data_files"))
      data_files_.push_back({file.at("path").get<std::string>(), file.at("source").get<int64_t>()});
    for (const auto& [name, info] : meta.at("files").items()) {
      const fs::path path = fs::path(dir) / name;
      if (!fs::exists(path)) corrupt(dir, fmt::format("{} is missing", name));
      auto file = std::make_unique<MappedFile>(path.string());
      const uint64_t bytes = info.at("bytes").get<uint64_t>();
      if (file->size() != bytes)
        corrupt(dir, fmt::format("{} has {} bytes, meta.json says {}", name, file->size(), bytes));
      if (verify_checksums &&
          xxh3_hex(file->data(), file->size()) != info.at("xxh3").get<std::string>())
        corrupt(dir, fmt::format("{} fails its checksum", name));
      files_[name] = std::move(file);
    }
  } catch (const nlohmann::json::exception& e) {
    corrupt(dir, fmt::format("{}: {}", kMetaFile, e.what()));
  }
  for (const char* name : {kTokensFile, kSampleOffsetsFile, kSampleOriginFile, kTrainRowOffsetsFile,
                           kTrainRowSamplesFile, kValSamplesFile}) {
    if (!files_.count(name)) corrupt(dir, fmt::format("{} is missing from meta.json", name));
    if (files_[name]->size() % (name == std::string(kTokensFile) ? 4 : 8) != 0)
      corrupt(dir, fmt::format("{} has a partial element", name));
  }
  samples_ = static_cast<int64_t>(files_[kSampleOffsetsFile]->size() / 8) - 1;
  train_rows_ = static_cast<int64_t>(files_[kTrainRowOffsetsFile]->size() / 8) - 1;
  val_samples_ = static_cast<int64_t>(files_[kValSamplesFile]->size() / 8);
  const int64_t tokens = static_cast<int64_t>(files_[kTokensFile]->size() / 4);
  const int64_t row_entries = static_cast<int64_t>(files_[kTrainRowSamplesFile]->size() / 8);
  if (samples_ < 1 || train_rows_ < 1) corrupt(dir, "no samples or no training rows");
  for (int64_t i = 0; i < samples_; ++i)
    if ((array(kSampleOriginFile)[i] >> kOriginFileShift) >=
        static_cast<int64_t>(data_files_.size()))
      corrupt(dir, fmt::format("sample {} names a data file meta.json does not list", i));
  if (static_cast<int64_t>(files_[kSampleOriginFile]->size() / 8) != samples_)
    corrupt(dir, "sample_origin.bin does not have one entry per sample");
  auto check_offsets = [&](const int64_t* offsets, int64_t count, int64_t end, const char* name) {
    if (offsets[0] != 0 || offsets[count] != end)
      corrupt(dir, fmt::format("{} does not span its data", name));
    for (int64_t i = 0; i < count; ++i)
      if (offsets[i + 1] < offsets[i]) corrupt(dir, fmt::format("{} is not ascending", name));
  };
  check_offsets(array(kSampleOffsetsFile), samples_, tokens, kSampleOffsetsFile);
  check_offsets(array(kTrainRowOffsetsFile), train_rows_, row_entries, kTrainRowOffsetsFile);
  for (const char* name : {kTrainRowSamplesFile, kValSamplesFile}) {
    const int64_t* ids = array(name);
    const int64_t n = static_cast<int64_t>(files_[name]->size() / 8);
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= samples_)
        corrupt(dir, fmt::format("{} names sample {} of {}", name, ids[i], samples_));
  }
}

const int64_t* PreparedDataset::array(const std::string& name) const {
  const MappedFile& file = *files_.at(name);
  static const int64_t kNone[1] = {0};
  return file.data() ? reinterpret_cast<const int64_t*>(file.data()) : kNone;
}

SampleView PreparedDataset::sample(int64_t i) const {
  PTRAIN_ASSERT(i >= 0 && i < samples_, "sample {} of {}", i, samples_);
  const int64_t* offsets = array(kSampleOffsetsFile);
  const auto* tokens = reinterpret_cast<const uint32_t*>(files_.at(kTokensFile)->data());
  return SampleView{tokens + offsets[i], offsets[i + 1] - offsets[i]};
}

std::pair<int64_t, int64_t> PreparedDataset::origin(int64_t i) const {
  PTRAIN_ASSERT(i >= 0 && i < samples_, "sample {} of {}", i, samples_);
  const int64_t packed = array(kSampleOriginFile)[i];
  return {packed >> kOriginFileShift, packed & ((int64_t{1} << kOriginFileShift) - 1)};
}

std::vector<int64_t> PreparedDataset::train_row(int64_t r) const {
  PTRAIN_ASSERT(r >= 0 && r < train_rows_, "row {} of {}", r, train_rows_);
  const int64_t* offsets = array(kTrainRowOffsetsFile);
  const int64_t* ids = array(kTrainRowSamplesFile);
  return std::vector<int64_t>(ids + offsets[r], ids + offsets[r + 1]);
}

int64_t PreparedDataset::row_tokens(int64_t r) const {
  int64_t n = 0;
  for (int64_t s : train_row(r)) n += sample(s).length;
  return n;
}

const int64_t* PreparedDataset::val_samples_data() const {
  return array(kValSamplesFile);
}

RowBatch PreparedDataset::collate(const std::vector<int64_t>& rows, int64_t width) const {
  RowBatch batch;
  batch.rows = static_cast<int64_t>(rows.size());
  batch.width = width;
  const size_t cells = static_cast<size_t>(batch.rows * width);
  batch.input_ids.assign(cells, 0);
  batch.position_ids.assign(cells, 0);
  batch.sequence_ids.assign(cells, -1);
  batch.labels.assign(cells, kIgnoreLabel);
  for (int64_t r = 0; r < batch.rows; ++r) {
    int64_t t = r * width;
    const int64_t end = t + width;
    int64_t index = 0;
    for (int64_t s : train_row(rows[r])) {
      const SampleView view = sample(s);
      PTRAIN_ASSERT(t + view.length <= end, "row {} holds more than {} tokens", rows[r], width);
      for (int64_t i = 0; i < view.length; ++i, ++t) {
        batch.input_ids[t] = view.token(i);
        batch.position_ids[t] = i;
        batch.sequence_ids[t] = index;
        if (i + 1 < view.length && view.learned(i + 1)) batch.labels[t] = view.token(i + 1);
      }
      ++index;
    }
  }
  return batch;
}

std::vector<int64_t> sample_labels(const SampleView& sample) {
  std::vector<int64_t> labels(static_cast<size_t>(sample.length), kIgnoreLabel);
  for (int64_t t = 0; t + 1 < sample.length; ++t)
    if (sample.learned(t + 1)) labels[t] = sample.token(t + 1);
  return labels;
}

}  // namespace ptrain
