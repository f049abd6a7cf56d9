// The Llama model against independent references: fp64 formulas written here for each op, the
// packed row against its samples run alone, gradients against finite differences, weights against
// the bytes written, bf16 against fp32.
#include <c10/core/CPUAllocator.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "model/llama.h"
#include "model/llama_config.h"
#include "model/llama_ops.h"
#include "model/llama_weights.h"
#include "quant/bnb_import.h"
#include "test_support.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using ::ptrain::testing::temp_dir;

// ---------------------------------------------------------------- ops vs fp64 formulas

TEST(LlamaOps, RmsNormMatchesTheFormula) {
  torch::manual_seed(1);
  at::Tensor x = torch::randn({3, 5, 16});
  at::Tensor w = torch::randn({16});
  at::Tensor got = rms_norm(x, w, 1e-5);
  auto xa = x.accessor<float, 3>();
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 5; ++b) {
      double ms = 0;
      for (int i = 0; i < 16; ++i) ms += static_cast<double>(xa[a][b][i]) * xa[a][b][i];
      ms /= 16;
      for (int i = 0; i < 16; ++i) {
        double expected = w[i].item<double>() * xa[a][b][i] / std::sqrt(ms + 1e-5);
        ASSERT_NEAR(got[a][b][i].item<double>(), expected, 1e-5 * (1 + std::fabs(expected)));
      }
    }
}

std::vector<double> reference_inv_freq(const LlamaConfig& c) {
  std::vector<double> out;
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(i) / c.head_dim);
    const RopeScaling& s = c.rope_scaling;
    if (s.type == "linear") f /= s.factor;
    if (s.type == "llama3") {  // FORMATS.md: Llama 3 rope scaling
      double orig = static_cast<double>(s.original_max_position_embeddings);
      double wavelen = 2 * M_PI / f;
      if (wavelen > orig / s.low_freq_factor) {
        f = f / s.factor;
      } else if (wavelen >= orig / s.high_freq_factor) {
        double smooth =
            (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    out.push_back(f);
  }
  return out;
}

TEST(LlamaOps, RopeInverseFrequenciesMatchTheFormulaForEveryScaling) {
  LlamaConfig c = llama_preset("1b");
  c.head_dim = 128;
  c.rope_theta = 500000.0;
  for (std::string type : {"default", "linear", "llama3"}) {
    c.rope_scaling = RopeScaling{};
    c.rope_scaling.type = type;
    c.rope_scaling.factor = type == "default" ? 1.0 : 8.0;
    at::Tensor got = rope_inv_freq(c);
    std::vector<double> expected = reference_inv_freq(c);
    ASSERT_EQ(got.numel(), 64);
    for (int i = 0; i < 64; ++i)
      ASSERT_NEAR(got[i].item<double>(), expected[i], 1e-6 * expected[i]) << type << " " << i;
  }
  // llama3 leaves high frequencies alone and divides the lowest by the factor.
  EXPECT_NEAR(rope_inv_freq(c)[0].item<double>(), 1.0, 1e-7);
  EXPECT_NEAR(rope_inv_freq(c)[63].item<double>(), reference_inv_freq(c)[63], 1e-12);
}

TEST(LlamaOps, ApplyRopeIsTheNonInterleavedRotation) {
  torch::manual_seed(2);
  const int64_t d = 8, t = 6;
  at::Tensor x = torch::randn({1, 2, t, d}, torch::kDouble);
  at::Tensor pos = torch::tensor({{0, 1, 2, 0, 1, 5}}, torch::kLong);
  LlamaConfig c = micro_config();
  c.head_dim = d;
  at::Tensor inv = rope_inv_freq(c);
  auto [cos, sin] = rope_tables(inv, pos);
  at::Tensor got = apply_rope(x, cos, sin);
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < t; ++i)
      for (int k = 0; k < d; ++k) {
        double angle = pos[0][i].item<double>() * inv[k % (d / 2)].item<double>();
        double rotated = k < d / 2 ? -x[0][h][i][k + d / 2].item<double>()
                                   : x[0][h][i][k - d / 2].item<double>();
        double expected =
            x[0][h][i][k].item<double>() * std::cos(angle) + rotated * std::sin(angle);
        ASSERT_NEAR(got[0][h][i][k].item<double>(), expected, 1e-6);
      }
}

TEST(LlamaOps, GroupedAttentionMatchesAnExplicitSoftmaxLoop) {
  torch::manual_seed(3);
  const int64_t b = 2, heads = 4, kv = 2, t = 7, d = 3;
  at::Tensor q = torch::randn({b, heads, t, d}, torch::kDouble);
  at::Tensor k = torch::randn({b, kv, t, d}, torch::kDouble);
  at::Tensor v = torch::randn({b, kv, t, d}, torch::kDouble);
  at::Tensor seq = torch::tensor({{0, 0, 0, 1, 1, -1, -1}, {0, 1, 1, 1, 1, 1, 2}}, torch::kLong);
  at::Tensor got =
      grouped_attention(q, k, v, attention_bias(packed_causal_mask(seq, 0), torch::kDouble));
  for (int bi = 0; bi < b; ++bi)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < t; ++i) {
        const int g = h / (heads / kv);
        const int64_t si = seq[bi][i].item<int64_t>();
        std::vector<double> w(t, 0.0);
        double max = -1e300, sum = 0;
        for (int j = 0; j < t; ++j) {
          bool allowed = (j <= i && si >= 0 && seq[bi][j].item<int64_t>() == si) || j == i;
          if (!allowed) continue;
          double s = 0;
          for (int e = 0; e < d; ++e)
            s += q[bi][h][i][e].item<double>() * k[bi][g][j][e].item<double>();
          w[j] = s / std::sqrt(static_cast<double>(d));
          max = std::max(max, w[j]);
        }
        for (int j = 0; j < t; ++j) {
          bool allowed = (j <= i && si >= 0 && seq[bi][j].item<int64_t>() == si) || j == i;
          w[j] = allowed ? std::exp(w[j] - max) : 0.0;
          sum += w[j];
        }
        for (int e = 0; e < d; ++e) {
          double expected = 0;
          for (int j = 0; j < t; ++j) expected += w[j] / sum * v[bi][g][j][e].item<double>();
          ASSERT_NEAR(got[bi][h][i][e].item<double>(), expected, 1e-12) << bi << h << i << e;
        }
      }
}

TEST(LlamaOps, BlockwiseAttentionEqualsDenseAttentionAndItsGradients) {
  torch::manual_seed(5);
  const int64_t b = 2, heads = 4, kv = 2, t = 11, d = 3;
  at::Tensor seq = torch::tensor(
      {{0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, torch::kLong);
  at::Tensor bias = attention_bias(packed_causal_mask(seq, 0), torch::kDouble);
  for (int64_t block : {1, 3, 4, 11, 16}) {
    at::Tensor q = torch::randn({b, heads, t, d}, torch::kDouble).requires_grad_(true);
    at::Tensor k = torch::randn({b, kv, t, d}, torch::kDouble).requires_grad_(true);
    at::Tensor v = torch::randn({b, kv, t, d}, torch::kDouble).requires_grad_(true);
    at::Tensor dense = grouped_attention(q, k, v, bias);  // checked against the explicit loop above
    at::Tensor blocked = blockwise_attention(q, k, v, bias, block);
    ASSERT_TRUE(torch::allclose(blocked, dense, 1e-12, 1e-12)) << "block " << block;
    at::Tensor upstream = torch::randn({b, heads, t, d}, torch::kDouble);
    auto g_dense = torch::autograd::grad({dense}, {q, k, v}, {upstream});
    auto g_block = torch::autograd::grad({blocked}, {q, k, v}, {upstream});
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(torch::allclose(g_block[i], g_dense[i], 1e-10, 1e-12))
          << "block " << block << " input " << i;
  }
}

// The sequence-id form builds each block's mask itself: against grouped_attention under
// packed_causal_mask (checked against the explicit loop above), with padding and sliding windows,
// and with queries that are the last T of S keys (a KV cache, cached_causal_mask); values and
// gradients.
TEST(LlamaOps, BlockwiseAttentionFromSequenceIdsEqualsDenseAttentionAndItsGradients) {
  torch::manual_seed(6);
  const int64_t heads = 4, kv = 2, d = 3;
  auto expect_equal = [&](const at::Tensor& seq, const at::Tensor& bias, int64_t t, int64_t window,
                          int64_t block) {
    const int64_t b = seq.size(0), s = seq.size(1);
    at::Tensor q = torch::randn({b, heads, t, d}, torch::kDouble).requires_grad_(true);
    at::Tensor k = torch::randn({b, kv, s, d}, torch::kDouble).requires_grad_(true);
    at::Tensor v = torch::randn({b, kv, s, d}, torch::kDouble).requires_grad_(true);
    at::Tensor dense = grouped_attention(q, k, v, bias);
    at::Tensor blocked = blockwise_attention(q, k, v, seq, window, block);
    ASSERT_TRUE(torch::allclose(blocked, dense, 1e-12, 1e-12))
        << "t " << t << " s " << s << " window " << window << " block " << block;
    at::Tensor upstream = torch::randn({b, heads, t, d}, torch::kDouble);
    auto g_dense = torch::autograd::grad({dense}, {q, k, v}, {upstream});
    auto g_block = torch::autograd::grad({blocked}, {q, k, v}, {upstream});
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(torch::allclose(g_block[i], g_dense[i], 1e-10, 1e-12))
          << "t " << t << " s " << s << " window " << window << " block " << block << " input "
          << i;
  };
  at::Tensor packed = torch::tensor(
      {{0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1}, {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2}}, torch::kLong);
  for (int64_t window : {0, 1, 3})
    for (int64_t block : {1, 3, 4, 11, 16})
      expect_equal(packed, attention_bias(packed_causal_mask(packed, window), torch::kDouble), 11,
                   window, block);
  at::Tensor cached = torch::zeros({1, 11}, torch::kLong);  // 4 new tokens after 7 cached
  for (int64_t window : {0, 3})
    for (int64_t block : {1, 2, 4})
      expect_equal(cached, attention_bias(cached_causal_mask(7, 4, window), torch::kDouble), 4,
                   window, block);
}

// Training through blockwise attention (sequence ids, sliding window, padding) gives the dense
// model's loss and gradients.
TEST(LlamaModel, BlockwiseTrainingWithAWindowMatchesDenseLossAndGradients) {
  LlamaConfig c = llama_preset("tiny");
  c.model_type = "mistral";
  c.sliding_window = 3;
  ModelOptions dense_options, block_options;
  dense_options.dtype = block_options.dtype = at::kDouble;
  block_options.attention_block = 4;
  LlamaForCausalLM dense(c, dense_options), blocked(c, block_options);
  dense->initialize(8);
  blocked->initialize(8);
  PackedBatch batch =
      make_packed_batch({{{5, 9, 200, 31, 7, 1, 2}, {3, 250, 4, 4, 4, 9}}, {{17, 18, 19}}}, 20);
  at::Tensor dense_loss = dense->loss_sum(batch), blocked_loss = blocked->loss_sum(batch);
  EXPECT_NEAR(blocked_loss.item<double>(), dense_loss.item<double>(), 1e-10);
  dense_loss.backward();
  blocked_loss.backward();
  auto expected = dense->named_parameters();
  for (const auto& p : blocked->named_parameters())
    ASSERT_TRUE(torch::allclose(p.value().grad(), expected[p.key()].grad(), 1e-9, 1e-12))
        << p.key();
}

TEST(LlamaModel, BlockwiseAttentionInTheModelMatchesDense) {
  LlamaConfig c = llama_preset("tiny");
  ModelOptions dense_options, block_options;
  dense_options.dtype = block_options.dtype = at::kDouble;
  block_options.attention_block = 4;  // rows of 20 tokens go blockwise
  LlamaForCausalLM dense(c, dense_options), blocked(c, block_options);
  dense->initialize(8);
  blocked->initialize(8);
  PackedBatch batch =
      make_packed_batch({{{5, 9, 200, 31, 7, 1, 2}, {3, 250, 4, 4, 4, 9}}, {{17, 18, 19}}}, 20);
  EXPECT_TRUE(torch::allclose(blocked->logits(batch), dense->logits(batch), 1e-10, 1e-10));
}

TEST(LlamaOps, FusedBf16RopeAndItsGradientMatchFp64) {
  torch::manual_seed(9);
  LlamaConfig c = llama_preset("tiny");
  const int64_t b = 2, t = 7, heads = 3, d = c.head_dim;
  at::Tensor positions = torch::tensor({{0, 1, 2, 0, 1, 5, 9}, {3, 4, 5, 6, 7, 8, 100}});
  auto [cos, sin] = rope_tables(rope_inv_freq(c), positions);
  at::Tensor x = torch::randn({b, t, heads, d}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor g = torch::randn({b, t, heads, d}).to(at::kBFloat16);
  at::Tensor out = apply_rope_bthd(x, cos, sin);
  out.backward(g);
  // fp64: out = x * cos + rotate_half(x) * sin; its transpose for the gradient.
  auto rotate_half = [&](const at::Tensor& v) {
    return at::cat({-v.narrow(-1, d / 2, d / 2), v.narrow(-1, 0, d / 2)}, -1);
  };
  at::Tensor xd = x.detach().to(at::kDouble), gd = g.to(at::kDouble);
  at::Tensor cd = cos.to(at::kDouble).unsqueeze(2), sd = sin.to(at::kDouble).unsqueeze(2);
  at::Tensor ref = xd * cd + rotate_half(xd) * sd;
  at::Tensor ref_grad = gd * cd - rotate_half(gd * sd);  // rotate_half^T = -rotate_half
  at::Tensor bound = (xd.abs() + rotate_half(xd).abs()) / 256.0;
  EXPECT_TRUE(((out.to(at::kDouble) - ref).abs() <= bound).all().item<bool>());
  at::Tensor gbound = (gd.abs() + rotate_half(gd).abs()) / 256.0;
  EXPECT_TRUE(((x.grad().to(at::kDouble) - ref_grad).abs() <= gbound).all().item<bool>());
}

TEST(LlamaOps, FusedBf16SwigluMatchesFp64WithinOneRounding) {
  torch::manual_seed(8);
  const int64_t n = 100003;  // odd, several parallel chunks
  at::Tensor gate = (torch::randn({n}) * 4).to(at::kBFloat16).requires_grad_(true);
  at::Tensor up = torch::randn({n}).to(at::kBFloat16).requires_grad_(true);
  at::Tensor grad = torch::randn({n}).to(at::kBFloat16);
  at::Tensor out = swiglu(gate, up);
  out.backward(grad);
  // fp64 reference of the same bf16 inputs, by the formula.
  at::Tensor g = gate.detach().to(at::kDouble), u = up.detach().to(at::kDouble);
  at::Tensor dy = grad.to(at::kDouble), s = 1.0 / (1.0 + (-g).exp());
  at::Tensor ref = g * s * u;
  at::Tensor ref_dg = dy * u * s * (1 + g * (1 - s)), ref_du = dy * g * s;
  // One bf16 rounding (2^-9 relative) plus fp32 math: within 2^-8 of each value.
  auto within = [](const at::Tensor& got, const at::Tensor& want) {
    return ((got.to(at::kDouble) - want).abs() <= want.abs() * (1.0 / 256) + 1e-30)
        .all()
        .item<bool>();
  };
  EXPECT_TRUE(within(out, ref));
  EXPECT_TRUE(within(gate.grad(), ref_dg));
  EXPECT_TRUE(within(up.grad(), ref_du));
  // NaN propagates.
  at::Tensor nan_gate = torch::full({3}, NAN).to(at::kBFloat16);
  EXPECT_TRUE(swiglu(nan_gate, torch::ones({3}).to(at::kBFloat16)).isnan().all().item<bool>());
}

TEST(LlamaOps, SequenceIdsFromPositions) {
  at::Tensor pos = torch::tensor({{3, 4, 0, 1, 2, 0}}, torch::kLong);
  at::Tensor expected = torch::tensor({{0, 0, 1, 1, 1, 2}}, torch::kLong);
  EXPECT_TRUE(sequence_ids_from_positions(pos).equal(expected));
}

TEST(LlamaOps, ChunkedCrossEntropyMatchesFullLogitsAndGradients) {
  torch::manual_seed(4);
  at::Tensor h = torch::randn({13, 6}, torch::kDouble).requires_grad_(true);
  at::Tensor w = torch::randn({9, 6}, torch::kDouble).requires_grad_(true);
  at::Tensor labels = torch::tensor({1, -100, 3, 8, 0, 0, -100, 5, 2, 7, 4, 1, -100}, torch::kLong);
  at::Tensor got = chunked_cross_entropy_sum(h, w, labels, 4);  // chunks of 4, 4, 4, 1
  // Reference: an explicit log-sum-exp in fp64, differentiated by autograd.
  at::Tensor logits = at::matmul(h, w.t());
  at::Tensor lse =
      (logits - std::get<0>(logits.max(1, true))).exp().sum(1).log() + std::get<0>(logits.max(1));
  at::Tensor valid = labels.ne(-100);
  at::Tensor expected =
      ((lse - logits.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1)) * valid).sum();
  EXPECT_NEAR(got.item<double>(), expected.item<double>(), 1e-5);
  auto g_got = torch::autograd::grad({got}, {h, w});
  auto g_ref = torch::autograd::grad({expected}, {h, w});
  EXPECT_TRUE(torch::allclose(g_got[0], g_ref[0], 1e-10, 1e-10));
  EXPECT_TRUE(torch::allclose(g_got[1], g_ref[1], 1e-10, 1e-10));
}

// ---------------------------------------------------------------- the model

TEST(LlamaModel, ParametersAreTheHuggingFaceTensorsOfTheConfig) {
  LlamaConfig c = llama_preset("tiny");
  c.qkv_bias = true;  // Qwen2-style biases appear under their HF names too
  auto model = make_model(c, at::kFloat);
  auto expected = llama_tensor_shapes(c);
  auto params = model->named_parameters();
  ASSERT_EQ(params.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(params[i].key(), expected[i].first);
    EXPECT_EQ(params[i].value().sizes().vec(), expected[i].second) << expected[i].first;
  }
  EXPECT_EQ(expected[2].first, "model.layers.0.self_attn.q_proj.bias");
  int64_t total = 0;
  for (auto& p : params) total += p.value().numel();
  EXPECT_EQ(total, c.num_parameters());
}

TEST(LlamaModel, PackedRowEqualsItsSamplesRunAlone) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kDouble);
  std::vector<std::vector<int64_t>> samples = {
      {5, 9, 200, 31, 7}, {1, 2, 3}, {250, 4, 4, 4, 4, 9, 17}};
  PackedBatch packed = make_packed_batch({samples}, 20);  // 15 tokens + 5 padding
  at::Tensor packed_logits = model->logits(packed);
  double packed_loss = model->loss_sum(packed).item<double>();
  double alone_loss = 0;
  int64_t offset = 0;
  for (const auto& sample : samples) {
    PackedBatch alone = make_packed_batch({{sample}}, static_cast<int64_t>(sample.size()));
    at::Tensor logits = model->logits(alone);
    alone_loss += model->loss_sum(alone).item<double>();
    at::Tensor slice = packed_logits.narrow(1, offset, static_cast<int64_t>(sample.size()));
    EXPECT_TRUE(torch::allclose(slice, logits, 1e-9, 1e-9)) << "sample at offset " << offset;
    offset += static_cast<int64_t>(sample.size());
  }
  EXPECT_NEAR(packed_loss, alone_loss, 1e-6);
  EXPECT_TRUE(std::isfinite(packed_logits.sum().item<double>()));  // padding rows stay finite
}

TEST(LlamaModel, GradientsMatchFiniteDifferencesAndCheckpointingChangesNothing) {
  LlamaConfig c = micro_config();
  auto model = make_model(c, at::kDouble, 11);
  PackedBatch batch = make_packed_batch({{{1, 2, 3, 4}, {5, 6, 7}}, {{8, 9, 10, 0, 1, 2}}}, 8);
  model->zero_grad();
  model->loss_sum(batch).backward();
  std::map<std::string, at::Tensor> grads;
  for (auto& p : model->named_parameters()) grads[p.key()] = p.value().grad().clone();

  torch::NoGradGuard no_grad;
  int checked = 0;
  for (auto& p : model->named_parameters()) {
    at::Tensor flat = p.value().view({-1});
    for (int64_t idx : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double saved = flat[idx].item<double>(), eps = 1e-6;
      flat[idx] = saved + eps;
      double up = model->loss_sum(batch).item<double>();
      flat[idx] = saved - eps;
      double down = model->loss_sum(batch).item<double>();
      flat[idx] = saved;
      double numeric = (up - down) / (2 * eps);
      double analytic = grads[p.key()].view({-1})[idx].item<double>();
      ASSERT_NEAR(analytic, numeric, 1e-6 * (1 + std::fabs(numeric)))
          << p.key() << "[" << idx << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);

  torch::AutoGradMode grad_on(true);
  model->set_activation_checkpointing(true);
  model->zero_grad();
  model->loss_sum(batch).backward();
  for (auto& p : model->named_parameters())
    EXPECT_TRUE(torch::allclose(p.value().grad(), grads[p.key()], 1e-12, 1e-14)) << p.key();
}

TEST(LlamaModel, CheckpointingWithFrozenEmbeddingsStillGivesLayerGradients) {
  LlamaConfig c = micro_config();
  auto model = make_model(c, at::kDouble, 12);
  PackedBatch batch = make_packed_batch({{{1, 2, 3, 4, 5}}}, 6);
  model->named_parameters()["model.embed_tokens.weight"].set_requires_grad(false);
  model->loss_sum(batch).backward();
  std::map<std::string, at::Tensor> plain;
  for (auto& p : model->named_parameters())
    if (p.value().requires_grad()) plain[p.key()] = p.value().grad().clone();
  model->zero_grad();
  model->set_activation_checkpointing(true);
  model->loss_sum(batch).backward();
  for (auto& [name, grad] : plain) {
    at::Tensor got = model->named_parameters()[name].grad();
    ASSERT_TRUE(got.defined()) << name << " lost its gradient under checkpointing";
    EXPECT_TRUE(torch::allclose(got, grad, 1e-12, 1e-14)) << name;
  }
}

TEST(LlamaModel, LabelsOutsideTheVocabularyAreUserErrors) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kFloat);
  PackedBatch batch = make_packed_batch({{{1, 2, 3}}}, 4);
  batch.labels[0][1] = -1;  // a padding convention from elsewhere, not ours
  EXPECT_THAT([&] { model->loss_sum(batch); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("[0, 259) or -100")));
}

// Input ids are checked like labels, in the packed forward and in a KV-cache step (which also
// needs at least one token): a UserError naming the id, not libtorch's index error.
TEST(LlamaModel, InputIdsOutsideTheVocabularyAreUserErrors) {
  auto model = make_model(llama_preset("tiny"), at::kFloat);
  PackedBatch batch = make_packed_batch({{{1, 2, 3}}}, 4);
  batch.input_ids[0][2] = 259;
  EXPECT_THAT([&] { model->logits(batch); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("input id 259 is outside [0, 259)")));
  KVCache cache = model->make_cache(1, 4);
  EXPECT_THAT(
      [&] {
        model->decode_step(torch::tensor({{1, -5}}, torch::kLong), cache);
      },
      ::testing::ThrowsMessage<UserError>(HasSubstr("input id -5 is outside [0, 259)")));
  EXPECT_THAT(
      [&] {
        model->decode_step(torch::zeros({1, 0}, torch::kLong), cache);
      },
      ::testing::ThrowsMessage<UserError>(HasSubstr("no tokens")));
  EXPECT_EQ(cache.length, 0);
}

TEST(LlamaModel, Bf16ForwardStaysWithinTwoPercentOfFp32) {
  LlamaConfig c = llama_preset("tiny");
  auto fp32 = make_model(c, at::kFloat, 3);
  auto bf16 = make_model(c, at::kBFloat16, 3);  // the same seed: bf16-rounded copies
  PackedBatch batch =
      make_packed_batch({{{3, 1, 4, 1, 5, 9, 2, 6}, {5, 3, 5}}, {{8, 9, 7, 9, 3, 2, 3, 8, 4}}}, 16);
  at::Tensor a = fp32->logits(batch), b = bf16->logits(batch);
  double relative = ((a - b).abs().mean() / a.abs().mean()).item<double>();
  EXPECT_LT(relative, 0.02);
  double loss32 = fp32->loss_sum(batch).item<double>(),
         loss16 = bf16->loss_sum(batch).item<double>();
  EXPECT_NEAR(loss16, loss32, 0.01 * loss32);
}

TEST(LlamaModel, SlidingWindowHidesKeysBeyondTheWindow) {
  at::Tensor seq = torch::zeros({1, 6}, torch::kLong);
  at::Tensor mask = packed_causal_mask(seq, 3)[0][0];
  EXPECT_TRUE(mask[5][3].item<bool>());
  EXPECT_FALSE(mask[5][2].item<bool>());
  EXPECT_FALSE(mask[2][3].item<bool>());
}

// ---------------------------------------------------------------- attention memory

// The peak of the bytes libtorch holds on the CPU while an instance lives: every CPU tensor is
// allocated through c10's registered CPU allocator, which this wraps (the counters outlive the
// scope, so tensors freed later are still subtracted safely).
class PeakCpuBytes {
 public:
  PeakCpuBytes() : base_(c10::GetCPUAllocator()) {
    counting().base = base_;
    counting().peak = counting().live.load();
    start_ = counting().live.load();
    c10::SetCPUAllocator(&counting(), kPriority);
  }
  ~PeakCpuBytes() { c10::SetCPUAllocator(base_, kPriority); }
  int64_t bytes() const { return counting().peak.load() - start_; }

 private:
  struct Counting final : c10::Allocator {
    c10::Allocator* base = nullptr;
    mutable std::atomic<int64_t> live{0}, peak{0};
    struct Held {
      c10::DataPtr inner;
      int64_t n;
      Counting* owner;
    };
    c10::DataPtr allocate(size_t n) const override {
      c10::DataPtr inner = base->allocate(n);
      void* data = inner.get();
      const c10::Device device = inner.device();
      const int64_t now = live.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
      for (int64_t seen = peak.load(); now > seen && !peak.compare_exchange_weak(seen, now);) {
      }
      auto* held = new Held{std::move(inner), static_cast<int64_t>(n), const_cast<Counting*>(this)};
      return {data, held, &release, device};
    }
    static void release(void* p) {
      auto* held = static_cast<Held*>(p);
      held->owner->live.fetch_sub(held->n);
      delete held;
    }
  };
  static Counting& counting() {
    static Counting* instance = new Counting();  // never destroyed: late frees still count down
    return *instance;
  }
  static constexpr uint8_t kPriority = 200;
  c10::Allocator* base_;
  int64_t start_ = 0;
};

// docs/model.md: a layer keeps O(T x d) for attention. A row of T = 4096 tokens through the micro
// model (forward and backward, plain, sliding-window with recompute, and a KV-cache prefill) must
// never hold as many bytes as one [T, T] bool mask (16 MiB; the [T, T] bias of the dense mask took
// 100 MiB here); blockwise attention in blocks of 32 needs under 9 MiB.
TEST(LlamaModel, LongRowsNeverHoldATimesTMask) {
  const int64_t t = 4096;
  std::vector<int64_t> first(2500), second(1500), prompt(t);
  for (size_t i = 0; i < first.size(); ++i) first[i] = static_cast<int64_t>(i * 7 % 11);
  for (size_t i = 0; i < second.size(); ++i) second[i] = static_cast<int64_t>(i * 5 % 11);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int64_t>(i * 3 % 11);
  const PackedBatch batch = make_packed_batch({{first, second}}, t);  // 96 padding tokens
  for (int64_t window : {0, 100}) {
    LlamaConfig c = micro_config();
    c.model_type = window > 0 ? "mistral" : "llama";
    c.sliding_window = window;
    ModelOptions options;
    options.dtype = at::kFloat;
    options.attention_block = 32;
    options.activation_checkpointing = window > 0;
    LlamaForCausalLM model(c, options);
    model->initialize(3);
    int64_t training_peak = 0;
    {
      PeakCpuBytes peak;
      model->loss_sum(batch).backward();
      training_peak = peak.bytes();
    }
    EXPECT_LT(training_peak, t * t) << "window " << window;
    KVCache cache = model->make_cache(1, t);
    at::Tensor ids = torch::tensor(prompt, torch::kLong).unsqueeze(0);
    PeakCpuBytes peak;
    model->decode_step(ids, cache);
    EXPECT_LT(peak.bytes(), t * t) << "prefill, window " << window;
  }
}

// ---------------------------------------------------------------- weights on disk

std::vector<uint8_t> file_tensor_bytes(const std::string& dir, const std::string& name) {
  SafetensorsModel weights(dir);
  const auto& located = weights.at(name);
  return std::vector<uint8_t>(located.bytes(), located.bytes() + located.info->nbytes());
}

TEST(LlamaWeights, SaveLoadSaveIsBitIdenticalAndShards) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kFloat, 5);
  const std::string first = temp_dir("first"), second = temp_dir("second");
  save_llama_model(model, first, at::kBFloat16, 64 * 1024);  // small shards: several files
  ASSERT_TRUE(std::filesystem::exists(first + "/model.safetensors.index.json"));
  ASSERT_TRUE(std::filesystem::exists(first + "/config.json"));
  ASSERT_TRUE(std::filesystem::exists(first + "/generation_config.json"));
  LlamaConfig reloaded_config = load_llama_config(first);
  EXPECT_EQ(reloaded_config.num_key_value_heads, c.num_key_value_heads);
  auto loaded = make_model(reloaded_config, at::kBFloat16, 99);
  load_llama_weights(loaded, SafetensorsModel(first));
  save_llama_model(loaded, second, at::kBFloat16);
  EXPECT_FALSE(std::filesystem::exists(second + "/model.safetensors.index.json"));
  SafetensorsModel a(first), b(second);
  ASSERT_EQ(a.names(), b.names());
  for (const auto& name : a.names())
    ASSERT_EQ(file_tensor_bytes(first, name), file_tensor_bytes(second, name)) << name;
  // And the loaded parameters are the bf16 rounding of the originals.
  auto original = model->named_parameters();
  for (auto& p : loaded->named_parameters())
    ASSERT_TRUE(p.value().equal(original[p.key()].to(at::kBFloat16))) << p.key();
}

void write_weights(const std::string& dir, LlamaForCausalLM& model,
                   const std::function<void(std::vector<TensorBytes>&)>& edit,
                   std::vector<at::Tensor>& keep) {
  std::vector<TensorBytes> tensors;
  for (auto& p : model->named_parameters()) {
    keep.push_back(p.value().detach().contiguous());
    tensors.push_back({p.key(),
                       StDtype::kF32,
                       keep.back().sizes().vec(),
                       keep.back().data_ptr(),
                       static_cast<uint64_t>(keep.back().nbytes()),
                       {}});
  }
  edit(tensors);
  write_safetensors(dir + "/model.safetensors", tensors);
}

TEST(LlamaWeights, MissingExtraAndMisShapedTensorsAreNamed) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kFloat);
  std::vector<at::Tensor> keep;
  const std::string dir = temp_dir("errors");
  auto load_error = [&](const std::function<void(std::vector<TensorBytes>&)>& edit) {
    write_weights(dir, model, edit, keep);
    auto target = make_model(c, at::kFloat);
    try {
      load_llama_weights(target, SafetensorsModel(dir));
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto named = [](std::vector<TensorBytes>& t, const std::string& name) -> TensorBytes& {
    for (auto& x : t)
      if (x.name == name) return x;
    throw std::runtime_error("no tensor " + name);
  };
  const std::string k_proj = "model.layers.0.self_attn.k_proj.weight";
  EXPECT_THAT(load_error([&](auto& t) { t.erase(t.begin() + (&named(t, k_proj) - t.data())); }),
              HasSubstr("missing tensor '" + k_proj + "'"));
  at::Tensor extra = torch::zeros({2});
  EXPECT_THAT(
      load_error([&](auto& t) {
        t.push_back(
            {"model.layers.9.mlp.up_proj.weight", StDtype::kF32, {2}, extra.data_ptr(), 8, {}});
      }),
      HasSubstr("'model.layers.9.mlp.up_proj.weight', which a llama"));
  EXPECT_EQ(load_error([&](auto& t) {
              t.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq",
                           StDtype::kF32,
                           {2},
                           extra.data_ptr(),
                           8,
                           {}});
            }),
            "no error");  // the documented ignore rule
  EXPECT_THAT(load_error([&](auto& t) {
                auto& k = named(t, k_proj);  // [32, 64] written as [64, 32]
                k.shape = {k.shape[1], k.shape[0]};
              }),
              HasSubstr("tensor '" + k_proj + "' has shape [64, 32], the config needs [32, 64]"));
}

TEST(LlamaWeights, TruncatedFileFailsWithTheRule) {
  LlamaConfig c = llama_preset("tiny");
  auto model = make_model(c, at::kFloat);
  const std::string dir = temp_dir("truncated");
  save_llama_model(model, dir, at::kFloat);
  std::filesystem::resize_file(dir + "/model.safetensors",
                               std::filesystem::file_size(dir + "/model.safetensors") - 10);
  EXPECT_THAT([&] { SafetensorsModel weights(dir); },
              ::testing::ThrowsMessage<UserError>(HasSubstr("tensors cover")));
}

// A config.json whose sizes disagree with the checkpoint beside it fails when it is read (headers
// only), naming config.json and the key, before a model the size of the config is ever built.
TEST(LlamaWeights, ConfigSizesAreCheckedAgainstTheCheckpointWhenTheConfigIsRead) {
  auto model = make_model(llama_preset("tiny"), at::kFloat);
  const std::string dir = temp_dir("oversized");
  save_llama_model(model, dir, at::kFloat);
  const std::string path = dir + "/config.json";
  std::string original;
  {
    std::ifstream in(path);
    original.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto error_with = [&](const std::string& key, const std::string& value) {
    std::string text = original;
    const size_t at = text.find("\"" + key + "\": ");
    EXPECT_NE(at, std::string::npos) << key;
    const size_t begin = text.find(": ", at) + 2, end = text.find_first_of(",\n", begin);
    text.replace(begin, end - begin, value);
    std::ofstream(path) << text;
    try {
      load_llama_config(dir);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error_with("vocab_size", "1000000"),
              AllOf(HasSubstr(path), HasSubstr("vocab_size"),
                    HasSubstr("'model.embed_tokens.weight' has shape [259, 64]")));
  EXPECT_THAT(error_with("num_hidden_layers", "4000"),
              AllOf(HasSubstr(path), HasSubstr("num_hidden_layers"), HasSubstr("2 layers")));
  EXPECT_THAT(error_with("intermediate_size", "100000"),
              AllOf(HasSubstr("intermediate_size"), HasSubstr("mlp.gate_proj.weight")));
  EXPECT_EQ(error_with("vocab_size", "259"), "no error");
}

// A 4-bit weight whose stored tensors do not fit the config is refused before a buffer the size
// the config implies is allocated.
TEST(LlamaWeights, Bnb4bitTensorsAreCheckedBeforeTheConfigSizedBufferExists) {
  const std::string dir = temp_dir("bnb_sizes");
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  const std::string state =
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096]})";
  std::vector<uint8_t> codes(10, 0);
  write_safetensors(dir + "/model.safetensors",
                    {{name + ".quant_state.bitsandbytes__nf4",
                      StDtype::kU8,
                      {static_cast<int64_t>(state.size())},
                      state.data(),
                      state.size(),
                      {}},
                     {name, StDtype::kU8, {10, 1}, codes.data(), codes.size(), {}}});
  SafetensorsModel weights(dir);
  PeakCpuBytes peak;
  EXPECT_THAT(
      [&] {
        read_bnb_nf4(weights, name, {4096, 4096}, false);
      },
      ::testing::ThrowsMessage<UserError>(HasSubstr("has 10 elements, expected 8388608")));
  EXPECT_LT(peak.bytes(), 1 << 20);  // the 8 MiB of codes the config implies never exist
}

// ---------------------------------------------------------------- config.json

TEST(LlamaConfigJson, ReadsLlama31Mistral7bAndQwen2Configs) {
  LlamaConfig l =
      parse_llama_config(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    "rope_type": "llama3"}, "tie_word_embeddings": false, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16", "use_cache": true})",
                         "llama31.json");
  EXPECT_EQ(l.head_dim, 128);
  EXPECT_EQ(l.rope_scaling.type, "llama3");
  EXPECT_EQ(l.eos_token_ids.size(), 3u);
  EXPECT_EQ(l.num_parameters(), 8030261248);  // Llama 3.1 8B
  LlamaConfig m = parse_llama_config(R"({"model_type": "mistral", "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "sliding_window": 4096,
    "rope_theta": 10000.0})",
                                     "mistral.json");
  EXPECT_EQ(m.sliding_window, 4096);
  LlamaConfig q = parse_llama_config(R"({"model_type": "qwen2", "vocab_size": 151936,
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": true,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})",
                                     "qwen2.json");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  EXPECT_EQ(q.rope_theta, 1000000.0);
  EXPECT_EQ(q.num_parameters(), 494032768);  // Qwen2-0.5B
}

TEST(LlamaConfigJson, UnsupportedSettingsAreErrorsNamingTheKey) {
  const std::string base = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2)";
  auto error = [&](const std::string& extra) {
    try {
      parse_llama_config("{" + base + extra + "}", "cfg.json");
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error(R"(, "model_type": "gpt2")"), HasSubstr("cfg.json: key 'model_type'"));
  EXPECT_THAT(error(R"(, "model_type": "llama", "hidden_act": "gelu")"), HasSubstr("'hidden_act'"));
  EXPECT_THAT(
      error(R"(, "model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4})"),
      HasSubstr("rope type 'yarn' is not supported"));
  EXPECT_THAT(error(R"(, "model_type": "llama", "num_key_value_heads": 3)"),
              HasSubstr("'num_key_value_heads'"));
  EXPECT_THAT(error(R"(, "model_type": "llama", "partial_rotary_factor": 0.5)"),
              HasSubstr("'partial_rotary_factor'"));
  EXPECT_THAT(
      error(R"(, "model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8})"),
      HasSubstr("'rope_scaling.low_freq_factor': is required"));
  EXPECT_THAT(error(R"(, "model_type": "llama", "eos_token_id": [1, null])"),
              HasSubstr("'eos_token_id'"));
  EXPECT_THAT(error(R"(, "model_type": "llama", "bos_token_id": 10)"),
              HasSubstr("cfg.json: key 'bos_token_id': 10 is outside the vocabulary [0, 10)"));
  EXPECT_THAT(error(R"(, "model_type": "llama", "eos_token_id": [2, -1])"),
              HasSubstr("key 'eos_token_id': -1 is outside the vocabulary"));
  EXPECT_THAT(error(R"(, "model_type": "llama", "bos_token_id": 9, "eos_token_id": 0)"),
              HasSubstr("no error"));
  EXPECT_THAT(error(R"(, "model_type": "llama")"), HasSubstr("no error"));
  EXPECT_EQ(
      parse_llama_config("{" + base + R"(, "model_type": "mistral"})", "m.json").sliding_window,
      4096);  // Mistral's default when the key is absent
}

// Sizes are bounded before anything is built from them: a key beyond any real model's, or sizes
// whose parameter count no checkpoint could hold (the count is computed without overflow).
TEST(LlamaConfigJson, SizesNoCheckpointCouldHoldAreErrorsNamingTheKey) {
  auto error = [&](const std::string& vocab, const std::string& hidden, const std::string& inter,
                   const std::string& layers, const std::string& extra = "") {
    try {
      parse_llama_config(R"({"model_type": "llama", "num_attention_heads": 4, "vocab_size": )" +
                             vocab + R"(, "hidden_size": )" + hidden +
                             R"(, "intermediate_size": )" + inter + R"(, "num_hidden_layers": )" +
                             layers + extra + "}",
                         "cfg.json");
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("259", "64", "176", "2"), "no error");
  EXPECT_THAT(error("259", "64", "176", "1000000000"),
              HasSubstr("cfg.json: key 'num_hidden_layers': expected <= "));
  EXPECT_THAT(error("1000000000000", "64", "176", "2"),
              HasSubstr("cfg.json: key 'vocab_size': expected <= "));
  EXPECT_THAT(error("259", "1099511627776", "176", "2"),
              HasSubstr("cfg.json: key 'hidden_size': expected <= "));
  EXPECT_THAT(error("259", "64", "176", "2", R"(, "max_position_embeddings": 4000000000000)"),
              HasSubstr("cfg.json: key 'max_position_embeddings': expected <= "));
  EXPECT_THAT(error("259", "64", "176", "2", R"(, "head_dim": 9223372036854775806)"),
              HasSubstr("cfg.json: key 'head_dim': expected <= "));
  // Every key within its bound, the product beyond any checkpoint.
  EXPECT_THAT(
      error("16000000", "1000000", "1000000", "4000", R"(, "head_dim": 128)"),
      AllOf(HasSubstr("cfg.json: keys "), HasSubstr("num_hidden_layers"), HasSubstr("parameters")));
}

}  // namespace
}  // namespace ptrain
