// Compares ptrain's tokenizers with the ids that reference implementations gave real vocabularies
// (recorded by reference/make_references.mjs; run by reference/run.sh).
//
//   ptrain_tokenizer_reference_check [--throughput TEXT_FILE] MODEL_DIR...
//
// Each MODEL_DIR holds tokenizer.json, tokenizer_config.json and expected.jsonl. For every line it
// checks encode(text) against "ids" (tokenizers.js) and "pkg_ids" (the package the vocabulary came
// from) and decode(ids, skip_special=false) against "decoded". Where the directory also holds a
// chat.jsonl, each conversation is rendered with the chat template that tokenizer_default detects
// in tokenizer_config.json: the rendered text against "text" (@huggingface/jinja), the sample's ids
// against "ids" (tokenizers.js on that text), and a UserError where the template raises ("error").
// Prints each mismatch, a summary per directory and "N passed, N failed"; exits 1 on any failure.
// --throughput also encodes TEXT_FILE (paragraph by paragraph, one thread) with each tokenizer and
// prints MB/s.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/prompt.h"
#include "tokenizer/tokenizer.h"

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

ptrain::Role role_of(const std::string& role) {
  if (role == "system") return ptrain::Role::kSystem;
  if (role == "user") return ptrain::Role::kUser;
  if (role == "assistant") return ptrain::Role::kAssistant;
  throw std::runtime_error("chat.jsonl: unknown role " + role);
}

// The ids of the pieces encoded one by one (markers by id): what a segment-wise tokenizer would
// give, printed for comparison only.
Ids piecewise_ids(const std::vector<ptrain::ChatPiece>& pieces, const Tokenizer& tok) {
  Ids ids;
  for (const ptrain::ChatPiece& piece : pieces) {
    const Ids part = piece.id ? Ids{*piece.id} : tok.encode(piece.text);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

void check_chat(const std::string& dir, const Tokenizer& tok, Tally& tally) {
  std::ifstream in(dir + "/chat.jsonl");
  if (!in) return;
  const std::string name = base_name(dir);
  // Counts a check; prints the failure's description (made only then).
  auto record = [&](bool ok, const auto& describe) {
    ok ? ++tally.passed : ++tally.failed;
    if (!ok) fmt::print("FAIL {} chat: {}\n", name, describe());
    return ok;
  };
  auto fail = [&](const std::string& what) { record(false, [&] { return what; }); };
  ptrain::ChatFormat format;
  try {
    format = ptrain::resolve_chat_format("tokenizer_default", tok);
  } catch (const ptrain::UserError& e) {
    return fail(fmt::format("tokenizer_default: {}", e.what()));
  }
  ptrain::RenderOptions options;
  options.chat_template = "tokenizer_default";
  int line_no = 0, rendered = 0, text_ok = 0, ids_ok = 0, piecewise_ok = 0, raised = 0,
      raised_ok = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    ptrain::DatasetRow row;
    row.kind = ptrain::DatasetRow::Kind::kConversation;
    row.line = line_no;
    for (const nlohmann::json& m : j["messages"])
      row.turns.push_back({role_of(m["role"]), m["content"]});
    const std::string where = j["messages"].dump();
    if (j.contains("error")) {
      ++raised;
      try {
        ptrain::render_row(row, "chat.jsonl", tok, options);
        fail(where + ": rendered, but the template raises: " + j["error"].get<std::string>());
      } catch (const ptrain::UserError& e) {
        const std::string message = e.what();
        raised_ok += record(message.find("alternate user/assistant") != std::string::npos,
                            [&] { return where + ": another error: " + message; });
      }
      continue;
    }
    ++rendered;
    const Ids want = j["ids"];
    const std::string want_text = j["text"];
    try {
      const std::vector<ptrain::ChatPiece> pieces = ptrain::render_chat(row.turns, format, tok, "");
      const std::string text = ptrain::chat_text(pieces);
      text_ok += record(text == want_text, [&] {
        return fmt::format("{}: text differs from @huggingface/jinja: want {} got {}", where,
                           nlohmann::json(want_text).dump(), nlohmann::json(text).dump());
      });
      const Ids got = ptrain::render_row(row, "chat.jsonl", tok, options).input_ids;
      ids_ok += record(got == want, [&] {
        return fmt::format("{}: ids differ from tokenizers.js: want {} got {}", where, show(want),
                           show(got));
      });
      piecewise_ok += piecewise_ids(pieces, tok) == want;
    } catch (const std::exception& e) {
      fail(where + ": threw: " + e.what());
    }
  }
  fmt::print(
      "{} chat ({}): {} conversations; text == @huggingface/jinja: {}/{}; ids == tokenizers.js: "
      "{}/{}; template errors raised: {}/{} (for comparison, encoding each piece alone would "
      "give tokenizers.js's ids on {}/{})\n",
      name, ptrain::chat_format_name(format), rendered + raised, text_ok, rendered, ids_ok,
      rendered, raised_ok, raised, piecewise_ok, rendered);
}

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
  check_chat(dir, *tok, tally);
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
