// AdamW, clipping and the learning-rate schedules against hand computations.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/lr_schedule.h"

namespace ptrain {
namespace {

TEST(AdamW, TwoStepsEqualTheClosedFormWithDecayOnlyWhereAsked) {
  // Two elements: the first decays, the second does not.
  at::Tensor p = torch::tensor({1.0f, -2.0f}), g = torch::zeros({2});
  AdamWOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.9;
  o.eps = 1e-3;
  o.weight_decay = 0.5;
  AdamW adam({{p, g, {{0, 1}}}}, o);
  const double lr = 0.1;
  const double grads[2][2] = {{0.5, -1.0}, {0.25, 2.0}};
  double ref[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
  for (int t = 1; t <= 2; ++t) {
    g.copy_(
        torch::tensor({static_cast<float>(grads[t - 1][0]), static_cast<float>(grads[t - 1][1])}));
    adam.step(lr);
    for (int i = 0; i < 2; ++i) {
      if (i == 0) ref[i] *= 1 - lr * o.weight_decay;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * grads[t - 1][i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * grads[t - 1][i] * grads[t - 1][i];
      const double m_hat = m[i] / (1 - std::pow(o.beta1, t));
      const double v_hat_sqrt = std::sqrt(v[i]) / std::sqrt(1 - std::pow(o.beta2, t));
      ref[i] -= lr * m_hat / (v_hat_sqrt + o.eps);
    }
    EXPECT_NEAR(p[0].item<double>(), ref[0], 1e-6) << "step " << t;
    EXPECT_NEAR(p[1].item<double>(), ref[1], 1e-6) << "step " << t;
  }
  EXPECT_EQ(adam.steps(), 2);
  EXPECT_EQ(adam.state(), nlohmann::json({{"steps", 2}}));
  EXPECT_THROW(adam.restore({{"steps", -1}}), UserError);
}

TEST(AdamW, TheFusedCpuPassEqualsTheLibtorchOpsOverDecayAndPlainSegments) {
  // A tensor long enough for several parallel chunks, with two decay ranges out of order.
  const int64_t n = 100003;
  torch::manual_seed(3);
  at::Tensor p = torch::randn({n}), g = torch::zeros({n});
  at::Tensor ref = p.clone(), m = torch::zeros({n}), v = torch::zeros({n});
  const std::vector<std::pair<int64_t, int64_t>> decay = {{70000, n}, {10, 5000}};
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW adam({{p, g, decay}}, o);
  const double lr = 1e-2;
  for (int t = 1; t <= 3; ++t) {
    g.copy_(torch::randn({n}) * (t == 2 ? 1e-4 : 1.0));
    adam.step(lr);
    // torch.optim.AdamW's sequence of ops.
    for (const auto& [begin, end] : decay)
      ref.narrow(0, begin, end - begin).mul_(1.0 - lr * o.weight_decay);
    m.lerp_(g, 1.0 - o.beta1);
    v.mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
    const double bias2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, t));
    ref.addcdiv_(m, (v.sqrt() / bias2_sqrt).add_(o.eps), -lr / (1.0 - std::pow(o.beta1, t)));
    // fp32 rounding of the same formula: a few ulps of the parameter.
    EXPECT_LE((p - ref).abs().max().item<double>(), 1e-6) << "step " << t;
    EXPECT_LE((adam.exp_avg()[0] - m).abs().max().item<double>(), 1e-6) << "step " << t;
    EXPECT_LE((adam.exp_avg_sq()[0] - v).abs().max().item<double>(), 1e-6) << "step " << t;
  }
}

TEST(Clipping, ScalesByMaxNormOverTheNormOnlyAboveIt) {
  at::Tensor a = torch::tensor({3.0f}), b = torch::tensor({4.0f});
  std::vector<OptimizedTensor> t = {{torch::zeros({1}), a, {}}, {torch::zeros({1}), b, {}}};
  const double norm = std::sqrt(squared_norm(t));
  EXPECT_DOUBLE_EQ(norm, 5.0);
  clip_gradients(t, norm, 10.0);  // below the bound: unchanged
  EXPECT_FLOAT_EQ(a.item<float>(), 3.0f);
  clip_gradients(t, norm, 1.0);
  EXPECT_FLOAT_EQ(a.item<float>(), static_cast<float>(3.0 / (5.0 + 1e-6)));
  EXPECT_FLOAT_EQ(b.item<float>(), static_cast<float>(4.0 / (5.0 + 1e-6)));
  clip_gradients(t, 5.0, 0.0);  // 0 disables clipping
  EXPECT_FLOAT_EQ(b.item<float>(), static_cast<float>(4.0 / (5.0 + 1e-6)));
}

TEST(LrSchedule, HuggingFaceFactorsByHand) {
  const double lr = 2.0;
  const LrSchedule cosine("cosine", lr, 10, 2), linear("linear", lr, 10, 2),
      constant("constant", lr, 10, 2), warm("constant_with_warmup", lr, 10, 2);
  EXPECT_DOUBLE_EQ(cosine.at(0), 0.0);
  EXPECT_DOUBLE_EQ(cosine.at(1), 1.0);  // 1/2 of the way through warmup
  EXPECT_DOUBLE_EQ(cosine.at(2), 2.0);
  EXPECT_NEAR(cosine.at(6), 1.0, 1e-12);  // half way: 0.5 (1 + cos(pi / 2))
  EXPECT_NEAR(cosine.at(10), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(linear.at(1), 1.0);
  EXPECT_DOUBLE_EQ(linear.at(6), 1.0);  // (10 - 6) / 8
  EXPECT_DOUBLE_EQ(linear.at(9), 0.25);
  EXPECT_DOUBLE_EQ(constant.at(0), 2.0);  // constant ignores warmup, as HF's does
  EXPECT_DOUBLE_EQ(warm.at(1), 1.0);
  EXPECT_DOUBLE_EQ(warm.at(7), 2.0);
  EXPECT_EQ(warmup_steps_for(0, 0.03, 100), 3);  // ceil, as the HF Trainer
  EXPECT_EQ(warmup_steps_for(0, 0.03, 101), 4);
  EXPECT_EQ(warmup_steps_for(5, 0.0, 100), 5);
  EXPECT_THAT([] { LrSchedule("polynomial", 1, 1, 0); },
              ::testing::ThrowsMessage<UserError>(::testing::HasSubstr("lr_scheduler")));
}

}  // namespace
}  // namespace ptrain
