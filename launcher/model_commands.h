// One-process commands on a model or prepared-dataset directory: `ptrain init-model` (a random
// Llama), `ptrain inspect` (describe and verify a model or prepared dataset) and `ptrain tokenize`
// (what the model's tokenizer makes of some text). The work behind init-model and inspect of a
// model is in model_tools.h; inspect of a prepared dataset in preprocess_command.h.
#pragma once

#include <string>
#include <vector>

#include "launcher/ptrain_commands.h"

namespace ptrain {

void register_init_model_command(CommandLine& cli);
void register_inspect_command(CommandLine& cli);
void register_tokenize_command(CommandLine& cli);

// Prints the ids (and pieces) the model's tokenizer gives each text; --json: one array per text.
int run_tokenize_command(const std::string& model_dir, const std::vector<std::string>& texts,
                         bool json);

}  // namespace ptrain
