#include "launcher/export_command.h"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <memory>

#include "core/config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "launcher/model_tools.h"
#include "model/llama_weights.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

bool same_directory(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::exists(a) && fs::exists(b) && fs::equivalent(a, b, ec);
}

}  // namespace

void register_export_command(CommandLine& cli) {
  auto options = std::make_shared<ExportOptions>();
  CLI::App* command = cli.add_command(
      "export", "Write a model's LoRA adapter as a PEFT directory, or merge it into the weights",
      [options, &cli] {
        const ConfigOptions& config = cli.config();
        return run_export_command(*options, load_config(config.path, config.all_overrides()));
      });
  add_model_options(command, options->model);
  cli.add_config_options(command, ConfigArgument::kOptional);
  command->add_option("--format", options->format, "peft or merged")->required();
  add_path_option(command, "--out", options->out, "Output directory", PathKind::kDirectory)
      ->required();
  command->add_option("--max-shard-bytes", options->max_shard_bytes,
                      "merged: shard the weights past this many bytes per file");
  command->add_flag("--force", options->force, "Write into a non-empty directory");
}

int run_export_command(const ExportOptions& o, const ResolvedConfig& config) {
  PTRAIN_CHECK(o.format == "peft" || o.format == "merged",
               "--format: expected peft or merged, got '{}'", o.format);
  PTRAIN_CHECK(!o.model.adapter.empty(), "export: --adapter DIR is required (the LoRA adapter)");
  const ModelLoadOptions load = model_load_options(o.model, config);
  PTRAIN_CHECK(!same_directory(o.out, load.dir) && !same_directory(o.out, load.adapter),
               "export: --out '{}' is the model or adapter directory; choose a new directory",
               o.out);
  OutputDirectory out(o.out, o.force, "export: --out");
  LoadedModel loaded = load_model(load);
  if (o.format == "peft") {
    save_peft_adapter(loaded.model, loaded.adapter, load.dir, o.out);
    out.keep();
    std::cout << "wrote PEFT adapter " << o.out << "\n";
    return 0;
  }
  const at::ScalarType dtype = load.dtype == "fp32" ? at::kFloat : at::kBFloat16;
  save_llama_model(loaded.model, o.out, dtype, o.max_shard_bytes, /*merge_lora=*/true);
  copy_model_companions(load.dir, o.out);
  out.keep();
  std::cout << "wrote merged model " << o.out << " (" << (dtype == at::kFloat ? "fp32" : "bf16")
            << (load.load_in_4bit ? ", merged into the NF4-dequantized base" : "") << ")\n";
  return 0;
}

}  // namespace ptrain
