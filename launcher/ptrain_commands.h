// CommandLine: the `ptrain` command line, to which every command adds itself. A command file's
// register_*_command(CommandLine&) declares its subcommand and flags and hands over the function
// that runs it; ptrain_main.cpp only calls the register functions and run().
//
// Two kinds of command:
//   add_command      runs in this one process, without MPI (init-model, inspect, generate, ...).
//   add_job_command  runs once per rank: the job config (--config, --set, declared once, here) is
//                    loaded, a RankSession is set up, and the command is called with both (env,
//                    preprocess, eval). What the session writes under output_dir (log files, the
//                    resolved config) is the command's JobRecord, chosen when it registers.
// Every command takes --log-level (for a job command the same as --set logging.level=LEVEL), and
// declares each of its path flags with add_path_option(), which refuses an empty path (and a path
// of the wrong kind) before anything runs. `--help` shows each flag's default.
//
// `ptrain --config job.yaml` with no subcommand runs the default command (ARCHITECTURE.md: train),
// named by set_default_command(); the top-level --config, --set and --log-level belong to it and
// are refused beside a named subcommand. An unknown subcommand, or none without --config (or
// without a default command), is a usage error. `ptrain --version` prints version_text(). Usage
// errors exit with 2, printed once per job (error_report.h); whatever a command throws becomes its
// exit code through run_guarded() (core/error.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launcher/rank_session.h"

namespace CLI {
class App;
class Option;
class Validator;
}  // namespace CLI

namespace ptrain {

struct ModelLoadOptions;
struct ResolvedConfig;

// The job config a command reads, as its flags give it.
struct ConfigOptions {
  std::string path;                    // --config; empty: the embedded defaults
  std::vector<std::string> overrides;  // --set key=value, in order
  std::string log_level;               // --log-level: logging.level, applied after every --set

  // What load_config() takes: the --set overrides, then --log-level's.
  std::vector<std::string> all_overrides() const;
};

// How a command takes its config file.
enum class ConfigArgument {
  kOptional,    // --config FILE; the embedded defaults when omitted
  kRequired,    // --config FILE
  kPositional,  // the first positional argument (validate-config FILE)
};

// What a path flag names. Either way an empty value is refused; a path that exists must be of
// this kind.
enum class PathKind {
  kFile,       // a file to read or write (--data, --config, -o FILE)
  kDirectory,  // a directory to read or write (--model, --adapter, --out DIR)
};

class CommandLine {
 public:
  using Run = std::function<int()>;
  using JobRun = std::function<int(RankSession& session, const ResolvedConfig& config)>;

  explicit CommandLine(const std::string& description);
  ~CommandLine();
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  // A one-process command; `run` is called when it is named. Its flags are the caller's to add
  // to the returned subcommand, bound to storage that outlives run() (a shared_ptr the lambda
  // holds).
  CLI::App* add_command(const std::string& name, const std::string& description, Run run);

  // A command run on every rank over the job config, which the command's --config, --set and
  // --log-level give. `record`: what its session writes under output_dir; JobRecord::kLogs keeps
  // log files only when --config names a job (the defaults' output_dir is ./outputs).
  CLI::App* add_job_command(const std::string& name, const std::string& description,
                            ConfigArgument config, JobRecord record, JobRun run);

  // --config (or the positional config) and --set on `command`, bound to config(): for a command
  // that reads a config without a rank session (validate-config; generate and export, for the
  // model's base_model and load_in_4bit).
  void add_config_options(CLI::App* command, ConfigArgument config);
  const ConfigOptions& config() const { return config_; }

  // The job command `ptrain --config FILE` runs when no subcommand is named.
  void set_default_command(const std::string& name);

  // Parses the command line and runs the chosen command: its exit code, 2 for a usage error, 0
  // for --help and --version.
  int run(int argc, char** argv);

 private:
  struct Command {
    CLI::App* app;
    Run run;
    bool job;  // takes the job config (add_job_command)
  };
  CLI::App* add(const std::string& name, const std::string& description, Run run, bool job);
  // The command the parsed line names, or the default one; CLI::ParseError when there is none.
  const Command& chosen_command() const;
  bool top_level_config_given() const;
  // The options add_config_options() describes, with `config_help` for the config file.
  std::vector<CLI::Option*> declare_config_options(CLI::App* command, ConfigArgument config,
                                                   const std::string& config_help);
  // "unknown command 'X'; the commands are ..." for the first word of an unparsed line.
  std::string unknown_command_message(const std::string& word) const;
  std::string command_list() const;

  std::unique_ptr<CLI::App> app_;
  ConfigOptions config_;
  std::vector<CLI::Option*> top_level_options_;  // the default command's: --config first
  std::vector<Command> commands_;
  std::optional<size_t> default_command_;
  int argc_ = 0;
  char** argv_ = nullptr;
};

// A path flag (or, for a name without dashes, a positional argument) bound to `path`: an empty
// value, or an existing path of the other kind, is a usage error naming the flag.
CLI::Option* add_path_option(CLI::App* command, const std::string& name, std::string& path,
                             const std::string& description, PathKind kind);

// Checks of a flag's value at parse time, before a job command writes anything (its log files):
// an integer >= `min`; one of `values`. The message names the flag and what was expected.
CLI::Validator at_least(int64_t min);
CLI::Validator one_of(const std::vector<std::string>& values);

// The model flags of a command that loads a model (eval, generate, export), as its command line
// gives them; what they leave out comes from the job config (model_load_options()).
struct ModelFlags {
  std::string model;                 // --model; empty: the config's base_model
  std::string dtype = "bf16";        // --dtype: bf16 | fp32
  std::optional<bool> load_in_4bit;  // --load-in-4bit; unset: the config's load_in_4bit
  std::string adapter;               // --adapter: PEFT adapter directory, or empty
};

// --model, --dtype, --load-in-4bit and --adapter, bound to `flags`.
void add_model_options(CLI::App* command, ModelFlags& flags);

// The model to load: `flags`, with the job config's base_model when --model is absent and its
// load_in_4bit when --load-in-4bit is. Neither --model nor a base_model: a UserError naming both.
ModelLoadOptions model_load_options(const ModelFlags& flags, const ResolvedConfig& config);

}  // namespace ptrain
