// `ptrain train --config job.yaml` (also `ptrain --config job.yaml`): the job assembly of training.
// Every rank: validate the config for training, prepare the data (rank 0 builds the cache), load
// the base model, apply the adapter (lora/qlora) or train it in full, shard it (FSDP), build the
// optimizer and schedule, check the memory it will need, run the loop, and write
// <output_dir>/final/ (the PEFT adapter, or the full Hugging Face model) from rank 0.
#pragma once

#include "launcher/ptrain_commands.h"

namespace ptrain {

void register_train_command(CommandLine& cli);

}  // namespace ptrain
