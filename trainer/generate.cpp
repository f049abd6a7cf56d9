#include "trainer/generate.h"

#include <chrono>

#include "core/error.h"

namespace ptrain {

at::Tensor sampling_distribution(const at::Tensor& logits, const SamplingOptions& options) {
  PTRAIN_CHECK(options.temperature > 0, "sampling needs temperature > 0, got {}",
               options.temperature);
  PTRAIN_CHECK(options.top_p > 0 && options.top_p <= 1, "top_p must be in (0, 1], got {}",
               options.top_p);
  at::Tensor scaled = logits.to(at::kDouble) / options.temperature;
  const int64_t vocab = scaled.size(0);
  auto [sorted, order] = scaled.sort(/*dim=*/0, /*descending=*/true);
  at::Tensor keep = torch::ones({vocab}, torch::kBool);  // in sorted order
  // Top-k as Hugging Face's TopKLogitsWarper: every token whose logit reaches the k-th largest
  // stays (ties included).
  if (options.top_k > 0 && options.top_k < vocab) keep = sorted >= sorted[options.top_k - 1];
  if (options.top_p < 1) {
    at::Tensor probs = at::softmax(sorted.masked_fill(keep.logical_not(), -INFINITY), 0);
    // Mass of the strictly more likely tokens: drop a token once that already reaches top_p.
    at::Tensor before = probs.cumsum(0) - probs;
    keep = keep & before.lt(options.top_p);
    keep[0] = true;
  }
  at::Tensor filtered = sorted.masked_fill(keep.logical_not(), -INFINITY);
  at::Tensor out = torch::zeros({vocab}, torch::kDouble);
  out.index_put_({order}, at::softmax(filtered, 0));
  return out;
}

GenerationResult generate(LlamaForCausalLM& model, const std::vector<int64_t>& prompt,
                          const SamplingOptions& options,
                          const std::function<void(int64_t)>& on_token) {
  using Clock = std::chrono::steady_clock;
  PTRAIN_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  PTRAIN_CHECK(options.max_new_tokens >= 0, "max_new_tokens must be >= 0, got {}",
               options.max_new_tokens);
  const LlamaConfig& config = model->config();
  for (int64_t id : prompt)
    PTRAIN_CHECK(id >= 0 && id < config.vocab_size,
                 "prompt token id {} is outside the vocabulary [0, {})", id, config.vocab_size);
  const int64_t context = config.max_position_embeddings;
  PTRAIN_CHECK(static_cast<int64_t>(prompt.size()) < context,
               "the prompt has {} tokens; the model's context is {} (max_position_embeddings)",
               prompt.size(), context);
  // The cache holds the prompt and at most the new tokens the context leaves room for (the
  // difference, never the sum: max_new_tokens may be as large as int64 allows).
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t capacity =
      prompt_tokens + std::min<int64_t>(options.max_new_tokens, context - prompt_tokens);
  KVCache cache = model->make_cache(1, capacity);
  // Inference: no LoRA dropout, whatever mode the caller left the model in.
  const bool was_training = model->is_training();
  model->eval();
  struct Restore {
    LlamaForCausalLM& m;
    bool training;
    ~Restore() { m->train(training); }
  } restore{model, was_training};
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);

  GenerationResult result;
  result.stop_reason = "max_new_tokens";
  auto start = Clock::now();
  at::Tensor input = torch::tensor(prompt, torch::kLong).unsqueeze(0);
  at::Tensor logits = model->decode_step(input, cache);
  auto prefill_end = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(prefill_end - start).count();
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor row = logits[0];
    int64_t next;
    if (options.temperature <= 0) {
      next = row.argmax().item<int64_t>();
    } else {
      next =
          at::multinomial(sampling_distribution(row, options), 1, false, generator).item<int64_t>();
    }
    result.ids.push_back(next);
    if (on_token) on_token(next);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) !=
        options.stop_ids.end()) {
      result.stop_reason = "stop_token";
      break;
    }
    if (step + 1 == options.max_new_tokens) break;
    // `next` sits at position cache.length; one more token would need position cache.length + 1,
    // which must stay inside the context (prompt + output <= max_position_embeddings).
    if (cache.length + 1 >= context) {
      result.stop_reason = "context_full";
      break;
    }
    logits = model->decode_step(torch::tensor({next}, torch::kLong).unsqueeze(0), cache);
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - prefill_end).count();
  return result;
}

}  // namespace ptrain
