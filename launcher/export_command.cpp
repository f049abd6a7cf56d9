#include "launcher/export_command.h"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <memory>

#include "core/config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "launcher/checkpoint_tools.h"
#include "launcher/model_tools.h"
#include "model/llama_weights.h"

namespace ptrain {
namespace {

namespace fs = std::filesystem;

bool same_directory(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::exists(a) && fs::exists(b) && fs::equivalent(a, b, ec);
}

// `load`'s model with its adapter merged, written to --out.
int write_merged_model(const ExportOptions& o, const ModelLoadOptions& load) {
  PTRAIN_CHECK(!same_directory(o.out, load.dir) && !same_directory(o.out, load.adapter),
               "export: --out '{}' is the model or adapter directory; choose a new directory",
               o.out);
  OutputDirectory out(o.out, o.force, "export: --out");
  LoadedModel loaded = load_model(load);
  const at::ScalarType dtype = load.dtype == "fp32" ? at::kFloat : at::kBFloat16;
  save_llama_model(loaded.model, o.out, dtype, o.max_shard_bytes, /*merge_lora=*/true);
  copy_model_companions(load.dir, o.out);
  out.keep();
  std::cout << "wrote merged model " << o.out << " (" << (dtype == at::kFloat ? "fp32" : "bf16")
            << (load.load_in_4bit ? ", merged into the NF4-dequantized base" : "") << ")\n";
  return 0;
}

// --checkpoint DIR: verified first; a LoRA checkpoint's adapter/ as it is (peft) or merged onto
// its base, a full-training checkpoint's model from its fp32 masters (merged).
int export_checkpoint(const ExportOptions& o) {
  PTRAIN_CHECK(o.model.adapter.empty(),
               "export: --adapter and --checkpoint exclude each other (a LoRA checkpoint's adapter "
               "is its adapter/ directory)");
  PTRAIN_CHECK(!same_directory(o.out, o.checkpoint) &&
                   !same_directory(o.out, (fs::path(o.checkpoint) / "adapter").string()),
               "export: --out '{}' is inside the checkpoint; choose a new directory", o.out);
  const CheckpointManifest manifest = open_verified_checkpoint(o.checkpoint);
  const std::string mode = checkpoint_mode(manifest);
  if (o.format == "peft") {
    PTRAIN_CHECK(mode != "full",
                 "export: checkpoint '{}' is of full training (mode full): it holds no adapter to "
                 "write as PEFT; --format merged writes its model",
                 o.checkpoint);
    OutputDirectory out(o.out, o.force, "export: --out");
    export_checkpoint_adapter(manifest, o.out);
    out.keep();
    std::cout << "wrote PEFT adapter " << o.out << " (" << mode << " checkpoint, step "
              << manifest.step << ")\n";
    return 0;
  }
  const std::string base = checkpoint_base_model(manifest, o.model.model);
  // The dtype it trained in (bf16: the masters rounded as every compute shard is), unless --dtype.
  const bool bf16 = o.dtype_given
                        ? o.model.dtype == "bf16"
                        : checkpoint_config_value(manifest, "bf16").value_or("true") == "true";
  if (mode != "full") {
    ModelLoadOptions load;
    load.dir = base;
    load.dtype = bf16 ? "bf16" : "fp32";
    load.load_in_4bit = o.model.load_in_4bit.value_or(
        checkpoint_config_value(manifest, "load_in_4bit").value_or("false") == "true");
    load.adapter = (fs::path(o.checkpoint) / "adapter").string();
    return write_merged_model(o, load);
  }
  PTRAIN_CHECK(!o.model.load_in_4bit.value_or(false),
               "export: --load-in-4bit: checkpoint '{}' is of full training; its model is not "
               "quantized",
               o.checkpoint);
  PTRAIN_CHECK(!same_directory(o.out, base),
               "export: --out '{}' is the base model directory; choose a new directory", o.out);
  OutputDirectory out(o.out, o.force, "export: --out");
  export_full_checkpoint(manifest, base, o.out, bf16 ? at::kBFloat16 : at::kFloat,
                         o.max_shard_bytes);
  out.keep();
  std::cout << "wrote model " << o.out << " (full checkpoint, step " << manifest.step << ", "
            << (bf16 ? "bf16" : "fp32") << ")\n";
  return 0;
}

}  // namespace

void register_export_command(CommandLine& cli) {
  auto options = std::make_shared<ExportOptions>();
  auto dtype_option = std::make_shared<CLI::Option*>(nullptr);
  CLI::App* command = cli.add_command(
      "export",
      "Write a LoRA adapter (or a checkpoint's) as a PEFT directory, or a merged or trained model",
      [options, dtype_option, &cli] {
        options->dtype_given = (*dtype_option)->count() > 0;
        const ConfigOptions& config = cli.config();
        return run_export_command(*options, load_config(config.path, config.all_overrides()));
      });
  add_model_options(command, options->model);
  *dtype_option = command->get_option("--dtype");
  add_path_option(command, "--checkpoint", options->checkpoint,
                  "Committed checkpoint directory (output_dir/checkpoints/step-S) to export",
                  PathKind::kDirectory);
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
  if (!o.checkpoint.empty()) return export_checkpoint(o);
  PTRAIN_CHECK(!o.model.adapter.empty(),
               "export: --adapter DIR (the LoRA adapter) or --checkpoint DIR is required");
  const ModelLoadOptions load = model_load_options(o.model, config);
  if (o.format == "merged") return write_merged_model(o, load);
  PTRAIN_CHECK(!same_directory(o.out, load.dir) && !same_directory(o.out, load.adapter),
               "export: --out '{}' is the model or adapter directory; choose a new directory",
               o.out);
  OutputDirectory out(o.out, o.force, "export: --out");
  LoadedModel loaded = load_model(load);
  save_peft_adapter(loaded.model, loaded.adapter, load.dir, o.out);
  out.keep();
  std::cout << "wrote PEFT adapter " << o.out << "\n";
  return 0;
}

}  // namespace ptrain
