// Whole-directory operations behind `ptrain init-model` and `ptrain inspect` for model directories.
#pragma once

#include <cstdint>
#include <string>

namespace ptrain {

struct InitModelOptions {
  std::string preset;  // tiny | 160m | 1b
  std::string out_dir;
  uint64_t seed = 0;
  std::string dtype = "bf16";  // bf16 | fp32
  uint64_t max_shard_bytes = uint64_t{5} << 30;
};

// A randomly initialised Hugging Face Llama directory (config.json, generation_config.json,
// safetensors weights), written through the same writer as every export. Returns the parameter
// count.
int64_t write_random_llama_model(const InitModelOptions& options);

// Validates a model directory (config.json supported, every weight file valid, exactly the tensors
// the config needs with the right shapes, floating-point dtypes) and describes it. UserError naming
// the first problem otherwise.
std::string inspect_llama_model(const std::string& dir);

// Copies what a user loads next to a model's weights (the tokenizer files and generation
// defaults) from `model_dir` to `out_dir`, each written atomically; absent ones are skipped.
void copy_model_companions(const std::string& model_dir, const std::string& out_dir);

}  // namespace ptrain
