#include "launcher/generate_command.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>
#include <memory>

#include "checkpoint/safetensors_model.h"
#include "core/config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_file.h"
#include "core/logging.h"
#include "model/llama_weights.h"
#include "tokenizer/tokenizer.h"
#include "trainer/generate.h"

namespace ptrain {
namespace {

std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    int64_t id = 0;
    try {
      id = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    PTRAIN_CHECK(used > 0 && used == item.size(),
                 "--prompt-ids '{}': expected comma-separated token ids, got '{}'", text, item);
    ids.push_back(id);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

// The sampling defaults a model ships in generation_config.json (as Hugging Face's generate()
// reads them), overridden by the command line; eos ids from there or config.json.
SamplingOptions sampling_options(const GenerateCommandOptions& cli, const std::string& model_dir,
                                 const LlamaConfig& config) {
  SamplingOptions options;
  options.max_new_tokens = cli.max_new_tokens;
  options.seed = cli.seed;
  options.stop_ids = config.eos_token_ids;
  const std::string path = model_dir + "/generation_config.json";
  if (std::filesystem::exists(path)) {
    const nlohmann::json j = read_json_file(path);
    auto number = [&](const char* key, auto fallback) {
      if (!j.contains(key) || j[key].is_null()) return fallback;
      PTRAIN_CHECK(j[key].is_number(), "'{}': key '{}' must be a number", path, key);
      return j[key].get<decltype(fallback)>();
    };
    if (j.value("do_sample", false)) {
      options.temperature = number("temperature", 1.0);
      options.top_k = number("top_k", int64_t{50});
      options.top_p = number("top_p", 1.0);
    }
    if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
      const nlohmann::json& eos = j["eos_token_id"];
      PTRAIN_CHECK(eos.is_number_integer() || eos.is_array(),
                   "'{}': eos_token_id must be an id or a list of ids", path);
      options.stop_ids = eos.is_array() ? eos.get<std::vector<int64_t>>()
                                        : std::vector<int64_t>{eos.get<int64_t>()};
    }
  }
  if (cli.temperature) options.temperature = *cli.temperature;
  if (cli.top_k) options.top_k = *cli.top_k;
  if (cli.top_p) options.top_p = *cli.top_p;
  PTRAIN_CHECK(options.temperature >= 0, "--temperature must be >= 0 (0: greedy), got {}",
               options.temperature);
  PTRAIN_CHECK(options.top_k >= 0, "--top-k must be >= 0 (0: off), got {}", options.top_k);
  PTRAIN_CHECK(options.top_p > 0 && options.top_p <= 1, "--top-p must be in (0, 1], got {}",
               options.top_p);
  return options;
}

}  // namespace

void register_generate_command(CommandLine& cli) {
  auto options = std::make_shared<GenerateCommandOptions>();
  CLI::App* generate = cli.add_command(
      "generate", "Continue prompts with a model (KV cache; greedy or sampled), in one process",
      [options, &cli] {
        const ConfigOptions& config = cli.config();
        return run_generate_command(*options, load_config(config.path, config.all_overrides()));
      });
  add_model_options(generate, options->model);
  cli.add_config_options(generate, ConfigArgument::kOptional);
  generate->add_option("--prompt", options->prompts, "Prompt text (repeatable)");
  generate->add_option("--prompt-ids", options->prompt_ids,
                       "Prompt as comma-separated token ids (repeatable)");
  generate->add_option("--max-new-tokens", options->max_new_tokens, "Tokens to generate at most");
  generate->add_option("--temperature", options->temperature,
                       "0: greedy; > 0: sample (default: generation_config.json, else greedy)");
  generate->add_option("--top-k", options->top_k, "Sample among the k most likely tokens (0: off)");
  generate->add_option("--top-p", options->top_p, "Nucleus sampling mass in (0, 1]");
  generate->add_option("--seed", options->seed, "Sampling seed");
  generate->add_flag("--json", options->json, "One JSON object per prompt (ids, text, timings)");
}

int run_generate_command(const GenerateCommandOptions& cli, const ResolvedConfig& config) {
  PTRAIN_CHECK(!cli.prompts.empty() || !cli.prompt_ids.empty(),
               "generate: give at least one --prompt TEXT or --prompt-ids IDS");
  const ModelLoadOptions load = model_load_options(cli.model, config);
  std::unique_ptr<Tokenizer> tokenizer;
  if (!cli.prompts.empty()) tokenizer = load_tokenizer(load.dir);
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& text : cli.prompts) prompts.push_back(tokenizer->encode_sequence(text));
  for (const auto& text : cli.prompt_ids) prompts.push_back(parse_ids(text));

  LlamaForCausalLM model = load_model(load).model;
  model->eval();
  const SamplingOptions sampling = sampling_options(cli, load.dir, model->config());

  for (size_t p = 0; p < prompts.size(); ++p) {
    const std::vector<int64_t>& prompt = prompts[p];
    // Streaming: decode prompt + continuation together (so tokenizers that drop a leading space
    // decode the boundary right) and print what is new, holding back a trailing U+FFFD (a
    // character whose bytes are split over tokens) until it completes.
    std::string printed;
    std::vector<int64_t> so_far = prompt;
    auto stable_text = [&]() {
      std::string text = tokenizer->decode(so_far, true);
      const std::string replacement = "\xEF\xBF\xBD";
      while (text.size() >= 3 && text.compare(text.size() - 3, 3, replacement) == 0)
        text.resize(text.size() - 3);
      return text;
    };
    auto print_new = [&](const std::string& text) {
      if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
        std::cout << text.substr(printed.size()) << std::flush;
        printed = text;
      }
    };
    std::function<void(int64_t)> on_token;
    if (!cli.json && tokenizer) {
      print_new(stable_text());
      on_token = [&](int64_t id) {
        so_far.push_back(id);
        print_new(stable_text());
      };
    }
    GenerationResult result = generate(model, prompt, sampling, on_token);
    const double prefill_rate = prompt.size() / std::max(result.prefill_seconds, 1e-9);
    const double decode_rate =
        result.ids.size() > 1 ? (result.ids.size() - 1) / std::max(result.decode_seconds, 1e-9) : 0;
    if (cli.json) {
      nlohmann::json line = {{"prompt_ids", prompt},
                             {"ids", result.ids},
                             {"stop_reason", result.stop_reason},
                             {"prompt_tokens", prompt.size()},
                             {"new_tokens", result.ids.size()},
                             {"prefill_tokens_per_s", prefill_rate},
                             {"decode_tokens_per_s", decode_rate}};
      if (tokenizer && p < cli.prompts.size()) {
        line["prompt"] = cli.prompts[p];
        line["text"] = tokenizer->decode(result.ids, true);
      }
      std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    } else {
      if (tokenizer) {
        // Whatever was held back (or could not be streamed as a suffix) goes out now.
        const std::string text = tokenizer->decode(so_far, true);
        if (text.compare(0, printed.size(), printed) == 0)
          std::cout << text.substr(printed.size());
        else
          std::cout << "\n" << tokenizer->decode(result.ids, true);
      } else {
        std::cout << fmt::format("{}", fmt::join(result.ids, ","));
      }
      std::cout << std::endl;
      std::cerr << fmt::format(
          "[generate] {}, {} ({}); prefill {:.1f} tokens/s, decode {:.1f} tokens/s\n",
          counted(static_cast<int64_t>(prompt.size()), "prompt token"),
          counted(static_cast<int64_t>(result.ids.size()), "new token"), result.stop_reason,
          prefill_rate, decode_rate);
    }
  }
  return 0;
}

}  // namespace ptrain
