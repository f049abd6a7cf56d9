#include "bench/data_bench.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "bench/bench_common.h"
#include "core/file_util.h"
#include "data/packing.h"
#include "data/prepared_data.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace ptrain::bench {
namespace {

// The corpus: the given text files back to back, or (none given) seeded text of English-like words,
// numbers, punctuation and a little non-ASCII; repeated up to `bytes`.
std::string make_corpus(const DataBenchOptions& o) {
  std::string base;
  for (const std::string& path : o.texts) base += read_text_file(path) + "\n";
  if (base.empty()) {
    const char* words[] = {"the",   "of",     "and",     "to",    "training", "model",
                           "data",  "tokens", "é",       "naïve", "rank",     "gradient",
                           "2048",  "3.14",   "(x + y)", "don't", "中文",     "step",
                           "loss:", "shard",  "we'll",   "NCCL",  "float",    "\"quoted\""};
    std::mt19937_64 rng(1);
    for (int i = 0; i < 200000; ++i) {
      base += words[rng() % (sizeof(words) / sizeof(words[0]))];
      base += (rng() % 12 == 0) ? ".\n" : " ";
    }
  }
  std::string corpus;
  while (static_cast<int64_t>(corpus.size()) < o.corpus_bytes) corpus += base;
  corpus.resize(static_cast<size_t>(o.corpus_bytes));
  return corpus;
}

// The corpus cut into `parts` pieces at line boundaries.
std::vector<std::string_view> split_lines(const std::string& text, int parts) {
  std::vector<std::string_view> out;
  size_t begin = 0;
  for (int p = 1; p <= parts; ++p) {
    size_t end = p == parts ? text.size() : text.size() * p / parts;
    while (end < text.size() && text[end] != '\n') ++end;
    end = std::min(text.size(), end + (end < text.size() ? 1 : 0));
    if (end > begin) out.emplace_back(text.data() + begin, end - begin);
    begin = end;
  }
  return out;
}

// Seconds to encode `corpus` on `threads` threads, each line separately (as rows are encoded).
double encode_seconds(const Tokenizer& tok, const std::string& corpus, int threads) {
  const auto parts = split_lines(corpus, threads);
  return best_seconds(
      [&] {
        std::vector<std::thread> pool;
        for (const auto& part : parts)
          pool.emplace_back([&tok, part] {
            size_t begin = 0;
            while (begin < part.size()) {
              size_t end = part.find('\n', begin);
              end = end == std::string_view::npos ? part.size() : end + 1;
              volatile size_t n = tok.encode(part.substr(begin, end - begin)).size();
              (void)n;
              begin = end;
            }
          });
        for (auto& t : pool) t.join();
      },
      2.0);
}

void tokenize_results(const DataBenchOptions& o, int threads, const nlohmann::json& machine) {
  const std::string corpus = make_corpus(o);
  const double mb = static_cast<double>(corpus.size()) / 1e6;
  std::string copy(corpus.size(), '\0');
  const double memcpy_s =
      best_seconds([&] { std::memcpy(copy.data(), corpus.data(), corpus.size()); });
  std::vector<std::pair<std::string, std::unique_ptr<Tokenizer>>> tokenizers;
  tokenizers.emplace_back("byte", std::make_unique<ByteTokenizer>());
  for (const std::string& dir : o.tokenizers) tokenizers.emplace_back(dir, load_tokenizer(dir));
  for (const auto& [dir, tok] : tokenizers) {
    encode_seconds(*tok, corpus.substr(0, corpus.size() / 8), threads);  // warm the word caches
    for (int t : {1, threads}) {
      const double s = encode_seconds(*tok, corpus, t);
      print_result({{"suite", "data"},
                    {"machine", machine},
                    {"op", "tokenize"},
                    {"tokenizer", tok->name()},
                    {"model", dir},
                    {"threads", t},
                    {"bytes", corpus.size()},
                    {"mb_per_s", mb / s},
                    {"baseline", "memcpy (one thread, same bytes)"},
                    {"baseline_mb_per_s", mb / memcpy_s},
                    {"vs_baseline", memcpy_s / s}});
      if (threads == 1) break;
    }
  }
}

std::vector<int64_t> alpaca_like_lengths(int64_t n, int64_t sequence_len) {
  std::mt19937_64 rng(2024);
  std::lognormal_distribution<double> draw(std::log(150.0), 0.8);
  std::vector<int64_t> lengths(static_cast<size_t>(n));
  for (auto& l : lengths)
    l = std::min<int64_t>(sequence_len, std::clamp<int64_t>(std::llround(draw(rng)), 20, 1000));
  return lengths;
}

void pack_results(const DataBenchOptions& o, const nlohmann::json& machine) {
  const std::vector<int64_t> lengths = alpaca_like_lengths(o.samples, o.sequence_len);
  PackingOptions options;
  options.sequence_len = o.sequence_len;
  PackedLayout layout;
  const double pack_s = best_seconds([&] { layout = pack_samples(lengths, options); });
  const double sort_s = best_seconds([&] {
    std::vector<int64_t> copy = lengths;
    std::sort(copy.begin(), copy.end());
  });
  int64_t tokens = 0;
  for (int64_t l : lengths) tokens += l;
  const double efficiency = packing_efficiency(layout, lengths, o.sequence_len);
  const double baseline_efficiency =
      packing_efficiency(one_sample_per_row(o.samples), lengths, o.sequence_len);
  print_result({{"suite", "data"},
                {"machine", machine},
                {"op", "pack"},
                {"samples", o.samples},
                {"sequence_len", o.sequence_len},
                {"group_size", options.group_size},
                {"mean_length", static_cast<double>(tokens) / static_cast<double>(o.samples)},
                {"rows", layout.rows()},
                {"packing_efficiency", efficiency},
                {"baseline", "one sample per row"},
                {"baseline_packing_efficiency", baseline_efficiency},
                {"vs_baseline", efficiency / baseline_efficiency},
                {"seconds", pack_s},
                {"sort_seconds", sort_s}});
}

void prepare_results(const DataBenchOptions& o, int threads, const nlohmann::json& machine) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("ptrain-data-bench-{}", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir / "model");
  write_file_atomic((dir / "model" / "tokenizer_config.json").string(),
                    byte_tokenizer_config_json());
  // Rows from the corpus's words: instructions and outputs of Alpaca-like lengths.
  const std::string corpus = make_corpus(o);
  std::mt19937_64 rng(5);
  std::string jsonl;
  for (int64_t i = 0; i < o.prepare_rows; ++i) {
    // A stretch of the corpus, its ends moved off UTF-8 continuation bytes.
    auto piece = [&](size_t max) {
      auto boundary = [&](size_t at) {
        while (at < corpus.size() && (static_cast<unsigned char>(corpus[at]) & 0xC0) == 0x80) ++at;
        return at;
      };
      const size_t begin = boundary(rng() % (corpus.size() - max));
      return corpus.substr(begin, boundary(begin + 20 + rng() % max) - begin);
    };
    jsonl += nlohmann::json{{"instruction", piece(200)}, {"output", piece(600)}}.dump() + "\n";
  }
  write_file_atomic((dir / "rows.jsonl").string(), jsonl);
  DataPrepOptions options;
  DataSource source;
  source.path = (dir / "rows.jsonl").string();
  source.type = "alpaca";
  options.sources = {source};
  options.sequence_len = o.sequence_len;
  options.sample_packing = true;
  ByteTokenizer tok;
  int run = 0;
  const double s = best_seconds(
      [&] {
        const std::string out = (dir / fmt::format("cache-{}", run++)).string();
        build_prepared_dataset(options, tok, "bench", out, threads);
      },
      2.0);
  PreparedDataset data((dir / "cache-0").string());
  print_result({{"suite", "data"},
                {"machine", machine},
                {"op", "prepare"},
                {"tokenizer", tok.name()},
                {"threads", threads},
                {"rows", o.prepare_rows},
                {"bytes", jsonl.size()},
                {"samples", data.samples()},
                {"rows_per_s", static_cast<double>(o.prepare_rows) / s},
                {"mb_per_s", static_cast<double>(jsonl.size()) / 1e6 / s},
                {"packing_efficiency", data.summary().packing_efficiency},
                {"seconds", s}});
  fs::remove_all(dir);
}

}  // namespace

int run_data_bench(const DataBenchOptions& o) {
  const nlohmann::json machine = machine_json();
  const int threads = o.threads > 0
                          ? o.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  tokenize_results(o, threads, machine);
  pack_results(o, machine);
  prepare_results(o, threads, machine);
  return 0;
}

}  // namespace ptrain::bench
