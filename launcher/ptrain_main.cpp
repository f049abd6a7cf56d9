// ptrain: the per-rank entry point. Subcommands exist only once they are real (ARCHITECTURE.md).
#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>

#include "core/config.h"
#include "core/config_schema.h"
#include "core/error.h"
#include "launcher/env_command.h"
#include "launcher/eval_command.h"
#include "launcher/export_command.h"
#include "launcher/generate_command.h"
#include "launcher/model_tools.h"
#include "launcher/preprocess_command.h"
#include "launcher/rank_session.h"

namespace {

using namespace ptrain;

int validate_config(const std::string& path, const std::vector<std::string>& overrides,
                    bool print) {
  ResolvedConfig config = load_config(path, overrides);
  for (const auto& warning : config.warnings) std::cerr << "warning: " << warning << "\n";
  if (print) std::cout << config.resolved_yaml;
  std::cout << path << ": OK (config hash " << config.hash << ")\n";
  return 0;
}

int config_docs(const std::string& out) {
  std::string text = ConfigSchema::instance().markdown();
  if (out.empty() || out == "-") {
    std::cout << text;
  } else {
    std::ofstream file(out, std::ios::binary);
    PTRAIN_CHECK(file.good(), "cannot write '{}'", out);
    file << text;
  }
  return 0;
}

// --model, --dtype, --load-in-4bit and --adapter, shared by the commands that load a model.
void add_model_options(CLI::App* command, ModelLoadOptions& options) {
  command->add_option("--model", options.dir, "Model directory (Hugging Face layout)")->required();
  command->add_option("--dtype", options.dtype, "Compute dtype: bf16 or fp32");
  command->add_flag("--load-in-4bit", options.load_in_4bit,
                    "Quantize the decoder projections to NF4 while loading (QLoRA base)");
  command->add_option("--adapter", options.adapter, "PEFT LoRA adapter directory to apply");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ptrain: distributed fine-tuning and training of Llama-family models"};
  app.require_subcommand(1);

  std::string config_path;
  std::vector<std::string> overrides;
  std::string log_level;

  auto* env = app.add_subcommand(
      "env", "Print rank, local rank, world, host, backend and threads as each rank sees them");
  env->add_option("--config,-c", config_path, "Job config (YAML); embedded defaults if omitted");
  env->add_option("--set", overrides, "Override a config key: --set key=value (repeatable)");
  env->add_option("--log-level", log_level, "Same as --set logging.level=LEVEL");

  bool print_resolved = false;
  auto* validate = app.add_subcommand("validate-config", "Check a config file without running");
  validate->add_option("config", config_path, "Job config (YAML)")->required();
  validate->add_option("--set", overrides, "Override a config key: --set key=value (repeatable)");
  validate->add_flag("--print", print_resolved, "Print the resolved config (every key)");

  InitModelOptions init;
  auto* init_model =
      app.add_subcommand("init-model", "Write a randomly initialised Hugging Face Llama directory");
  init_model->add_option("--preset", init.preset, "tiny, 160m or 1b (TinyLlama-1.1B shapes)")
      ->required();
  init_model->add_option("--out", init.out_dir, "Output directory")->required();
  init_model->add_option("--seed", init.seed, "Initialisation seed");
  init_model->add_option("--dtype", init.dtype, "Weight dtype: bf16 or fp32");
  init_model->add_option("--max-shard-bytes", init.max_shard_bytes,
                         "Shard the weights past this many bytes per file");

  std::string inspect_dir;
  auto* inspect = app.add_subcommand(
      "inspect", "Describe and validate a model directory or a prepared dataset");
  inspect->add_option("dir", inspect_dir, "Model or prepared-dataset directory")->required();

  PreprocessOptions preprocess_options;
  auto* preprocess = app.add_subcommand(
      "preprocess", "Tokenize, template and pack the datasets into the prepared-data cache");
  preprocess->add_option("--config,-c", config_path, "Job config (YAML)")->required();
  preprocess->add_option("--set", overrides, "Override a config key: --set key=value (repeatable)");
  preprocess->add_option("--debug", preprocess_options.debug_samples,
                         "Print this many samples with the learned tokens highlighted");
  preprocess->add_option("--color", preprocess_options.color,
                         "Highlight learned tokens in color: auto, always or never");
  preprocess->add_flag("--json", preprocess_options.json, "The summary as one JSON object");

  ModelLoadOptions eval_model;
  std::string eval_data;
  int64_t eval_seq = 2048, eval_rows = 1;
  auto* eval = app.add_subcommand(
      "eval",
      "Mean loss and perplexity of a model on pre-tokenized JSONL or the config's validation "
      "split, over all ranks");
  add_model_options(eval, eval_model);
  eval->add_option("--data", eval_data,
                   "JSONL, one {\"input_ids\": [...]} per line; omitted: the validation split of "
                   "the config's datasets (val_set_size)");
  eval->add_option("--seq-len", eval_seq, "Tokens per packed row (longer samples are windowed)");
  eval->add_option("--rows", eval_rows, "Packed rows per forward pass");
  eval->add_option("--config,-c", config_path, "Job config (logging, output_dir, comm)");
  eval->add_option("--set", overrides, "Override a config key: --set key=value (repeatable)");

  GenerateCommandOptions gen;
  auto* generate = app.add_subcommand(
      "generate", "Continue prompts with a model (KV cache; greedy or sampled), in one process");
  add_model_options(generate, gen.model);
  generate->add_option("--prompt", gen.prompts, "Prompt text (repeatable)");
  generate->add_option("--prompt-ids", gen.prompt_ids,
                       "Prompt as comma-separated token ids (repeatable)");
  generate->add_option("--max-new-tokens", gen.max_new_tokens, "Tokens to generate at most");
  generate->add_option("--temperature", gen.temperature,
                       "0: greedy; > 0: sample (default: generation_config.json, else greedy)");
  generate->add_option("--top-k", gen.top_k, "Sample among the k most likely tokens (0: off)");
  generate->add_option("--top-p", gen.top_p, "Nucleus sampling mass in (0, 1]");
  generate->add_option("--seed", gen.seed, "Sampling seed");
  generate->add_flag("--json", gen.json, "One JSON object per prompt (ids, text, timings)");

  std::string tokenize_model;
  std::vector<std::string> tokenize_texts;
  bool tokenize_json = false;
  auto* tokenize = app.add_subcommand(
      "tokenize", "Token ids (and pieces) the model's tokenizer gives each text");
  tokenize->add_option("--model", tokenize_model, "Model directory")->required();
  tokenize->add_option("text", tokenize_texts, "Texts to tokenize")->required();
  tokenize->add_flag("--json", tokenize_json, "One JSON array of ids per text");

  ExportOptions export_options;
  auto* export_cmd = app.add_subcommand(
      "export", "Write a model's LoRA adapter as a PEFT directory, or merge it into the weights");
  add_model_options(export_cmd, export_options.model);
  export_cmd->add_option("--format", export_options.format, "peft or merged")->required();
  export_cmd->add_option("--out", export_options.out, "Output directory")->required();
  export_cmd->add_option("--max-shard-bytes", export_options.max_shard_bytes,
                         "merged: shard the weights past this many bytes per file");
  export_cmd->add_flag("--force", export_options.force, "Write into a non-empty directory");

  std::string docs_out;
  auto* docs = app.add_subcommand("config-docs", "Write the config reference (docs/config.md)");
  docs->add_option("--out,-o", docs_out, "Output file; stdout if omitted");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(ExitCode::kBadInput);
  }
  if (!log_level.empty()) overrides.push_back("logging.level=" + log_level);

  return run_guarded([&]() -> int {
    if (*validate) return validate_config(config_path, overrides, print_resolved);
    if (*docs) return config_docs(docs_out);
    if (*init_model) {
      int64_t params = write_random_llama_model(init);
      std::cout << "wrote " << init.out_dir << ": preset " << init.preset << ", " << params
                << " parameters, " << init.dtype << "\n";
      return 0;
    }
    if (*generate) return run_generate_command(gen);
    if (*export_cmd) return run_export_command(export_options);
    if (*tokenize) return run_tokenize_command(tokenize_model, tokenize_texts, tokenize_json);
    if (*inspect) {
      std::cout << (is_prepared_dataset(inspect_dir) ? describe_prepared_dataset(inspect_dir)
                                                     : inspect_llama_model(inspect_dir));
      return 0;
    }
    ResolvedConfig config = load_config(config_path, overrides);
    RankSession session(&argc, &argv, config);
    if (*env) return run_env_command(session);
    if (*eval) return run_eval_command(session, config, eval_model, eval_data, eval_seq, eval_rows);
    if (*preprocess) return run_preprocess_command(session, config, preprocess_options);
    return 0;
  });
}
