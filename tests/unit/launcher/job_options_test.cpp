// JobConfig -> the libraries' option structs (launcher/job_options.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "core/config.h"
#include "launcher/job_options.h"
#include "test_support.h"

namespace ptrain {
namespace {

using ::ptrain::testing::temp_dir;

TEST(Qlora, AxolotlStyleConfigBecomesAQloraModelWithAdapters) {
  const std::string dir = temp_dir("config");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/job.yaml")
      << "load_in_4bit: true\nadapter: qlora\nlora_r: 16\n"
         "lora_alpha: 32\nlora_dropout: 0.1\npeft_use_rslora: true\n"
         "lora_target_modules: [q_proj, 'model\\.layers\\.1\\.mlp\\.down_proj']\n"
         "gradient_checkpointing: true\nseed: 3\n";
  JobConfig job = load_config(dir + "/job.yaml", {}).job;
  ModelOptions options = model_options_from_config(job, 0);
  EXPECT_TRUE(options.nf4_base);
  EXPECT_TRUE(options.activation_checkpointing);
  EXPECT_EQ(options.dtype, at::kBFloat16);
  std::optional<AdapterSpec> spec = adapter_spec_from_config(job);
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->lora.r, 16);
  EXPECT_DOUBLE_EQ(spec->lora.scaling(), 32.0 / 4.0);  // rsLoRA: alpha / sqrt(r)
  LlamaForCausalLM model(llama_preset("tiny"), options);
  model->initialize(1);
  EXPECT_EQ(apply_lora(model, *spec), (std::vector<std::string>{"model.layers.0.self_attn.q_proj",
                                                                "model.layers.1.self_attn.q_proj",
                                                                "model.layers.1.mlp.down_proj"}));
  JobConfig full;
  EXPECT_FALSE(adapter_spec_from_config(full).has_value());
}

TEST(JobOptions, TheModelsGeneratorSeedIsSplitmix64OfTheJobSeedAndRank) {
  // splitmix64's published first output for state 0 + gamma: 0xE220A8397B1DCDAF.
  EXPECT_EQ(rank_seed(0, 0), 0xE220A8397B1DCDAFULL);
  JobConfig job;
  job.seed = 42;
  EXPECT_EQ(model_options_from_config(job, 3).rng_seed, rank_seed(42, 3));
  EXPECT_NE(rank_seed(42, 0), rank_seed(42, 1));
  EXPECT_NE(rank_seed(42, 0), rank_seed(43, 0));
}

}  // namespace
}  // namespace ptrain
