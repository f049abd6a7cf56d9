// Text generation from a causal LM with a KV cache: the prompt runs once (prefill), then one token
// per step against the cache. Greedy decoding, or sampling with temperature, top-k and top-p
// (nucleus) filtering applied in Hugging Face's order (temperature, then top-k, then top-p).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"

namespace ptrain {

struct SamplingOptions {
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // 0: greedy (argmax); > 0: sample from softmax(logits / temperature)
  int64_t top_k = 0;         // keep the k most likely tokens (and ties with the k-th); 0: all
  double top_p = 1.0;        // keep the smallest set whose probability reaches top_p; 1: all
  uint64_t seed = 0;
  std::vector<int64_t> stop_ids;  // generation ends after producing one of these (eos)
};

// The distribution a sampling step draws from: softmax(logits / temperature) over the tokens
// that survive top-k and then top-p (HF semantics: a token is dropped when the probability mass
// of the tokens more likely than it already reaches top_p; the most likely token always stays),
// renormalised. logits [vocab]; returns fp64 probabilities [vocab]. Requires temperature > 0.
at::Tensor sampling_distribution(const at::Tensor& logits, const SamplingOptions& options);

struct GenerationResult {
  std::vector<int64_t> ids;  // the new tokens, the stop token included when one ended it
  std::string stop_reason;   // "stop_token" or "max_new_tokens" or "context_full"
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Generates up to max_new_tokens after `prompt` (non-empty), never past the model's
// max_position_embeddings. `on_token` (optional) sees each new id as it is chosen. Deterministic
// for a given seed.
GenerationResult generate(LlamaForCausalLM& model, const std::vector<int64_t>& prompt,
                          const SamplingOptions& options,
                          const std::function<void(int64_t)>& on_token = {});

}  // namespace ptrain
