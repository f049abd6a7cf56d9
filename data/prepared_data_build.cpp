// Building a prepared dataset: read every source, render and tokenize its rows on several threads,
// apply the length policy, split off the validation samples, apply the weights, pack, and write
// the files (prepared_data.h has the layout).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <limits>
#include <optional>
#include <random>
#include <thread>

#include "core/error.h"
#include "data/dataset.h"
#include "data/prepared_data.h"
#include "data/prepared_data_files.h"
#include "data/sampler.h"

namespace fs = std::filesystem;

namespace ptrain {
namespace {

// Seeds of the derived random streams, so the split and the weights never share a permutation
// with the sampler's epochs.
constexpr uint64_t kValSplitSalt = 0x76616c2d73706c74ULL;  // "val-splt"
constexpr uint64_t kWeightSalt = 0x7765696768742d30ULL;    // "weight-0"
constexpr size_t kRowsPerBatch = 2048;

// The samples as they accumulate. Tokens go straight to tokens.bin in the on-disk encoding (a
// corpus larger than memory can be prepared); per sample only its offsets, origin, source and
// learned count stay in memory.
class SampleStore {
 public:
  explicit SampleStore(const std::string& dir)
      : tokens_file_((fs::path(dir) / kTokensFile).string()) {
    buffer_.reserve(kBufferTokens);
  }
  SampleStore(const SampleStore&) = delete;
  SampleStore& operator=(const SampleStore&) = delete;

  std::vector<int64_t> offsets{0};
  std::vector<int64_t> origin;   // data file index << 40 | line
  std::vector<int64_t> source;   // source (datasets entry) index per sample; not stored
  std::vector<int64_t> learned;  // learned tokens per sample; not stored
  std::vector<std::pair<std::string, int64_t>> files;  // every data file read, with its source

  int64_t size() const { return static_cast<int64_t>(origin.size()); }
  int64_t length(int64_t i) const { return offsets[i + 1] - offsets[i]; }

  // Registers the next data file of source `source_index`; returns its index.
  int64_t add_file(const std::string& path, int64_t source_index) {
    files.emplace_back(path, source_index);
    return static_cast<int64_t>(files.size()) - 1;
  }

  void add(const std::vector<int64_t>& ids, const std::vector<bool>& flags, int64_t file,
           int64_t line) {
    int64_t n = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      buffer_.push_back(static_cast<uint32_t>(ids[t]) | (flags[t] ? kLearnedBit : 0u));
      n += flags[t] ? 1 : 0;
      if (buffer_.size() == kBufferTokens) flush();
    }
    offsets.push_back(offsets.back() + static_cast<int64_t>(ids.size()));
    origin.push_back(file << kOriginFileShift | line);
    source.push_back(files.at(static_cast<size_t>(file)).second);
    learned.push_back(n);
  }

  // Completes tokens.bin and records it in `files_json`.
  void finish(nlohmann::json& files_json) {
    flush();
    tokens_file_.commit();
    files_json[kTokensFile] = {{"bytes", tokens_file_.bytes_written()}, {"xxh3", hash_.hex()}};
  }

 private:
  static constexpr size_t kBufferTokens = size_t{1} << 20;
  void flush() {
    const size_t bytes = buffer_.size() * sizeof(uint32_t);
    tokens_file_.write(buffer_.data(), bytes);
    hash_.update(buffer_.data(), bytes);
    buffer_.clear();
  }

  AtomicFileWriter tokens_file_;
  Xxh3Stream hash_;
  std::vector<uint32_t> buffer_;
};

// `path` and `line` name the row in the message (formatted only on failure: this runs per sample).
void check_ids(const std::vector<int64_t>& ids, int64_t vocab, const std::string& path,
               int64_t line) {
  for (int64_t id : ids)
    PTRAIN_CHECK(id >= 0 && id < vocab && id < int64_t{kLearnedBit},
                 "{}:{}: token id {} is outside the tokenizer's vocabulary of {}", path, line, id,
                 vocab);
}

// ---------------------------------------------------------------- row sources

// Renders rows [begin, end) of `dataset` on `threads` threads, each taking a contiguous run, so the
// first error by row order is the first error of the first thread that failed. With `skip`, a row
// the template rejects (a UserError naming its file:line) is left empty and counted instead.
std::vector<std::optional<TokenizedSample>> render_rows(const Dataset& dataset, size_t begin,
                                                        size_t end, const Tokenizer& tokenizer,
                                                        const RenderOptions& render, int threads,
                                                        bool skip) {
  std::vector<std::optional<TokenizedSample>> out(end - begin);
  const size_t n = end - begin;
  const size_t workers = std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(threads), n));
  std::vector<std::exception_ptr> errors(workers);
  auto work = [&](size_t w) {
    try {
      for (size_t i = n * w / workers; i < n * (w + 1) / workers; ++i) {
        try {
          out[i] = render_row(dataset.rows[begin + i], dataset.path, tokenizer, render);
        } catch (const UserError&) {
          if (!skip) throw;
        }
      }
    } catch (...) {
      errors[w] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  try {
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work, w);
  } catch (...) {
    for (auto& t : pool) t.join();
    throw;
  }
  work(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

void add_row_source(const DataPrepOptions& options, const DataSource& source, int64_t index,
                    const Tokenizer& tokenizer, int threads, const PrepProgress& progress,
                    SampleStore& store, SourceSummary& summary) {
  DatasetOptions read;
  read.format = parse_row_format(source.type);
  read.field = source.field;
  read.role_field = source.role_field;
  read.content_field = source.content_field;
  read.skip_invalid_rows = options.skip_invalid_rows;
  for (const std::string& path : source_files(source)) {
    const std::string extension = fs::path(path).extension().string();
    PTRAIN_CHECK(extension != ".parquet" && extension != ".arrow",
                 "dataset file '{}': Parquet and Arrow files are not supported; convert it to "
                 "JSONL (e.g. datasets.load_dataset(...).to_json(\"data.jsonl\"))",
                 path);
    const Dataset dataset = read_dataset(path, read);
    const int64_t file = store.add_file(path, index);
    summary.rows += dataset.summary.rows;
    for (const auto& [reason, count] : dataset.summary.skipped) summary.skipped[reason] += count;
    for (size_t begin = 0; begin < dataset.rows.size(); begin += kRowsPerBatch) {
      const size_t end = std::min(dataset.rows.size(), begin + kRowsPerBatch);
      std::vector<std::optional<TokenizedSample>> rendered = render_rows(
          dataset, begin, end, tokenizer, options.render, threads, options.skip_invalid_rows);
      for (size_t i = 0; i < rendered.size(); ++i) {
        if (!rendered[i]) {
          ++summary.skipped["rejected by the template"];
          --summary.rows;
          continue;
        }
        TokenizedSample& s = *rendered[i];
        const LengthOutcome outcome = fit_length(s, options.sequence_len, options.length_policy);
        if (outcome == LengthOutcome::kDropped) {
          ++summary.dropped;
          continue;
        }
        if (outcome == LengthOutcome::kTruncated) ++summary.truncated;
        const int64_t line = dataset.rows[begin + i].line;
        check_ids(s.input_ids, tokenizer.vocab_size(), path, line);
        std::vector<bool> learned(s.input_ids.size(), false);
        for (size_t t = 1; t < s.input_ids.size(); ++t)
          learned[t] = s.labels[t - 1] != kIgnoreLabel;
        store.add(s.input_ids, learned, file, line);
        summary.tokens += static_cast<int64_t>(s.input_ids.size());
        ++summary.samples;
      }
      if (progress) progress();
    }
  }
}

// ---------------------------------------------------------------- pretokenized sources

// A flat array of token ids; documents end at the tokenizer's eos (inclusive), and the tokens after
// the last eos form a final document. Documents longer than sequence_len are cut into consecutive
// chunks of sequence_len, each a sample. Every token but a chunk's first is learned; a one-token
// chunk has nothing to learn and is dropped (counted).
void add_pretokenized_source(const DataPrepOptions& options, const DataSource& source,
                             int64_t index, const Tokenizer& tokenizer,
                             const PrepProgress& progress, SampleStore& store,
                             SourceSummary& summary) {
  PTRAIN_CHECK(tokenizer.eos_id.has_value(),
               "pretokenized dataset '{}': {} has no eos token to end documents at; give it one "
               "(tokenizer_config.json's \"eos_token\" beside a tokenizer.json)",
               source.path, tokenizer.describe());
  const int64_t eos = *tokenizer.eos_id;
  const size_t width = source.dtype == "uint32" ? 4 : 2;
  for (const std::string& file : source_files(source)) {
    const int64_t file_index = store.add_file(file, index);
    MappedFile map(file);
    PTRAIN_CHECK(map.size() % width == 0,
                 "pretokenized dataset '{}': {} bytes is not a whole number of {} ids", file,
                 map.size(), source.dtype);
    const int64_t n = static_cast<int64_t>(map.size() / width);
    PTRAIN_CHECK(n > 0, "pretokenized dataset '{}' is empty", file);
    auto id_at = [&](int64_t i) -> int64_t {
      if (width == 2) return reinterpret_cast<const uint16_t*>(map.data())[i];
      return reinterpret_cast<const uint32_t*>(map.data())[i];
    };
    std::vector<int64_t> chunk;
    std::vector<bool> learned;
    int64_t document = 1;
    auto flush = [&]() {
      if (chunk.empty()) return;
      if (chunk.size() == 1) {  // nothing to learn (e.g. the eos after a full chunk)
        ++summary.dropped;
        chunk.clear();
        learned.clear();
        return;
      }
      store.add(chunk, learned, file_index, document);
      summary.tokens += static_cast<int64_t>(chunk.size());
      ++summary.samples;
      chunk.clear();
      learned.clear();
    };
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = id_at(i);
      PTRAIN_CHECK(id < tokenizer.vocab_size(),
                   "pretokenized dataset '{}': token {} (id {}) is outside the tokenizer's "
                   "vocabulary of {}; is dtype ({}) right?",
                   file, i, id, tokenizer.vocab_size(), source.dtype);
      learned.push_back(!chunk.empty());
      chunk.push_back(id);
      if (id == eos) {
        flush();
        ++summary.rows;
        ++document;
      } else if (static_cast<int64_t>(chunk.size()) == options.sequence_len) {
        flush();
      }
      if (progress && i % (1 << 20) == 0) progress();
    }
    if (!chunk.empty()) {
      flush();
      ++summary.rows;
    }
  }
}

// ---------------------------------------------------------------- split, weights, packing

int64_t val_count(double val_set_size, int64_t samples) {
  if (val_set_size <= 0) return 0;
  // ceil(fraction x samples), with the product's rounding error (0.07 x 100 = 7.000000000000001)
  // kept from adding a sample.
  const double exact = val_set_size * static_cast<double>(samples);
  const int64_t count = val_set_size >= 1 ? static_cast<int64_t>(val_set_size)
                                          : static_cast<int64_t>(std::ceil(exact - 1e-9 * exact));
  PTRAIN_CHECK(count < samples,
               "val_set_size {} leaves no training samples: the datasets give {} samples",
               val_set_size, samples);
  return count;
}

// The training sample uses of one source: every sample floor(weight) times, plus a seeded subset of
// round(fraction * n) of them once more.
std::vector<int64_t> weighted(const std::vector<int64_t>& samples, double weight, uint64_t seed) {
  std::vector<int64_t> out;
  const auto whole = static_cast<int64_t>(std::floor(weight));
  for (int64_t k = 0; k < whole; ++k) out.insert(out.end(), samples.begin(), samples.end());
  const auto n = static_cast<int64_t>(samples.size());
  const auto extra = static_cast<int64_t>(std::llround((weight - whole) * n));
  if (extra > 0) {
    std::vector<int64_t> pick = epoch_order(n, seed, 0);
    pick.resize(static_cast<size_t>(extra));
    std::sort(pick.begin(), pick.end());
    for (int64_t p : pick) out.push_back(samples[p]);
  }
  return out;
}

void write_array(const std::string& dir, const char* name, const void* data, size_t bytes,
                 nlohmann::json& files) {
  AtomicFileWriter writer((fs::path(dir) / name).string());
  writer.write(data, bytes);
  writer.commit();
  files[name] = {{"bytes", bytes}, {"xxh3", xxh3_hex(data, bytes)}};
}

template <class T>
void write_vector(const std::string& dir, const char* name, const std::vector<T>& v,
                  nlohmann::json& files) {
  write_array(dir, name, v.data(), v.size() * sizeof(T), files);
}

// Writes the data files and then meta.json (made by `meta` from the files' sizes and checksums).
void write_files(const std::string& dir, SampleStore& store, const PackedLayout& layout,
                 const std::vector<int64_t>& row_samples, const std::vector<int64_t>& val_samples,
                 const std::function<nlohmann::json(nlohmann::json)>& meta) {
  nlohmann::json files = nlohmann::json::object();
  store.finish(files);
  write_vector(dir, kSampleOffsetsFile, store.offsets, files);
  write_vector(dir, kSampleOriginFile, store.origin, files);
  write_vector(dir, kTrainRowOffsetsFile, layout.row_offsets, files);
  write_vector(dir, kTrainRowSamplesFile, row_samples, files);
  write_vector(dir, kValSamplesFile, val_samples, files);
  write_file_atomic((fs::path(dir) / kMetaFile).string(), meta(std::move(files)).dump(2) + "\n");
}

}  // namespace

// ---------------------------------------------------------------- summary JSON

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SourceSummary, path, type, rows, skipped, samples, truncated,
                                   dropped, tokens, train_samples, val_samples)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(PreparedSummary, sources, samples, train_samples, val_samples,
                                   train_rows, train_tokens, learned_tokens, packing_efficiency)

nlohmann::json summary_to_json(const PreparedSummary& summary) {
  return summary;
}

PreparedSummary summary_from_json(const nlohmann::json& json) {
  return json.get<PreparedSummary>();
}

// ---------------------------------------------------------------- build

namespace {

// Builds every file into `tmp` (a new directory).
PreparedSummary build_into(const DataPrepOptions& options, const Tokenizer& tokenizer,
                           const std::string& fingerprint, const std::string& tmp, int threads,
                           const PrepProgress& progress) {
  PreparedSummary summary;
  SampleStore store(tmp);
  for (size_t i = 0; i < options.sources.size(); ++i) {
    const DataSource& source = options.sources[i];
    SourceSummary src;
    src.path = source.path;
    src.type = source.type;
    if (source.type == "pretokenized") {
      add_pretokenized_source(options, source, static_cast<int64_t>(i), tokenizer, progress, store,
                              src);
    } else {
      add_row_source(options, source, static_cast<int64_t>(i), tokenizer, threads, progress, store,
                     src);
    }
    PTRAIN_CHECK(src.samples > 0,
                 "dataset '{}' gives no samples: all {} were longer than sequence_len {} and "
                 "excess_length_strategy is drop",
                 source.path, src.dropped, options.sequence_len);
    summary.sources.push_back(src);
  }
  const int64_t samples = store.size();
  summary.samples = samples;

  // Validation split over all samples, deterministic in the seed; both parts keep data order.
  const int64_t val = val_count(options.val_set_size, samples);
  std::vector<int64_t> order = epoch_order(samples, options.seed ^ kValSplitSalt, 0);
  std::vector<int64_t> val_samples(order.begin(), order.begin() + val);
  std::sort(val_samples.begin(), val_samples.end());
  std::vector<bool> is_val(static_cast<size_t>(samples), false);
  for (int64_t s : val_samples) is_val[s] = true;

  // Training uses per source, weights applied.
  std::vector<int64_t> train;
  for (size_t i = 0; i < options.sources.size(); ++i) {
    std::vector<int64_t> own;
    for (int64_t s = 0; s < samples; ++s) {
      if (store.source[s] != static_cast<int64_t>(i)) continue;
      if (is_val[s]) {
        ++summary.sources[i].val_samples;
      } else {
        own.push_back(s);
      }
    }
    const std::vector<int64_t> uses =
        weighted(own, options.sources[i].weight, options.seed ^ (kWeightSalt + i));
    PTRAIN_CHECK(own.empty() || !uses.empty(),
                 "dataset '{}' gets no training samples: weight {} of its {} training samples "
                 "rounds to none; raise its weight",
                 options.sources[i].path, options.sources[i].weight, own.size());
    summary.sources[i].train_samples = static_cast<int64_t>(uses.size());
    train.insert(train.end(), uses.begin(), uses.end());
  }
  PTRAIN_CHECK(!train.empty(), "no training samples are left after the validation split");
  summary.val_samples = val;
  summary.train_samples = static_cast<int64_t>(train.size());

  std::vector<int64_t> lengths;
  lengths.reserve(train.size());
  for (int64_t s : train) lengths.push_back(store.length(s));
  PackingOptions packing;
  packing.sequence_len = options.sequence_len;
  packing.group_size = options.packing_group_size;
  packing.seed = options.seed;
  const PackedLayout layout = options.sample_packing
                                  ? pack_samples(lengths, packing)
                                  : one_sample_per_row(static_cast<int64_t>(train.size()));
  std::vector<int64_t> row_samples;
  row_samples.reserve(layout.samples.size());
  for (int64_t k : layout.samples) row_samples.push_back(train[k]);
  summary.train_rows = layout.rows();
  for (int64_t s : train) {
    summary.train_tokens += store.length(s);
    summary.learned_tokens += store.learned[s];
  }
  summary.packing_efficiency = packing_efficiency(layout, lengths, options.sequence_len);

  nlohmann::json data_files = nlohmann::json::array();
  for (const auto& [path, source_index] : store.files)
    data_files.push_back({{"path", path}, {"source", source_index}});
  write_files(tmp, store, layout, row_samples, val_samples, [&](nlohmann::json files) {
    return nlohmann::json{{"format", kPreparedFormat},
                          {"version", kPreparedFormatVersion},
                          {"fingerprint", fingerprint},
                          {"tokenizer", tokenizer.name()},
                          {"vocab_size", tokenizer.vocab_size()},
                          {"sequence_len", options.sequence_len},
                          {"sample_packing", options.sample_packing},
                          {"packing_group_size", options.packing_group_size},
                          {"seed", options.seed},
                          {"val_set_size", options.val_set_size},
                          {"data_files", data_files},
                          {"summary", summary_to_json(summary)},
                          {"files", std::move(files)}};
  });
  return summary;
}

}  // namespace

PreparedSummary build_prepared_dataset(const DataPrepOptions& options, const Tokenizer& tokenizer,
                                       const std::string& fingerprint, const std::string& dir,
                                       int threads, const PrepProgress& progress) {
  PTRAIN_CHECK(!options.sources.empty(),
               "no datasets configured: add a 'datasets:' list of {{path, type}} entries");
  PTRAIN_CHECK(!fs::exists(dir), "prepared dataset directory '{}' already exists", dir);
  // A temporary directory of a name no other builder (this host or another sharing the
  // filesystem) uses, published whole at the end. If another builder published the same
  // fingerprint first, its directory holds the same data: keep it and drop ours.
  char host[256] = "host";
  ::gethostname(host, sizeof(host) - 1);
  const std::string tmp =
      fmt::format("{}.tmp.{}.{}.{:08x}", dir, host, ::getpid(), std::random_device{}());
  try {
    fs::create_directories(tmp);
    PreparedSummary summary = build_into(options, tokenizer, fingerprint, tmp, threads, progress);
    if (!publish_directory(tmp, dir)) fs::remove_all(tmp);
    return summary;
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
}

}  // namespace ptrain
