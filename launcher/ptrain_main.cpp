// ptrain: the per-rank entry point. Each command registers its own subcommand and flags
// (launcher/ptrain_commands.h); subcommands exist only once they are real (ARCHITECTURE.md).
// `ptrain --config job.yaml` with no subcommand means `train`: train's registration is followed by
// cli.set_default_command("train"); until then that line is a usage error (exit 2).
#include "launcher/config_commands.h"
#include "launcher/env_command.h"
#include "launcher/eval_command.h"
#include "launcher/export_command.h"
#include "launcher/generate_command.h"
#include "launcher/model_commands.h"
#include "launcher/plot_command.h"
#include "launcher/preprocess_command.h"
#include "launcher/ptrain_commands.h"
#include "launcher/train_command.h"

int main(int argc, char** argv) {
  using namespace ptrain;
  CommandLine cli("ptrain: distributed fine-tuning and training of Llama-family models");
  register_train_command(cli);
  register_env_command(cli);
  register_validate_config_command(cli);
  register_init_model_command(cli);
  register_inspect_command(cli);
  register_preprocess_command(cli);
  register_eval_command(cli);
  register_generate_command(cli);
  register_tokenize_command(cli);
  register_export_command(cli);
  register_plot_command(cli);
  register_config_docs_command(cli);
  return cli.run(argc, argv);
}
