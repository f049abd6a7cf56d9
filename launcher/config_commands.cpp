#include "launcher/config_commands.h"

#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>
#include <memory>

#include "core/config.h"
#include "core/config_schema.h"
#include "core/error.h"

namespace ptrain {
namespace {

// Warnings to stderr; the resolved config (print) and the hash to stdout.
int validate_config(const ConfigOptions& options, bool print) {
  ResolvedConfig config = load_config(options.path, options.all_overrides());
  for (const auto& warning : config.warnings) std::cerr << "warning: " << warning << "\n";
  if (print) std::cout << config.resolved_yaml;
  std::cout << options.path << ": OK (config hash " << config.hash << ")\n";
  return 0;
}

int write_config_docs(const std::string& out) {
  const std::string text = ConfigSchema::instance().markdown();
  if (out.empty() || out == "-") {
    std::cout << text;
  } else {
    std::ofstream file(out, std::ios::binary);
    PTRAIN_CHECK(file.good(), "cannot write '{}'", out);
    file << text;
  }
  return 0;
}

}  // namespace

void register_validate_config_command(CommandLine& cli) {
  auto print = std::make_shared<bool>(false);
  CLI::App* validate =
      cli.add_command("validate-config", "Check a config file without running",
                      [&cli, print] { return validate_config(cli.config(), *print); });
  cli.add_config_options(validate, ConfigArgument::kPositional);
  validate->add_flag("--print", *print, "Print the resolved config (every key)");
}

void register_config_docs_command(CommandLine& cli) {
  auto out = std::make_shared<std::string>();
  CLI::App* docs = cli.add_command("config-docs", "Write the config reference (docs/config.md)",
                                   [out] { return write_config_docs(*out); });
  add_path_option(docs, "--out,-o", *out, "Output file (- for stdout); stdout if omitted",
                  PathKind::kFile);
}

}  // namespace ptrain
