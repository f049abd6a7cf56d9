// One-process commands on the job config itself: `ptrain validate-config FILE` (check a config
// without running; every error names its key) and `ptrain config-docs` (the config reference,
// docs/config.md, generated from the schema).
#pragma once

#include "launcher/ptrain_commands.h"

namespace ptrain {

void register_validate_config_command(CommandLine& cli);
void register_config_docs_command(CommandLine& cli);

}  // namespace ptrain
