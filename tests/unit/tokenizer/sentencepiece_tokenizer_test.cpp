// SentencePieceTokenizer against the reference implementation: small models are trained with
// spm_train on a generated text, and our ids and decoded text are compared with spm_encode's and
// spm_decode's on held-out lines (the Debian package `sentencepiece`, run as separate processes;
// scripts/install-deps.sh installs it). A missing spm_train is a failure, not a skip.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"
#include "tokenizer/sentencepiece_tokenizer.h"

namespace ptrain {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using Ids = std::vector<int64_t>;

// ---------------------------------------------------------------- corpus and processes

const std::vector<std::string>& words() {
  static const std::vector<std::string> w = {
      "the",       "quick",    "brown",    "fox",    "jumps",   "over",   "lazy",   "dog",
      "tokenizer", "training", "model",    "piece",  "unigram", "merge",  "score",  "hello",
      "world",     "data",     "parallel", "über",   "naïve",   "café",   "déjà",   "vu",
      "Straße",    "東京",     "日本語",   "テスト", "中文",    "Привет", "мир",    "γειά",
      "σου",       "مرحبا",    "שלום",     "😀",      "🚀",       "42",     "3.14",   "2024",
      "1,000,000", "007",      "(x)",      "[y]",    "{z}",     "a+b=c",  "e-mail", "foo@bar.org",
      "#tag",      "...",      "!",        "?",      ";",       "--",     "ＡＢＣ", "ﬁne",
      "①",         "Ⅻ",        "½"};
  return w;
}

// Rare text only the held-out lines use: characters never seen in training (unk or bytes),
// control-piece and byte-piece spellings, whitespace runs and invalid UTF-8.
const std::vector<std::string>& rare() {
  static const std::vector<std::string> r = {
      "<s>", "</s>", "<unk>",        "<pad>",     "<0x41>",   "Ж",        "🎉",   "ǅ",
      "𝔘𝔫𝔦", "ꙮ",    "\xE2\x80\x8B", "x\xCC\x81", "  ",       "\t",       "   ", "☃☃",
      "foo", "bar",  "foobar",       "ab",        "\xFF\xFE", "a\xE3\x81"};
  return r;
}

std::string random_line(std::mt19937& rng, bool held_out) {
  std::uniform_int_distribution<int> n_words(1, 14), pick(0, 99);
  const auto& w = words();
  const auto& r = rare();
  std::string line;
  if (pick(rng) < 10) line += pick(rng) < 50 ? "  " : " ";
  const int n = n_words(rng);
  for (int i = 0; i < n; ++i) {
    if (i > 0) {
      const int p = pick(rng);
      line += p < 80 ? " " : p < 88 ? "  " : p < 94 ? "\t" : p < 97 ? "" : "   ";
    }
    if (held_out && pick(rng) < 15)
      line += r[pick(rng) % r.size()];
    else
      line += w[std::uniform_int_distribution<size_t>(0, w.size() - 1)(rng)];
    if (pick(rng) < 10) line += pick(rng) < 50 ? "foo" : "bar";
  }
  if (pick(rng) < 10) line += " ";
  return line;
}

std::vector<std::string> lines(uint32_t seed, int n, bool held_out) {
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(random_line(rng, held_out));
  return out;
}

void write_lines(const std::string& path, const std::vector<std::string>& ls) {
  std::ofstream f(path, std::ios::binary);
  for (const auto& l : ls) f << l << '\n';
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<std::string> out;
  for (std::string l; std::getline(f, l);) out.push_back(l);
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Ids parse_ids(const std::string& line) {
  std::istringstream in(line);
  Ids ids;
  for (int64_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::string join(const Ids& ids) {
  std::string s;
  for (int64_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

// Runs `cmd` through the shell with stderr to `log`; the test fails with the log when it exits
// non-zero.
void run(const std::string& cmd, const std::string& log) {
  const int rc = std::system((cmd + " 2>" + log).c_str());
  ASSERT_EQ(rc, 0) << cmd << "\n" << read_all(log);
}

class SentencePieceReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = ::testing::TempDir() + "ptrain_spm_test";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    write_lines(dir_ + "/train.txt", lines(1, 800, false));
    held_out_ = lines(2, 300, true);
    held_out_.push_back("");
    held_out_.push_back("   ");
    held_out_.push_back(" \t ");
    write_lines(dir_ + "/held_out.txt", held_out_);
  }

  static bool have_spm() {
    return std::system(
               "command -v spm_train >/dev/null 2>&1 && command -v spm_encode "
               ">/dev/null 2>&1 && command -v spm_decode >/dev/null 2>&1") == 0;
  }

  // Trains dir_/<name>.model with spm_train and the given options.
  static std::string train(const std::string& name, const std::string& options) {
    const std::string prefix = dir_ + "/" + name;
    run("spm_train --input=" + dir_ + "/train.txt --model_prefix=" + prefix +
            " --vocab_size=500 --hard_vocab_limit=false --num_threads=1 " + options,
        prefix + ".train.log");
    return prefix + ".model";
  }

  // Compares encode() with spm_encode on every held-out line, and decode() with spm_decode on
  // the reference ids and on random id sequences.
  static void compare(const std::string& model) {
    const auto tok = SentencePieceTokenizer::load_file(model);
    run("spm_encode --model=" + model + " --output_format=id <" + dir_ + "/held_out.txt >" + model +
            ".ids",
        model + ".encode.log");
    const std::vector<std::string> ref = read_lines(model + ".ids");
    ASSERT_EQ(ref.size(), held_out_.size());
    int mismatches = 0;
    std::vector<Ids> ref_ids;
    for (size_t i = 0; i < held_out_.size(); ++i) {
      ref_ids.push_back(parse_ids(ref[i]));
      const Ids ours = tok->encode(held_out_[i]);
      if (ours != ref_ids.back() && ++mismatches <= 5)
        ADD_FAILURE() << model << " line " << i << " '" << held_out_[i]
                      << "'\n  spm_encode: " << ref[i] << "\n  ours:       " << join(ours);
    }
    EXPECT_EQ(mismatches, 0) << model;

    // Random sequences: every id, bytes in any order (invalid UTF-8), control pieces first.
    std::mt19937 rng(3);
    std::uniform_int_distribution<int64_t> any(0, tok->vocab_size() - 1);
    std::vector<Ids> decode_in = ref_ids;
    for (int i = 0; i < 200; ++i) {
      Ids ids;
      for (int k = std::uniform_int_distribution<int>(1, 12)(rng); k > 0; --k) {
        const int64_t id = any(rng);
        if (tok->piece(id) != "<0x0A>") ids.push_back(id);  // spm_decode's output is by line
      }
      decode_in.push_back(ids);
    }
    std::vector<std::string> id_lines;
    for (const Ids& ids : decode_in) id_lines.push_back(join(ids));
    write_lines(model + ".decode_in", id_lines);
    run("spm_decode --model=" + model + " --input_format=id <" + model + ".decode_in >" + model +
            ".decoded",
        model + ".decode.log");
    const std::vector<std::string> decoded = read_lines(model + ".decoded");
    ASSERT_EQ(decoded.size(), decode_in.size());
    mismatches = 0;
    for (size_t i = 0; i < decode_in.size(); ++i) {
      const std::string ours = tok->decode(decode_in[i], true);
      if (ours != decoded[i] && ++mismatches <= 5)
        ADD_FAILURE() << model << " ids " << id_lines[i] << "\n  spm_decode: '" << decoded[i]
                      << "'\n  ours:       '" << ours << "'";
    }
    EXPECT_EQ(mismatches, 0) << model;
  }

  static std::string dir_;
  static std::vector<std::string> held_out_;
};

std::string SentencePieceReference::dir_;
std::vector<std::string> SentencePieceReference::held_out_;

// ---------------------------------------------------------------- against spm_encode/spm_decode

TEST_F(SentencePieceReference, ReferenceToolsAreInstalled) {
  ASSERT_TRUE(have_spm()) << "spm_train/spm_encode/spm_decode not found: install the Debian "
                             "package 'sentencepiece' (scripts/install-deps.sh)";
}

TEST_F(SentencePieceReference, UnigramNmtNfkc) {
  ASSERT_TRUE(have_spm());
  compare(train("unigram_nfkc", "--model_type=unigram"));
}

TEST_F(SentencePieceReference, UnigramIdentityByteFallbackUserDefined) {
  ASSERT_TRUE(have_spm());
  compare(train("unigram_identity_bytes",
                "--model_type=unigram --normalization_rule_name=identity --byte_fallback=true "
                "--vocab_size=700 --user_defined_symbols=foo,bar,foobar"));
}

TEST_F(SentencePieceReference, UnigramWithoutDummyPrefixOrWhitespaceCleanup) {
  ASSERT_TRUE(have_spm());
  compare(train("unigram_raw_spaces",
                "--model_type=unigram --normalization_rule_name=identity "
                "--add_dummy_prefix=false --remove_extra_whitespaces=false"));
}

TEST_F(SentencePieceReference, BpeNmtNfkcByteFallback) {
  ASSERT_TRUE(have_spm());
  compare(train("bpe_nfkc_bytes", "--model_type=bpe --byte_fallback=true --vocab_size=700"));
}

TEST_F(SentencePieceReference, BpeIdentityUserDefinedNfkcCf) {
  ASSERT_TRUE(have_spm());
  compare(train("bpe_identity_user",
                "--model_type=bpe --normalization_rule_name=identity "
                "--user_defined_symbols=foo,bar,ab"));
  compare(train("bpe_nfkc_cf",
                "--model_type=bpe --normalization_rule_name=nfkc_cf "
                "--unk_id=3 --bos_id=-1 --eos_id=1 --pad_id=0"));
}

// ---------------------------------------------------------------- contract and errors

TEST_F(SentencePieceReference, SpecialTokensComeFromTheSpecAndNeverFromText) {
  ASSERT_TRUE(have_spm());
  const std::string model = train("special", "--model_type=unigram --pad_id=3 --unk_id=0");
  const auto tok = SentencePieceTokenizer::load_file(model);
  EXPECT_EQ(tok->bos_id, std::optional<int64_t>(1));
  EXPECT_EQ(tok->eos_id, std::optional<int64_t>(2));
  EXPECT_EQ(tok->pad_id, std::optional<int64_t>(3));
  EXPECT_EQ(tok->piece(1), "<s>");
  const Ids ids = tok->encode("<s> hello </s><pad>");
  for (int64_t special : {1, 2, 3}) EXPECT_THAT(ids, ::testing::Not(::testing::Contains(special)));
  EXPECT_EQ(tok->encode_sequence("hello").front(), 1);
  EXPECT_EQ(tok->decode({1, tok->encode("hello")[0], 2}, false).substr(0, 3), "<s>");

  // load_tokenizer picks tokenizer.model when there is no tokenizer.json; add_bos_token from
  // tokenizer_config.json.
  const std::string model_dir = dir_ + "/model_dir";
  std::filesystem::create_directories(model_dir);
  std::filesystem::copy_file(model, model_dir + "/tokenizer.model",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(load_tokenizer(model_dir)->name(), "sentencepiece-unigram");
  EXPECT_TRUE(load_tokenizer(model_dir)->add_bos);
  std::ofstream(model_dir + "/tokenizer_config.json") << R"({"add_bos_token": false})";
  const auto no_bos = load_tokenizer(model_dir);
  EXPECT_FALSE(no_bos->add_bos);
  EXPECT_EQ(no_bos->encode_sequence("hello"), no_bos->encode("hello"));
}

TEST_F(SentencePieceReference, UnsupportedModelsAreUserErrorsNamingTheFileAndField) {
  ASSERT_TRUE(have_spm());
  const std::string model = train("char", "--model_type=char");
  EXPECT_THAT([&] { SentencePieceTokenizer::load_file(model); },
              ThrowsMessage<UserError>(
                  AllOf(HasSubstr(model), HasSubstr("trainer_spec.model_type 4 (char)"))));
  const std::string junk = dir_ + "/junk.model";
  std::ofstream(junk) << "this is not a protobuf \xFF\xFF\xFF";
  EXPECT_THAT([&] { SentencePieceTokenizer::load_file(junk); },
              ThrowsMessage<UserError>(HasSubstr("not a SentencePiece model")));
  EXPECT_THAT([&] { SentencePieceTokenizer::load_file(dir_ + "/missing.model"); },
              ThrowsMessage<UserError>(HasSubstr("missing.model")));
  const auto tok = SentencePieceTokenizer::load_file(train("range", "--model_type=bpe"));
  EXPECT_THAT([&] { tok->decode({tok->vocab_size()}, true); },
              ThrowsMessage<UserError>(HasSubstr("outside the vocabulary")));
}

}  // namespace
}  // namespace ptrain
