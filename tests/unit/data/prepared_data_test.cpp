// The prepared dataset against hand-computed expectations: the byte tokenizer's ids are byte + 3
// (bos 1, eos 2), so every expected token below follows from the data written out here; split,
// weights and packing are checked as invariants recomputed independently of the builder.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "data/prepared_data.h"
#include "data/train_batches.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace ptrain {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kBos = 1;
constexpr int64_t kEos = 2;
constexpr int64_t kNo = -100;

class PreparedDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            fmt::format("prepared-{}-{}", ::getpid(),
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "model");
    std::ofstream(root_ / "model" / "tokenizer_config.json") << byte_tokenizer_config_json();
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string write(const std::string& name, const std::string& text) {
    const fs::path path = root_ / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return path.string();
  }
  // Completion rows {"text": ...}, one per line.
  std::string completions(const std::string& name, const std::vector<std::string>& texts) {
    std::string jsonl;
    for (const auto& t : texts) jsonl += "{\"text\": \"" + t + "\"}\n";
    return write(name, jsonl);
  }
  DataPrepOptions options(std::vector<DataSource> sources, int64_t seq = 64) {
    DataPrepOptions o;
    o.sources = std::move(sources);
    o.sequence_len = seq;
    o.length_policy = LengthPolicy::kDrop;
    return o;
  }
  std::string model_dir() const { return (root_ / "model").string(); }
  // Builds into a fresh directory and opens it.
  PreparedDataset build(const DataPrepOptions& o, const std::string& name = "cache",
                        int threads = 2) {
    const std::string dir = (root_ / name).string();
    build_prepared_dataset(o, tokenizer_, data_fingerprint(o, model_dir()), dir, threads);
    return PreparedDataset(dir);
  }

  fs::path root_;
  ByteTokenizer tokenizer_;
};

DataSource source(const std::string& path, const std::string& type = "completion",
                  double weight = 1.0) {
  DataSource s;
  s.path = path;
  s.type = type;
  s.weight = weight;
  return s;
}

std::vector<int64_t> tokens_of(const SampleView& s) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < s.length; ++i) out.push_back(s.token(i));
  return out;
}

std::vector<bool> learned_of(const SampleView& s) {
  std::vector<bool> out;
  for (int64_t i = 0; i < s.length; ++i) out.push_back(s.learned(i));
  return out;
}

std::vector<int64_t> all_row_samples(const PreparedDataset& d) {
  std::vector<int64_t> out;
  for (int64_t r = 0; r < d.train_rows(); ++r) {
    const auto row = d.train_row(r);
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

// ---------------------------------------------------------------- samples and rows

TEST_F(PreparedDataTest, CompletionSamplesAreTheBytesWithLearnedFlagsAndOrigins) {
  const std::string path = completions("a.jsonl", {"ab", "cde", "f"});
  PreparedDataset d = build(options({source(path)}));
  ASSERT_EQ(d.samples(), 3);
  EXPECT_EQ(tokens_of(d.sample(0)), (std::vector<int64_t>{kBos, 'a' + 3, 'b' + 3, kEos}));
  EXPECT_EQ(tokens_of(d.sample(1)), (std::vector<int64_t>{kBos, 'c' + 3, 'd' + 3, 'e' + 3, kEos}));
  EXPECT_EQ(learned_of(d.sample(2)), (std::vector<bool>{false, true, true}));
  EXPECT_EQ(d.origin(1), (std::pair<int64_t, int64_t>{0, 2}));
  EXPECT_EQ(sample_labels(d.sample(0)), (std::vector<int64_t>{'a' + 3, 'b' + 3, kEos, kNo}));
  // No packing: one sample per row, in data order.
  ASSERT_EQ(d.train_rows(), 3);
  EXPECT_EQ(all_row_samples(d), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(d.summary().train_tokens, 12);
  EXPECT_EQ(d.summary().learned_tokens, 9);
  EXPECT_DOUBLE_EQ(d.summary().packing_efficiency, 12.0 / (3 * 64));
  ASSERT_EQ(d.data_files().size(), 1u);
  EXPECT_EQ(d.data_files()[0].path, path);
}

TEST_F(PreparedDataTest, CollateLaysRowsOutWithPositionsSequenceIdsAndShiftedLabels) {
  const std::string path = completions("a.jsonl", {"ab", "c"});
  DataPrepOptions o = options({source(path)}, 8);
  o.sample_packing = true;
  PreparedDataset d = build(o);
  ASSERT_EQ(d.train_rows(), 1);  // 4 + 3 tokens fit one row of 8
  const std::vector<int64_t> row = d.train_row(0);
  ASSERT_EQ(row, (std::vector<int64_t>{0, 1}));  // longest first
  RowBatch b = d.collate({0}, 8);
  EXPECT_EQ(b.input_ids,
            (std::vector<int64_t>{kBos, 'a' + 3, 'b' + 3, kEos, kBos, 'c' + 3, kEos, 0}));
  EXPECT_EQ(b.position_ids, (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 0}));
  EXPECT_EQ(b.sequence_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, -1}));
  EXPECT_EQ(b.labels, (std::vector<int64_t>{'a' + 3, 'b' + 3, kEos, kNo, 'c' + 3, kEos, kNo, kNo}));
}

TEST_F(PreparedDataTest, AlpacaLabelsOnlyTheResponse) {
  const std::string path =
      write("alpaca.jsonl", "{\"instruction\": \"Say hi.\", \"output\": \"hi\"}\n");
  PreparedDataset d = build(options({source(path, "alpaca")}, 256));
  const SampleView s = d.sample(0);
  // Learned: the two response bytes and eos, nothing else.
  std::vector<int64_t> learned;
  for (int64_t i = 0; i < s.length; ++i)
    if (s.learned(i)) learned.push_back(s.token(i));
  EXPECT_EQ(learned, (std::vector<int64_t>{'h' + 3, 'i' + 3, kEos}));
}

// ---------------------------------------------------------------- split, weights, packing

TEST_F(PreparedDataTest, PackingSplitAndWeightsKeepEverySampleAccountedFor) {
  std::mt19937_64 rng(7);
  std::vector<std::string> a, b;
  for (int i = 0; i < 200; ++i) a.push_back(std::string(1 + rng() % 60, 'x'));
  for (int i = 0; i < 50; ++i) b.push_back(std::string(1 + rng() % 20, 'y'));
  DataPrepOptions o = options({source(completions("a.jsonl", a), "completion", 2.0),
                               source(completions("b.jsonl", b), "completion", 0.5)},
                              64);
  o.sample_packing = true;
  o.packing_group_size = 37;
  o.val_set_size = 0.1;
  o.length_policy = LengthPolicy::kTruncate;
  PreparedDataset d = build(o);
  ASSERT_EQ(d.samples(), 250);
  const int64_t val = 25;  // 10% of 250
  ASSERT_EQ(d.val_samples(), val);
  std::set<int64_t> val_set(d.val_samples_data(), d.val_samples_data() + val);
  ASSERT_EQ(static_cast<int64_t>(val_set.size()), val);
  // Uses per sample: source a twice, source b once for a seeded half of its training samples.
  std::map<int64_t, int> uses;
  for (int64_t s : all_row_samples(d)) ++uses[s];
  int64_t b_train = 0, b_used = 0, a_val = 0;
  for (int64_t s = 0; s < 250; ++s) {
    const bool from_a = d.origin(s).first == 0;
    if (val_set.count(s)) {
      EXPECT_EQ(uses.count(s), 0u) << "validation sample " << s << " is trained on";
      a_val += from_a ? 1 : 0;
      continue;
    }
    if (from_a) {
      EXPECT_EQ(uses[s], 2) << "sample " << s;
    } else {
      ++b_train;
      EXPECT_LE(uses[s], 1) << "sample " << s;
      b_used += uses[s];
    }
  }
  EXPECT_EQ(b_used, std::llround(0.5 * b_train));
  EXPECT_EQ(d.summary().sources[0].val_samples, a_val);
  EXPECT_EQ(d.summary().sources[1].train_samples, b_used);
  // Rows: within sequence_len, none empty, efficiency recomputed.
  int64_t tokens = 0;
  for (int64_t r = 0; r < d.train_rows(); ++r) {
    ASSERT_FALSE(d.train_row(r).empty());
    EXPECT_LE(d.row_tokens(r), 64);
    tokens += d.row_tokens(r);
  }
  EXPECT_EQ(tokens, d.summary().train_tokens);
  EXPECT_DOUBLE_EQ(d.summary().packing_efficiency,
                   static_cast<double>(tokens) / (64.0 * d.train_rows()));
}

TEST_F(PreparedDataTest, ValidationSplitIsDeterministicInTheSeed) {
  std::vector<std::string> texts;
  for (int i = 0; i < 40; ++i) texts.push_back(std::string(1 + i % 7, 'z'));
  DataPrepOptions o = options({source(completions("a.jsonl", texts))});
  o.val_set_size = 5;
  auto val_of = [&](const PreparedDataset& d) {
    return std::vector<int64_t>(d.val_samples_data(), d.val_samples_data() + d.val_samples());
  };
  const auto first = val_of(build(o, "c1"));
  EXPECT_EQ(first.size(), 5u);
  EXPECT_EQ(val_of(build(o, "c2")), first);
  o.seed = 43;
  EXPECT_NE(val_of(build(o, "c3")), first);
  o.val_set_size = 40;
  EXPECT_THAT([&] { build(o, "c4"); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("leaves no training samples")));
}

TEST_F(PreparedDataTest, LengthPolicyDropsAndAnAllDroppedSourceIsAnError) {
  const std::string path = completions("a.jsonl", {"ab", "abcdefgh", "c"});
  PreparedDataset d = build(options({source(path)}, 5));
  EXPECT_EQ(d.samples(), 2);
  EXPECT_EQ(d.summary().sources[0].dropped, 1);
  EXPECT_EQ(d.origin(1).second, 3);  // the row after the dropped one keeps its line
  const std::string long_only = completions("b.jsonl", {"abcdefgh"});
  EXPECT_THAT([&] { build(options({source(long_only)}, 5), "c2"); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("gives no samples")));
}

TEST_F(PreparedDataTest, DirectorySourcesReadTheirFilesInNameOrder) {
  completions("dir/2.jsonl", {"b"});
  completions("dir/1.jsonl", {"a"});
  write("dir/.hidden", "not data");
  PreparedDataset d = build(options({source((root_ / "dir").string())}));
  ASSERT_EQ(d.samples(), 2);
  EXPECT_EQ(tokens_of(d.sample(0))[1], 'a' + 3);
  EXPECT_EQ(tokens_of(d.sample(1))[1], 'b' + 3);
  // Lines restart in every file: the origin names the file.
  EXPECT_EQ(d.origin(1), (std::pair<int64_t, int64_t>{1, 1}));
  ASSERT_EQ(d.data_files().size(), 2u);
  EXPECT_EQ(fs::path(d.data_files()[1].path).filename(), "2.jsonl");
  EXPECT_EQ(d.data_files()[1].source, 0);
}

TEST_F(PreparedDataTest, ValidationFractionIsTheCeilingOfTheExactProduct) {
  std::vector<std::string> texts(100, "q");
  DataPrepOptions o = options({source(completions("a.jsonl", texts))});
  o.val_set_size = 0.07;  // 0.07 * 100 is 7.000000000000001 in doubles
  EXPECT_EQ(build(o, "c1").val_samples(), 7);
  o.val_set_size = 0.071;
  EXPECT_EQ(build(o, "c2").val_samples(), 8);
}

TEST_F(PreparedDataTest, AWeightThatLeavesASourceNoTrainingSamplesIsAnError) {
  DataPrepOptions o = options({source(completions("a.jsonl", {"a", "b"})),
                               source(completions("b.jsonl", {"c", "d", "e"}), "completion", 0.1)});
  EXPECT_THAT([&] { build(o); },
              ::testing::ThrowsMessage<UserError>(HasSubstr(
                  "b.jsonl' gets no training samples: weight 0.1 of its 3 training samples")));
}

TEST_F(PreparedDataTest, RebuildingOnMoreThreadsGivesIdenticalFilesAndPublishedDataIsKept) {
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) texts.push_back(std::string(1 + i % 13, 'k'));
  DataPrepOptions o = options({source(completions("a.jsonl", texts))});
  o.sample_packing = true;
  o.val_set_size = 0.2;
  build(o, "c1", 1);
  build(o, "c2", 5);  // rows rendered on 5 threads land in the same order
  for (const char* name : {"meta.json", "tokens.bin", "sample_offsets.bin", "sample_origin.bin",
                           "train_row_offsets.bin", "train_row_samples.bin", "val_samples.bin"}) {
    std::ifstream a(root_ / "c1" / name, std::ios::binary),
        b(root_ / "c2" / name, std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}),
              std::string(std::istreambuf_iterator<char>(b), {}))
        << name;
  }
  // A second builder finishing after the first keeps the first's directory.
  EXPECT_FALSE(publish_directory((root_ / "c2").string(), (root_ / "c1").string()));
  EXPECT_TRUE(fs::exists(root_ / "c2"));
  EXPECT_NO_THROW(PreparedDataset((root_ / "c1").string()));
}

TEST_F(PreparedDataTest, TrainBatchesStateNamesItsDataAndResumesOnlyOnIt) {
  std::vector<std::string> texts;
  for (int i = 0; i < 30; ++i) texts.push_back(std::string(1 + i % 5, 'r'));
  DataPrepOptions o = options({source(completions("a.jsonl", texts))});
  PreparedDataset d = build(o, "c1");
  TrainBatches first(d, 2, 0, 1, 42, false);
  for (int i = 0; i < 4; ++i) first.next_rows();
  const SamplerState saved = SamplerState::from_json(first.state().dump());
  EXPECT_EQ(saved.data, d.fingerprint());
  TrainBatches resumed(d, 2, 0, 1, 42, false);
  resumed.restore(saved);
  EXPECT_EQ(resumed.next_rows(), first.next_rows());
  // Same row count, other data: refused.
  completions("a.jsonl", std::vector<std::string>(30, "x"));
  PreparedDataset other = build(o, "c2");
  ASSERT_EQ(other.train_rows(), d.train_rows());
  TrainBatches elsewhere(other, 2, 0, 1, 42, false);
  EXPECT_THAT([&] { elsewhere.restore(saved); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("the sampler state was saved over")));
}

TEST_F(PreparedDataTest, TrainBatchesAreAsWideAsTheLongestRowUnlessPadded) {
  const std::string path = completions("a.jsonl", {"a", "abcdef", "ab"});
  PreparedDataset d = build(options({source(path)}, 64));
  TrainBatches free_width(d, 3, 0, 1, 42, /*pad_to_sequence_len=*/false);
  RowBatch b = free_width.next();
  EXPECT_EQ(b.width, 8);  // bos + 6 bytes + eos
  EXPECT_EQ(b.rows, 3);
  TrainBatches padded(d, 3, 0, 1, 42, /*pad_to_sequence_len=*/true);
  EXPECT_EQ(padded.next().width, 64);
}

// ---------------------------------------------------------------- pretokenized

TEST_F(PreparedDataTest, PretokenizedDocumentsEndAtEosAndLongOnesAreChunked) {
  const std::vector<uint16_t> ids = {5, 6, kEos, 7, 8, 9, 10, 11, kEos, 12};
  const std::string path =
      write("tokens.bin", std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * 2));
  DataSource s = source(path, "pretokenized");
  PreparedDataset d = build(options({s}, 4));
  ASSERT_EQ(d.samples(), 3);  // the last document, [12], has nothing to learn
  EXPECT_EQ(tokens_of(d.sample(0)), (std::vector<int64_t>{5, 6, kEos}));
  EXPECT_EQ(tokens_of(d.sample(1)), (std::vector<int64_t>{7, 8, 9, 10}));
  EXPECT_EQ(tokens_of(d.sample(2)), (std::vector<int64_t>{11, kEos}));
  EXPECT_EQ(learned_of(d.sample(1)), (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(d.origin(2).second, 2);  // second document
  EXPECT_EQ(d.summary().sources[0].rows, 3);
  EXPECT_EQ(d.summary().sources[0].dropped, 1);
}

TEST_F(PreparedDataTest, PretokenizedChunksWithNothingToLearnAreDropped) {
  const std::vector<uint16_t> ids = {5, 6, 7, 8, kEos, 9, 10};
  const std::string path =
      write("tokens.bin", std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * 2));
  PreparedDataset d = build(options({source(path, "pretokenized")}, 4));
  ASSERT_EQ(d.samples(), 2);
  EXPECT_EQ(tokens_of(d.sample(0)), (std::vector<int64_t>{5, 6, 7, 8}));
  EXPECT_EQ(tokens_of(d.sample(1)), (std::vector<int64_t>{9, 10}));
  EXPECT_EQ(d.summary().sources[0].dropped, 1);
}

TEST_F(PreparedDataTest, PretokenizedUint32AndBadFilesNameTheProblem) {
  const std::vector<uint32_t> ids = {5, 6, kEos};
  DataSource s = source(
      write("t32.bin", std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * 4)),
      "pretokenized");
  s.dtype = "uint32";
  EXPECT_EQ(build(options({s})).samples(), 1);
  const std::vector<uint16_t> bad = {5, 300};
  DataSource out_of_vocab = source(
      write("bad.bin", std::string(reinterpret_cast<const char*>(bad.data()), 4)), "pretokenized");
  EXPECT_THAT([&] { build(options({out_of_vocab}), "c2"); },
              ::testing::ThrowsMessage<UserError>(
                  HasSubstr("token 1 (id 300) is outside the tokenizer's vocabulary of 259")));
  DataSource odd = source(write("odd.bin", "abc"), "pretokenized");
  EXPECT_THAT([&] { build(options({odd}), "c3"); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("3 bytes is not a whole number")));
}

// ---------------------------------------------------------------- fingerprint and damage

TEST_F(PreparedDataTest, FingerprintFollowsDataSettingsAndTokenizer) {
  const std::string path = completions("a.jsonl", {"ab"});
  DataPrepOptions o = options({source(path)});
  const std::string fp = data_fingerprint(o, model_dir());
  EXPECT_EQ(fp.size(), 16u);
  EXPECT_EQ(data_fingerprint(o, model_dir()), fp);
  completions("a.jsonl", {"ac"});
  const std::string changed_data = data_fingerprint(o, model_dir());
  EXPECT_NE(changed_data, fp);
  o.sequence_len = 65;
  EXPECT_NE(data_fingerprint(o, model_dir()), changed_data);
  o.sequence_len = 64;
  o.render.train_on_inputs = true;
  EXPECT_NE(data_fingerprint(o, model_dir()), changed_data);
  o.render.train_on_inputs = false;
  ASSERT_EQ(data_fingerprint(o, model_dir()), changed_data);
  // Every other setting, one at a time.
  const std::vector<std::function<void(DataPrepOptions&)>> changes = {
      [](DataPrepOptions& x) { x.sample_packing = true; },
      [](DataPrepOptions& x) { x.packing_group_size = 7; },
      [](DataPrepOptions& x) { x.length_policy = LengthPolicy::kTruncate; },
      [](DataPrepOptions& x) { x.skip_invalid_rows = true; },
      [](DataPrepOptions& x) { x.val_set_size = 0.1; },
      [](DataPrepOptions& x) { x.seed = 43; },
      [](DataPrepOptions& x) { x.render.chat_template = "chatml"; },
      [](DataPrepOptions& x) { x.sources[0].weight = 2; },
      [](DataPrepOptions& x) { x.sources[0].field = "body"; },
      [](DataPrepOptions& x) { x.sources[0].dtype = "uint32"; },
      [](DataPrepOptions& x) { x.sources[0].type = "alpaca"; },
      [&](DataPrepOptions& x) { x.sources.push_back(x.sources[0]); },
  };
  std::set<std::string> seen = {changed_data};
  for (size_t i = 0; i < changes.size(); ++i) {
    DataPrepOptions changed = o;
    changes[i](changed);
    EXPECT_TRUE(seen.insert(data_fingerprint(changed, model_dir())).second) << "change " << i;
  }
  std::ofstream(root_ / "model" / "tokenizer_config.json", std::ios::app) << " ";
  EXPECT_NE(data_fingerprint(o, model_dir()), changed_data);
}

TEST_F(PreparedDataTest, DamagedFilesAreDetected) {
  const std::string path = completions("a.jsonl", {"ab", "cd"});
  build(options({source(path)}));
  const fs::path dir = root_ / "cache";
  {
    std::fstream f(dir / "tokens.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5);
    f.put('\x7f');
  }
  EXPECT_THAT([&] { PreparedDataset d(dir.string()); },
              ::testing::ThrowsMessage<CorruptData>(HasSubstr("tokens.bin fails its checksum")));
  fs::resize_file(dir / "sample_offsets.bin", 8);
  EXPECT_THAT([&] { PreparedDataset d(dir.string()); },
              ::testing::ThrowsMessage<CorruptData>(HasSubstr("sample_offsets.bin has 8 bytes")));
  fs::remove(dir / "meta.json");
  EXPECT_THAT([&] { PreparedDataset d(dir.string()); },
              ::testing::ThrowsMessage<CorruptData>(HasSubstr("meta.json")));
}

TEST_F(PreparedDataTest, BadRowsNameFileAndLineOrAreSkippedWhenAsked) {
  const std::string path = write("a.jsonl", "{\"text\": \"ab\"}\n{\"text\": 5}\n");
  EXPECT_THAT([&] { build(options({source(path)})); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("a.jsonl:2: 'text' must be a string")));
  DataPrepOptions o = options({source(path)});
  o.skip_invalid_rows = true;
  PreparedDataset d = build(o, "c2");
  EXPECT_EQ(d.samples(), 1);
  EXPECT_EQ(d.summary().sources[0].skipped.at("wrong type"), 1);
  EXPECT_FALSE(fs::exists(root_ / "cache")) << "a failed build leaves no directory";
  for (const auto& entry : fs::directory_iterator(root_))
    EXPECT_EQ(entry.path().filename().string().find("cache.tmp"), std::string::npos)
        << "a failed build leaves its temporary directory: " << entry.path();
}

TEST_F(PreparedDataTest, MissingPathsAndParquetFilesSayWhatIsRead) {
  EXPECT_THAT([&] { build(options({source("tatsu-lab/alpaca", "alpaca")})); },
              ::testing::ThrowsMessage<UserError>(
                  HasSubstr("dataset 'tatsu-lab/alpaca' does not exist (datasets are local")));
  const std::string parquet = write("train.parquet", "PAR1");
  EXPECT_THAT([&] { build(options({source(parquet, "alpaca")})); },
              ::testing::ThrowsMessage<UserError>(
                  HasSubstr("Parquet and Arrow files are not supported; convert it to JSONL")));
}

TEST_F(PreparedDataTest, RowsTheTemplateRejectsAreSkippedWhenAsked) {
  const std::string path =
      write("chat.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
            "\"content\": \"a\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n");
  DataPrepOptions o = options({source(path, "chat_template")});
  o.render.chat_template = "chatml";
  EXPECT_THAT([&] { build(o); }, ::testing::ThrowsMessage<UserError>(HasSubstr("chat.jsonl:2: ")));
  o.skip_invalid_rows = true;
  PreparedDataset d = build(o, "c2");
  EXPECT_EQ(d.samples(), 1);
  EXPECT_EQ(d.summary().sources[0].rows, 1);
  EXPECT_EQ(d.summary().sources[0].skipped.at("rejected by the template"), 1);
}

}  // namespace
}  // namespace ptrain
