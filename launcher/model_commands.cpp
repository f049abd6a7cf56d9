#include "launcher/model_commands.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

#include "core/error.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "launcher/checkpoint_tools.h"
#include "launcher/model_tools.h"
#include "launcher/preprocess_command.h"
#include "tokenizer/tokenizer.h"

namespace ptrain {

void register_init_model_command(CommandLine& cli) {
  auto options = std::make_shared<InitModelOptions>();
  auto force = std::make_shared<bool>(false);
  CLI::App* init_model = cli.add_command(
      "init-model", "Write a randomly initialised Hugging Face Llama directory", [options, force] {
        // A new or empty directory: an existing model or dataset is not overwritten silently.
        OutputDirectory out(options->out_dir, *force, "init-model: --out");
        const int64_t params = write_random_llama_model(*options);
        out.keep();
        std::cout << "wrote " << options->out_dir << ": preset " << options->preset << ", "
                  << params << " parameters, " << options->dtype << "\n";
        return 0;
      });
  init_model->add_option("--preset", options->preset, "tiny, 160m or 1b (TinyLlama-1.1B shapes)")
      ->required();
  add_path_option(init_model, "--out", options->out_dir, "Output directory", PathKind::kDirectory)
      ->required();
  init_model->add_flag("--force", *force, "Write into a non-empty directory");
  init_model->add_option("--seed", options->seed, "Initialisation seed");
  init_model->add_option("--dtype", options->dtype, "Weight dtype: bf16 or fp32");
  init_model->add_option("--max-shard-bytes", options->max_shard_bytes,
                         "Shard the weights past this many bytes per file");
}

void register_inspect_command(CommandLine& cli) {
  auto dir = std::make_shared<std::string>();
  CLI::App* inspect = cli.add_command(
      "inspect",
      "Describe and validate a model directory, a prepared dataset or a checkpoint (every "
      "checksum)",
      [dir] {
        if (is_prepared_dataset(*dir)) {
          std::cout << describe_prepared_dataset(*dir);
        } else if (is_checkpoint_dir(*dir)) {
          // The whole summary first, each bad file marked in it; then the error (exit 2).
          const CheckpointManifest manifest = read_manifest(*dir);
          std::vector<std::string> problems;
          std::cout << describe_checkpoint(manifest, problems) << std::flush;
          if (!problems.empty())
            throw CorruptData(fmt::format(
                "checkpoint '{}' is not valid: {}{}", *dir, problems.front(),
                problems.size() > 1 ? fmt::format(" (and {} more bad file(s))", problems.size() - 1)
                                    : ""));
        } else if (is_checkpoint_root(*dir)) {
          std::cout << describe_checkpoint_root(*dir);
        } else {
          std::cout << inspect_llama_model(*dir);
        }
        return 0;
      });
  add_path_option(inspect, "dir", *dir,
                  "Model, prepared-dataset or checkpoint directory (or output_dir/checkpoints)",
                  PathKind::kDirectory)
      ->required();
}

void register_tokenize_command(CommandLine& cli) {
  struct TokenizeOptions {
    std::string model;
    std::vector<std::string> texts;
    bool json = false;
  };
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* tokenize = cli.add_command(
      "tokenize", "Token ids (and pieces) the model's tokenizer gives each text",
      [options] { return run_tokenize_command(options->model, options->texts, options->json); });
  add_path_option(tokenize, "--model", options->model, "Model directory", PathKind::kDirectory)
      ->required();
  tokenize->add_option("text", options->texts, "Texts to tokenize")->required();
  tokenize->add_flag("--json", options->json, "One JSON array of ids per text");
}

int run_tokenize_command(const std::string& model_dir, const std::vector<std::string>& texts,
                         bool json) {
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(model_dir);
  for (const auto& text : texts) {
    std::vector<int64_t> ids = tokenizer->encode_sequence(text);
    if (json) {
      std::cout << nlohmann::json(ids).dump() << "\n";
      continue;
    }
    std::cout << counted(static_cast<int64_t>(ids.size()), "token") << ":";
    for (int64_t id : ids) std::cout << fmt::format(" {}({})", id, tokenizer->piece(id));
    std::cout << "\n";
  }
  return 0;
}

}  // namespace ptrain
