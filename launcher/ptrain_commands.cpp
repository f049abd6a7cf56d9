#include "launcher/ptrain_commands.h"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <filesystem>

#include "core/config.h"
#include "core/config_schema.h"
#include "core/error.h"
#include "core/logging.h"
#include "launcher/error_report.h"
#include "launcher/model_loader.h"
#include "launcher/version.h"

namespace ptrain {
namespace {

// "ptrain: error: MESSAGE": the same prefix as the errors run_guarded() prints.
std::string failure_message(const CLI::App* app, const CLI::Error& e) {
  std::string help = "ptrain --help";
  for (const CLI::App* command : app->get_subcommands())  // the one the line named, if any
    help = "ptrain " + command->get_name() + " --help";
  return fmt::format("ptrain: error: {}\nRun '{}' for the options.\n", e.what(), help);
}

// --log-level, checked at parse time.
CLI::Option* add_log_level_option(CLI::App* command, std::string& level,
                                  const std::string& description) {
  auto check = [](std::string& value) -> std::string {
    try {
      parse_log_level(value);
    } catch (const UserError& e) {
      return e.what();
    }
    return "";
  };
  return command->add_option("--log-level", level, description)
      ->check(CLI::Validator(check, ""))
      ->type_name("LEVEL");
}

}  // namespace

std::vector<std::string> ConfigOptions::all_overrides() const {
  std::vector<std::string> out = overrides;
  if (!log_level.empty()) out.push_back("logging.level=" + log_level);
  return out;
}

CommandLine::CommandLine(const std::string& description)
    : app_(std::make_unique<CLI::App>(description)) {
  // Before any option: every option of every subcommand inherits it (--help shows defaults).
  app_->option_defaults()->always_capture_default();
  app_->require_subcommand(0, 1);
  app_->failure_message(failure_message);
  app_->set_version_flag(
      "--version", [] { return version_text(); },
      "Print the version, the git commit and the libraries built with");
  top_level_options_ =
      declare_config_options(app_.get(), ConfigArgument::kOptional,
                             "Job config (YAML) of the default command, which runs when no "
                             "subcommand is named");
  top_level_options_.push_back(
      add_log_level_option(app_.get(), config_.log_level, "Same as --set logging.level=LEVEL"));
}

CommandLine::~CommandLine() = default;

CLI::App* CommandLine::add_command(const std::string& name, const std::string& description,
                                   Run run) {
  return add(name, description, std::move(run), /*job=*/false);
}

CLI::App* CommandLine::add(const std::string& name, const std::string& description, Run run,
                           bool job) {
  CLI::App* command = app_->add_subcommand(name, description);
  add_log_level_option(command, config_.log_level,
                       job ? "Log level: trace, debug, info, warn or error (the same as --set "
                             "logging.level=LEVEL)"
                           : "Log level: trace, debug, info, warn or error");
  commands_.push_back({command, std::move(run), job});
  return command;
}

CLI::App* CommandLine::add_job_command(const std::string& name, const std::string& description,
                                       ConfigArgument config, JobRecord record, JobRun run) {
  auto run_on_rank = [this, record, run = std::move(run)] {
    const ResolvedConfig resolved = load_config(config_.path, config_.all_overrides());
    // Without --config, output_dir is the defaults' ./outputs: no log files land there.
    const JobRecord kept =
        record == JobRecord::kLogs && config_.path.empty() ? JobRecord::kNone : record;
    RankSession session(&argc_, &argv_, resolved, kept);
    try {
      return run(session, resolved);
    } catch (const std::exception& e) {
      session.log_error(e.what());
      throw;
    }
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
  const std::string name = config == ConfigArgument::kPositional ? "config" : "--config,-c";
  CLI::Option* file = add_path_option(command, name, config_.path, config_help, PathKind::kFile);
  if (config != ConfigArgument::kOptional) file->required();
  options.push_back(file);
  options.push_back(command->add_option("--set", config_.overrides,
                                        "Override a config key: --set key=value (repeatable)"));
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

std::string CommandLine::command_list() const {
  std::string list;
  for (const Command& command : commands_)
    list += (list.empty() ? "" : ", ") + command.app->get_name();
  return list;
}

std::string CommandLine::unknown_command_message(const std::string& word) const {
  std::vector<std::string> names;
  for (const Command& command : commands_) names.push_back(command.app->get_name());
  const std::string nearest = nearest_name(word, names);
  return fmt::format("unknown command '{}'{}; the commands are: {}", word,
                     nearest.empty() ? "" : "; did you mean '" + nearest + "'?", command_list());
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
  if (top_level_options_.front()->count() == 0)
    throw CLI::RequiredError(
        "A command is required: ptrain COMMAND [OPTIONS]; the commands are: " + command_list(),
        CLI::ExitCodes::RequiredError);
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
    try {
      app_->parse(argc, argv);
    } catch (const CLI::ExtrasError&) {
      // A word where the command belongs ("ptrain trian"): say that the command is unknown.
      const std::vector<std::string> rest = app_->remaining();
      bool named = false;
      for (const Command& c : commands_) named = named || c.app->parsed();
      if (!named && !rest.empty() && rest.front().rfind('-', 0) != 0)
        throw CLI::ExtrasError(unknown_command_message(rest.front()), CLI::ExitCodes::ExtrasError);
      throw;
    }
    command = &chosen_command();
  } catch (const CLI::ParseError& e) {
    // --help and --version (exit code 0) print on every rank; a usage error once per job.
    if (e.get_exit_code() == 0) return app_->exit(e);
    if (claim_error_report()) app_->exit(e);
    return static_cast<int>(ExitCode::kBadInput);
  }
  if (!command->job && !config_.log_level.empty())
    spdlog::set_level(parse_log_level(config_.log_level));
  return run_guarded(command->run);
}

CLI::Option* add_path_option(CLI::App* command, const std::string& name, std::string& path,
                             const std::string& description, PathKind kind) {
  auto check = [kind](std::string& value) -> std::string {
    if (value.empty()) return "expected a path, got an empty string";
    std::error_code ec;
    const std::filesystem::file_status status = std::filesystem::status(value, ec);
    if (!std::filesystem::exists(status)) return "";
    if (kind == PathKind::kFile && std::filesystem::is_directory(status))
      return fmt::format("'{}' is a directory; expected a file", value);
    if (kind == PathKind::kDirectory && !std::filesystem::is_directory(status))
      return fmt::format("'{}' is not a directory", value);
    return "";
  };
  return command->add_option(name, path, description)
      ->check(CLI::Validator(check, ""))
      ->type_name(kind == PathKind::kFile ? "FILE" : "DIR");
}

CLI::Validator at_least(int64_t min) {
  return CLI::Validator(
      [min](std::string& value) -> std::string {
        int64_t number = 0;
        if (!CLI::detail::lexical_cast(value, number))
          return "expected an integer, got '" + value + "'";
        return number >= min ? "" : fmt::format("expected >= {}, got {}", min, number);
      },
      "");
}

CLI::Validator one_of(const std::vector<std::string>& values) {
  return CLI::Validator(
      [values](std::string& value) -> std::string {
        for (const std::string& v : values)
          if (v == value) return "";
        std::string expected;
        for (size_t i = 0; i < values.size(); ++i)
          expected += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + values[i];
        return fmt::format("expected {}, got '{}'", expected, value);
      },
      "");
}

void add_model_options(CLI::App* command, ModelFlags& flags) {
  add_path_option(command, "--model", flags.model,
                  "Model directory (Hugging Face layout); omitted: the config's base_model",
                  PathKind::kDirectory);
  command->add_option("--dtype", flags.dtype, "Compute dtype: bf16 or fp32")
      ->check(one_of({"bf16", "fp32"}));
  // --load-in-4bit=false turns off a config's load_in_4bit: true.
  command->add_flag_function(
      "--load-in-4bit", [&flags](int64_t count) { flags.load_in_4bit = count > 0; },
      "Quantize the decoder projections to NF4 while loading (QLoRA base); omitted: the "
      "config's load_in_4bit");
  add_path_option(command, "--adapter", flags.adapter, "PEFT LoRA adapter directory to apply",
                  PathKind::kDirectory);
}

ModelLoadOptions model_load_options(const ModelFlags& flags, const ResolvedConfig& config) {
  ModelLoadOptions options;
  options.dir = flags.model.empty() ? config.job.base_model : flags.model;
  PTRAIN_CHECK(!options.dir.empty(),
               "no model to load: give --model DIR, or --config FILE whose base_model names the "
               "model directory{}",
               config.source == "<defaults>"
                   ? " (no --config was given)"
                   : fmt::format(" ('{}' sets no base_model)", config.source));
  options.dtype = flags.dtype;
  options.load_in_4bit = flags.load_in_4bit.value_or(config.job.load_in_4bit);
  options.adapter = flags.adapter;
  return options;
}

}  // namespace ptrain
