#include "launcher/preprocess_command.h"

#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"
#include "core/logging.h"
#include "launcher/data_preparation.h"

namespace fs = std::filesystem;

namespace ptrain {
namespace {

// Sample i as text, the learned runs highlighted: green on a terminal, else between « and ».
std::string render_debug_sample(const PreparedDataset& data, const Tokenizer& tokenizer, int64_t i,
                                bool color) {
  const SampleView sample = data.sample(i);
  const auto [file, line] = data.origin(i);
  int64_t learned = 0;
  for (int64_t t = 0; t < sample.length; ++t) learned += sample.learned(t) ? 1 : 0;
  std::string text = fmt::format("--- sample {} ({}:{}, {}, {} learned)\n", i,
                                 data.data_files().at(static_cast<size_t>(file)).path, line,
                                 counted(sample.length, "token"), learned);
  for (int64_t t = 0; t < sample.length;) {
    const bool run_learned = sample.learned(t);
    std::vector<int64_t> run;
    for (; t < sample.length && sample.learned(t) == run_learned; ++t)
      run.push_back(sample.token(t));
    const std::string piece = tokenizer.decode(run, /*skip_special=*/false);
    if (!run_learned) {
      text += piece;
    } else if (color) {
      text += "\x1b[32m" + piece + "\x1b[0m";
    } else {
      text += "\u00ab" + piece + "\u00bb";
    }
  }
  return text + "\n";
}

nlohmann::json summary_json(const PreparedDataset& data, const PreparedData& prepared) {
  nlohmann::json out = summary_to_json(data.summary());
  out["dir"] = data.dir();
  out["fingerprint"] = data.fingerprint();
  out["built"] = prepared.built;
  out["seconds"] = prepared.seconds;
  out["sequence_len"] = data.sequence_len();
  out["sample_packing"] = data.sample_packing();
  return out;
}

}  // namespace

void register_preprocess_command(CommandLine& cli) {
  auto options = std::make_shared<PreprocessOptions>();
  CLI::App* preprocess = cli.add_job_command(
      "preprocess", "Tokenize, template and pack the datasets into the prepared-data cache",
      ConfigArgument::kRequired, JobRecord::kLogs,
      [options](RankSession& session, const ResolvedConfig& config) {
        return run_preprocess_command(session, config, *options);
      });
  preprocess
      ->add_option("--debug", options->debug_samples,
                   "Print this many samples with the learned tokens highlighted")
      ->check(at_least(0));
  preprocess
      ->add_option("--color", options->color,
                   "Highlight learned tokens in color: auto, always or never")
      ->check(one_of({"auto", "always", "never"}));
  preprocess->add_flag("--json", options->json, "The summary as one JSON object");
}

int run_preprocess_command(RankSession& session, const ResolvedConfig& config,
                           const PreprocessOptions& options) {
  PTRAIN_CHECK(options.debug_samples >= 0, "--debug: expected >= 0, got {}", options.debug_samples);
  PTRAIN_CHECK(options.color == "auto" || options.color == "always" || options.color == "never",
               "--color: expected auto, always or never, got '{}'", options.color);
  RankContext& ctx = session.context();
  PreparedData prepared = prepare_data(config.job, ctx, session.threads());
  if (ctx.rank != 0) return 0;
  const PreparedDataset& data = *prepared.dataset;
  if (options.json) {
    std::cout << summary_json(data, prepared).dump() << std::endl;
  } else {
    std::cout << prepared_summary_text(data)
              << fmt::format("  {} in {:.2f} s\n", prepared.built ? "built" : "reused (verified)",
                             prepared.seconds);
  }
  if (options.debug_samples > 0) {
    // A launcher gives its ranks a pseudo-terminal even when its own output is piped, so only a
    // process started directly trusts isatty().
    const bool color = options.color == "always" ||
                       (options.color == "auto" && session.info().launcher == "singleton" &&
                        ::isatty(STDOUT_FILENO));
    const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(config.job.base_model);
    const int64_t n = std::min(options.debug_samples, data.samples());
    for (int64_t i = 0; i < n; ++i) std::cout << render_debug_sample(data, *tokenizer, i, color);
  }
  std::cout.flush();
  return 0;
}

bool is_prepared_dataset(const std::string& dir) {
  const fs::path meta = fs::path(dir) / "meta.json";
  if (!fs::is_regular_file(meta)) return false;
  try {
    return read_json_file(meta.string()).value("format", "") == "ptrain-prepared-data";
  } catch (const std::exception&) {
    return false;
  }
}

std::string describe_prepared_dataset(const std::string& dir) {
  PreparedDataset data(dir);
  return prepared_summary_text(data) + fmt::format("  checksums: OK ({}, {})\n",
                                                   counted(data.samples(), "sample"),
                                                   counted(data.train_rows(), "training row"));
}

}  // namespace ptrain
