// `ptrain plot OUTPUT_DIR`: redraws OUTPUT_DIR/training_curves.svg from OUTPUT_DIR/metrics.jsonl
// (trainer/training_curves.h) and prints the path written. One process, no MPI; it writes nothing
// else (no log files, no ./outputs).
#pragma once

#include "launcher/ptrain_commands.h"

namespace ptrain {

void register_plot_command(CommandLine& cli);

}  // namespace ptrain
