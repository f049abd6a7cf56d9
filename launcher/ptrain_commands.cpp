#include "launcher/ptrain_commands.h"

#include <CLI/CLI.hpp>

#include "core/config.h"
#include "core/error.h"
#include "launcher/model_loader.h"
#include "launcher/rank_session.h"

namespace ptrain {

std::vector<std::string> ConfigOptions::all_overrides() const {
  std::vector<std::string> out = overrides;
  if (!log_level.empty()) out.push_back("logging.level=" + log_level);
  return out;
}

CommandLine::CommandLine(const std::string& description)
    : app_(std::make_unique<CLI::App>(description)) {
  app_->require_subcommand(0, 1);
  top_level_options_ =
      declare_config_options(app_.get(), ConfigArgument::kOptional,
                             "Job config (YAML) of the default command, which runs when no "
                             "subcommand is named");
}

CommandLine::~CommandLine() = default;

CLI::App* CommandLine::add_command(const std::string& name, const std::string& description,
                                   Run run) {
  return add(name, description, std::move(run), /*job=*/false);
}

CLI::App* CommandLine::add(const std::string& name, const std::string& description, Run run,
                           bool job) {
  CLI::App* command = app_->add_subcommand(name, description);
  commands_.push_back({command, std::move(run), job});
  return command;
}

CLI::App* CommandLine::add_job_command(const std::string& name, const std::string& description,
                                       ConfigArgument config, JobRun run) {
  auto run_on_rank = [this, run = std::move(run)] {
    const ResolvedConfig resolved = load_config(config_.path, config_.all_overrides());
    RankSession session(&argc_, &argv_, resolved);
    return run(session, resolved);
  };
  CLI::App* command = add(name, description, std::move(run_on_rank), /*job=*/true);
  add_config_options(command, config);
  return command;
}

void CommandLine::add_config_options(CLI::App* command, ConfigArgument config) {
  declare_config_options(command, config,
                         config == ConfigArgument::kOptional
                             ? "Job config (YAML); embedded defaults if omitted"
                             : "Job config (YAML)");
}

std::vector<CLI::Option*> CommandLine::declare_config_options(CLI::App* command,
                                                              ConfigArgument config,
                                                              const std::string& config_help) {
  std::vector<CLI::Option*> options;
  switch (config) {
    case ConfigArgument::kOptional:
      options.push_back(command->add_option("--config,-c", config_.path, config_help));
      break;
    case ConfigArgument::kRequired:
      options.push_back(command->add_option("--config,-c", config_.path, config_help)->required());
      break;
    case ConfigArgument::kPositional:
      options.push_back(command->add_option("config", config_.path, config_help)->required());
      break;
  }
  options.push_back(command->add_option("--set", config_.overrides,
                                        "Override a config key: --set key=value (repeatable)"));
  options.push_back(
      command->add_option("--log-level", config_.log_level, "Same as --set logging.level=LEVEL"));
  return options;
}

void CommandLine::set_default_command(const std::string& name) {
  size_t i = 0;
  while (i < commands_.size() && commands_[i].app->get_name() != name) ++i;
  PTRAIN_ASSERT(i < commands_.size() && commands_[i].job,
                "the default command '{}' must be a registered job command", name);
  default_command_ = i;
}

bool CommandLine::top_level_config_given() const {
  for (const CLI::Option* option : top_level_options_)
    if (option->count() > 0) return true;
  return false;
}

const CommandLine::Command& CommandLine::chosen_command() const {
  for (const Command& command : commands_) {
    if (!command.app->parsed()) continue;
    if (top_level_config_given())
      throw CLI::ValidationError(
          "--config, --set and --log-level go after the subcommand: ptrain " +
              command.app->get_name() + " --config FILE ...",
          CLI::ExitCodes::ValidationError);
    return command;
  }
  if (top_level_options_.front()->count() == 0) throw CLI::RequiredError("A subcommand");
  if (!default_command_)
    throw CLI::RequiredError(
        "A subcommand is required: `ptrain --config FILE` alone runs `train`, which this build "
        "does not have yet",
        CLI::ExitCodes::RequiredError);
  return commands_[*default_command_];
}

int CommandLine::run(int argc, char** argv) {
  argc_ = argc;
  argv_ = argv;
  const Command* command = nullptr;
  try {
    app_->parse(argc, argv);
    command = &chosen_command();
  } catch (const CLI::ParseError& e) {
    const int code = app_->exit(e);
    return code == 0 ? 0 : static_cast<int>(ExitCode::kBadInput);
  }
  return run_guarded(command->run);
}

void add_model_options(CLI::App* command, ModelLoadOptions& options) {
  command->add_option("--model", options.dir, "Model directory (Hugging Face layout)")->required();
  command->add_option("--dtype", options.dtype, "Compute dtype: bf16 or fp32");
  command->add_flag("--load-in-4bit", options.load_in_4bit,
                    "Quantize the decoder projections to NF4 while loading (QLoRA base)");
  command->add_option("--adapter", options.adapter, "PEFT LoRA adapter directory to apply");
}

}  // namespace ptrain
