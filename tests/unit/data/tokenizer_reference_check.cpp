// Compares ptrain's tokenizers with the ids that reference implementations gave real vocabularies
// (recorded by tokenizer_reference/make_references.mjs; run by tokenizer_reference/run.sh).
//
//   ptrain_tokenizer_reference_check [--throughput TEXT_FILE] MODEL_DIR...
//
// Each MODEL_DIR holds tokenizer.json, tokenizer_config.json and expected.jsonl. For every line it
// checks encode(text) against "ids" (tokenizers.js) and "pkg_ids" (the package the vocabulary came
// from) and decode(ids, skip_special=false) against "decoded". Prints each mismatch, a summary per
// directory and "N passed, N failed"; exits 1 on any failure. --throughput also encodes TEXT_FILE
// (paragraph by paragraph, one thread) with each tokenizer and prints MB/s.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/error.h"
#include "trainer/data/tokenizer.h"

namespace {

using ptrain::Tokenizer;
using Ids = std::vector<int64_t>;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string base_name(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return std::filesystem::path(dir).filename().string();
}

std::string show(const Ids& ids) {
  return fmt::format("[{}]", fmt::join(ids, ","));
}

struct Tally {
  int passed = 0, failed = 0;
};

void check_dir(const std::string& dir, Tally& tally) {
  const std::string name = base_name(dir);
  std::unique_ptr<Tokenizer> tok = ptrain::load_tokenizer(dir);
  std::ifstream in(dir + "/expected.jsonl");
  if (!in) throw std::runtime_error("cannot read " + dir + "/expected.jsonl");
  int texts = 0, ref_ok = 0, pkg_total = 0, pkg_ok = 0, decode_ok = 0;
  std::string pkg;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::string text = j["text"];
    const Ids want = j["ids"];
    ++texts;
    Ids got;
    try {
      got = tok->encode(text);
    } catch (const std::exception& e) {
      fmt::print("FAIL {} {}: encode threw: {}\n", name, nlohmann::json(text).dump(), e.what());
      tally.failed += 3;
      continue;
    }
    auto record = [&](bool ok, const std::string& what, const std::string& detail) {
      if (ok) {
        ++tally.passed;
        return;
      }
      ++tally.failed;
      fmt::print("FAIL {} {}: {} {}\n", name, nlohmann::json(text).dump(), what, detail);
    };
    record(got == want,
           "ids differ from tokenizers.js:", fmt::format("want {} got {}", show(want), show(got)));
    ref_ok += got == want;
    if (j.contains("pkg_ids")) {
      pkg = j["pkg"];
      const Ids pkg_want = j["pkg_ids"];
      ++pkg_total;
      record(got == pkg_want, "ids differ from " + pkg + ":",
             fmt::format("want {} got {}", show(pkg_want), show(got)));
      pkg_ok += got == pkg_want;
    }
    const std::string decoded = tok->decode(want, false);
    const std::string want_text = j["decoded"];
    record(decoded == want_text, "decode differs from tokenizers.js:",
           fmt::format("want {} got {}", nlohmann::json(want_text).dump(),
                       nlohmann::json(decoded).dump(-1, ' ', false,
                                                    nlohmann::json::error_handler_t::replace)));
    decode_ok += decoded == want_text;
  }
  fmt::print(
      "{}: {} texts; encode == tokenizers.js: {}/{}; encode == {}: {}/{}; decode == "
      "tokenizers.js: {}/{}\n",
      name, texts, ref_ok, texts, pkg.empty() ? "package" : pkg, pkg_ok, pkg_total, decode_ok,
      texts);
}

void throughput(const std::string& dir, const std::string& text_file) {
  const std::string text = read_file(text_file);
  std::vector<std::string> paragraphs;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find("\n\n", start);
    end = end == std::string::npos ? text.size() : end + 2;
    paragraphs.push_back(text.substr(start, end - start));
    start = end;
  }
  std::unique_ptr<Tokenizer> tok = ptrain::load_tokenizer(dir);
  size_t tokens = 0;
  for (const auto& p : paragraphs) tokens += tok->encode(p).size();  // warm-up (word cache)
  const auto t0 = std::chrono::steady_clock::now();
  int rounds = 0;
  double seconds = 0;
  while (seconds < 1.0) {
    for (const auto& p : paragraphs) tok->encode(p);
    ++rounds;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double mb = static_cast<double>(text.size()) * rounds / 1e6;
  fmt::print(
      "throughput {}: {:.1f} MB/s ({:.2f} MB x {} rounds, {} tokens per round, {:.2f} "
      "bytes/token, 1 thread)\n",
      base_name(dir), mb / seconds, text.size() / 1e6, rounds, tokens,
      static_cast<double>(text.size()) / tokens);
}

}  // namespace

int main(int argc, char** argv) {
  std::string text_file;
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--throughput" && i + 1 < argc) {
      text_file = argv[++i];
    } else {
      dirs.push_back(arg);
    }
  }
  if (dirs.empty()) {
    std::cerr << "usage: ptrain_tokenizer_reference_check [--throughput TEXT_FILE] MODEL_DIR...\n";
    return 2;
  }
  Tally tally;
  try {
    for (const auto& dir : dirs) {
      if (text_file.empty()) {
        check_dir(dir, tally);
      } else {
        throughput(dir, text_file);
      }
    }
  } catch (const std::exception& e) {
    std::cout << "FAIL: " << e.what() << "\n";
    ++tally.failed;
  }
  if (!text_file.empty() && tally.failed == 0) return 0;
  std::cout << fmt::format("{} passed, {} failed\n", tally.passed, tally.failed);
  return tally.failed == 0 && tally.passed > 0 ? 0 : 1;
}
