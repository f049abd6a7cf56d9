// Generation against independent references: cached decoding against the full (uncached) forward,
// greedy generation against an argmax loop over full forwards, and the sampling distribution
// against probabilities computed by hand.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "model/llama_ops.h"
#include "trainer/generate.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;

at::Tensor full_logits(LlamaForCausalLM& model, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  return model->logits(make_packed_batch({{ids}}, static_cast<int64_t>(ids.size())))[0];
}

// Every position's logits from the KV-cache path (a prefill chunk, then single tokens, then a
// chunk again) equal the full forward's at that position.
void expect_cached_equals_full(const LlamaConfig& config) {
  auto model = make_model(config, at::kDouble, 5);
  const std::vector<int64_t> ids = {1, 7, 3, 9, 2, 2, 10, 4, 6, 0, 5, 8};
  at::Tensor reference = full_logits(model, ids);
  KVCache cache = model->make_cache(1, static_cast<int64_t>(ids.size()));
  const std::vector<int64_t> steps = {4, 1, 1, 1, 3, 1, 1};  // 12 tokens in chunks
  int64_t pos = 0;
  for (int64_t len : steps) {
    std::vector<int64_t> chunk(ids.begin() + pos, ids.begin() + pos + len);
    at::Tensor got = model->decode_step(torch::tensor(chunk, torch::kLong).unsqueeze(0), cache);
    pos += len;
    EXPECT_EQ(cache.length, pos);
    EXPECT_TRUE(torch::allclose(got[0], reference[pos - 1], 1e-10, 1e-10))
        << "position " << pos - 1 << ": max diff "
        << (got[0] - reference[pos - 1]).abs().max().item<double>();
  }
}

TEST(KvCache, CachedDecodingEqualsTheFullForwardWithGqa) {
  expect_cached_equals_full(micro_config());
}

TEST(KvCache, CachedDecodingRespectsTheSlidingWindow) {
  LlamaConfig c = micro_config();
  c.model_type = "mistral";
  c.sliding_window = 3;
  expect_cached_equals_full(c);
}

TEST(KvCache, ALongPrefillTakesTheBlockwisePathWithTheSameLogits) {
  LlamaConfig c = micro_config();
  auto dense = make_model(c, at::kDouble, 5);
  ModelOptions options;
  options.dtype = at::kDouble;
  options.attention_block = 3;  // a prefill of 9 tokens runs in blocks of 3
  LlamaForCausalLM blockwise(c, options);
  blockwise->initialize(5);
  const std::vector<int64_t> ids = {1, 7, 3, 9, 2, 2, 10, 4, 6, 0, 5};
  at::Tensor reference = full_logits(dense, ids);
  KVCache cache = blockwise->make_cache(1, static_cast<int64_t>(ids.size()));
  std::vector<int64_t> prompt(ids.begin(), ids.begin() + 9);
  at::Tensor got = blockwise->decode_step(torch::tensor(prompt, torch::kLong).unsqueeze(0), cache);
  EXPECT_TRUE(torch::allclose(got[0], reference[8], 1e-10, 1e-10));
  got = blockwise->decode_step(torch::tensor({ids[9]}, torch::kLong).unsqueeze(0), cache);
  EXPECT_TRUE(torch::allclose(got[0], reference[9], 1e-10, 1e-10));
}

// Many new tokens after cached ones (here 5 after 4, blocks of 3) run blockwise against the cache.
TEST(KvCache, AChunkAfterCachedTokensTakesTheBlockwisePathWithTheSameLogits) {
  LlamaConfig c = micro_config();
  c.model_type = "mistral";
  c.sliding_window = 4;
  auto dense = make_model(c, at::kDouble, 5);
  ModelOptions options;
  options.dtype = at::kDouble;
  options.attention_block = 3;
  LlamaForCausalLM blockwise(c, options);
  blockwise->initialize(5);
  const std::vector<int64_t> ids = {1, 7, 3, 9, 2, 2, 10, 4, 6, 0};
  at::Tensor reference = full_logits(dense, ids);
  KVCache cache = blockwise->make_cache(1, static_cast<int64_t>(ids.size()));
  for (auto [begin, end] : {std::pair<size_t, size_t>{0, 4}, {4, 9}, {9, 10}}) {
    std::vector<int64_t> chunk(ids.begin() + begin, ids.begin() + end);
    at::Tensor got = blockwise->decode_step(torch::tensor(chunk, torch::kLong).unsqueeze(0), cache);
    EXPECT_TRUE(torch::allclose(got[0], reference[end - 1], 1e-10, 1e-10)) << "up to " << end;
  }
}

TEST(KvCache, OverflowIsAnError) {
  auto model = make_model(micro_config(), at::kFloat);
  KVCache cache = model->make_cache(1, 3);
  model->decode_step(torch::tensor({1, 2}, torch::kLong).unsqueeze(0), cache);
  EXPECT_THAT(
      [&] {
        model->decode_step(torch::tensor({3, 4}, torch::kLong).unsqueeze(0), cache);
      },
      ::testing::ThrowsMessage<UserError>(HasSubstr("do not fit the KV cache")));
}

TEST(Generate, GreedyEqualsAnArgmaxLoopOverFullForwards) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kFloat, 9);
  std::vector<int64_t> prompt = {1, 80, 81, 82};
  SamplingOptions options;
  options.max_new_tokens = 12;
  GenerationResult result = generate(model, prompt, options);
  ASSERT_EQ(result.ids.size(), 12u);
  EXPECT_EQ(result.stop_reason, "max_new_tokens");
  std::vector<int64_t> seq = prompt;
  for (size_t i = 0; i < result.ids.size(); ++i) {
    at::Tensor logits = full_logits(model, seq);
    int64_t expected = logits[-1].argmax().item<int64_t>();
    // A near tie between the two best tokens could go either way in fp32; there is none here.
    ASSERT_EQ(result.ids[i], expected) << "token " << i;
    seq.push_back(expected);
  }
}

TEST(Generate, StopsAtAStopTokenAndAtTheContextEnd) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kFloat, 9);
  SamplingOptions options;
  options.max_new_tokens = 10;
  GenerationResult free_run = generate(model, {1, 80}, options);
  options.stop_ids = {free_run.ids[2]};
  GenerationResult stopped = generate(model, {1, 80}, options);
  ASSERT_LE(stopped.ids.size(), 3u);
  EXPECT_EQ(stopped.ids.back(), free_run.ids[2]);
  EXPECT_EQ(stopped.stop_reason, "stop_token");

  c.max_position_embeddings = 6;
  auto short_model = make_model(c, at::kFloat, 9);
  options.stop_ids.clear();
  GenerationResult full = generate(short_model, {1, 80, 81}, options);
  EXPECT_EQ(full.ids.size(), 3u);  // positions 3, 4, 5: prompt + output = the context of 6
  EXPECT_EQ(full.stop_reason, "context_full");
  EXPECT_THAT(
      [&] {
        generate(short_model, {1, 2, 3, 4, 5, 6}, options);
      },
      ::testing::ThrowsMessage<UserError>(HasSubstr("context is 6")));
  EXPECT_THAT(
      [&] {
        generate(short_model, {1, 999}, options);
      },
      ::testing::ThrowsMessage<UserError>(HasSubstr("token id 999")));
}

// --max-new-tokens as large as int64 allows is a request to run until the context is full: the
// cache is sized by what the context leaves, never by the (overflowing) sum.
TEST(Generate, TheLargestMaxNewTokensRunsToTheContextEnd) {
  LlamaConfig c = llama_preset("tiny");
  c.max_position_embeddings = 6;
  auto model = make_model(c, at::kFloat, 9);
  SamplingOptions options;
  options.max_new_tokens = std::numeric_limits<int64_t>::max();
  GenerationResult full = generate(model, {1, 80, 81}, options);
  EXPECT_EQ(full.ids.size(), 3u);
  EXPECT_EQ(full.stop_reason, "context_full");
}

TEST(Generate, SamplingIsDeterministicInTheSeed) {
  auto model = make_model(llama_preset("tiny"), at::kFloat, 9);
  SamplingOptions options;
  options.max_new_tokens = 16;
  options.temperature = 1.5;
  options.seed = 4;
  auto a = generate(model, {1, 80}, options).ids;
  auto b = generate(model, {1, 80}, options).ids;
  options.seed = 5;
  auto other = generate(model, {1, 80}, options).ids;
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);  // 16 draws at temperature 1.5 over 259 tokens: a collision is ~impossible
}

TEST(Sampling, DistributionMatchesHandComputedTemperatureTopKAndTopP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1, in shuffled token order.
  at::Tensor logits =
      torch::tensor({std::log(0.15), std::log(0.5), std::log(0.05), std::log(0.3)}, torch::kDouble);
  SamplingOptions o;
  o.temperature = 1;
  at::Tensor p = sampling_distribution(logits, o);
  EXPECT_TRUE(torch::allclose(p, torch::tensor({0.15, 0.5, 0.05, 0.3}, torch::kDouble)));

  o.top_p = 0.7;  // 0.5 kept (nothing before it), 0.3 kept (0.5 before), 0.15 dropped (0.8 before)
  p = sampling_distribution(logits, o);
  EXPECT_TRUE(torch::allclose(p, torch::tensor({0.0, 0.625, 0.0, 0.375}, torch::kDouble)));

  o.top_p = 0.85;  // 0.15 now kept (0.8 before it), 0.05 dropped (0.95 before it)
  p = sampling_distribution(logits, o);
  EXPECT_TRUE(torch::allclose(p, torch::tensor({0.15, 0.5, 0.0, 0.3}, torch::kDouble) / 0.95));

  o.top_p = 1;
  o.top_k = 3;
  p = sampling_distribution(logits, o);
  EXPECT_TRUE(torch::allclose(p, torch::tensor({0.15, 0.5, 0.0, 0.3}, torch::kDouble) / 0.95));

  // Ties with the k-th logit stay, as in Hugging Face: k = 2 over 0.4, 0.3, 0.3 keeps all three.
  SamplingOptions tie;
  tie.temperature = 1;
  tie.top_k = 2;
  at::Tensor tied = torch::tensor({std::log(0.3), std::log(0.4), std::log(0.3)}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(sampling_distribution(tied, tie),
                              torch::tensor({0.3, 0.4, 0.3}, torch::kDouble)));

  o.top_k = 0;
  o.temperature = 2;  // softmax(log p / 2) = sqrt(p) / sum sqrt(p)
  p = sampling_distribution(logits, o);
  at::Tensor s = torch::tensor({0.15, 0.5, 0.05, 0.3}, torch::kDouble).sqrt();
  EXPECT_TRUE(torch::allclose(p, s / s.sum()));

  o.top_p = 0.01;  // the most likely token always stays
  p = sampling_distribution(logits, o);
  EXPECT_TRUE(torch::allclose(p, torch::tensor({0.0, 1.0, 0.0, 0.0}, torch::kDouble)));
}

}  // namespace
}  // namespace ptrain
