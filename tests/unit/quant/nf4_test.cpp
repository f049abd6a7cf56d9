// NF4 against its definition (FORMATS.md): codes and bytes computed by hand or by brute-force
// nearest-level search in fp64, the dynamic map against bitsandbytes' recipe written with libtorch
// ops, every dequantization kernel against fp32 dequantization rounded by libtorch, and the
// device-generic dequantization (libtorch ops, what a GPU without a kernel of its own runs)
// against the CPU kernels bit for bit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "quant/nf4.h"
#include "quant/nf4_weight.h"

namespace ptrain {
namespace {

float f32_at(const at::Tensor& storage, int64_t offset) {
  float v;
  std::memcpy(&v, storage.data_ptr<uint8_t>() + offset, 4);
  return v;
}

int nearest_level(double x) {  // brute force over the 16 levels, fp64
  int best = 0;
  for (int i = 1; i < 16; ++i)
    if (std::fabs(x - kNf4Levels[i]) < std::fabs(x - kNf4Levels[best])) best = i;
  return best;
}

TEST(Nf4, HandComputedBytesForAnOddPartialBlock) {
  // absmax 2: normalised 0.5 -> 12 (0.5 < midpoint 0.5017), -0.25 -> 4, 0 -> 7, 0.15 -> 9,
  // -1 -> 0; five codes pack as C4 79 00 (the sixth nibble is padding).
  at::Tensor w = torch::tensor({1.0f, -0.5f, 0.0f, 0.3f, -2.0f});
  Nf4Weight q = Nf4Weight::quantize(w, /*double_quant=*/false);
  ASSERT_EQ(q.layout.bytes, 4 + 4);  // 3 code bytes padded to 4, one fp32 absmax
  const uint8_t* b = q.storage.data_ptr<uint8_t>();
  EXPECT_EQ(b[0], 0xC4);
  EXPECT_EQ(b[1], 0x79);
  EXPECT_EQ(b[2], 0x00);
  EXPECT_EQ(f32_at(q.storage, q.layout.absmax_offset), 2.0f);
  at::Tensor back = q.dequantize(at::kFloat);
  at::Tensor expected =
      torch::tensor({kNf4Levels[12] * 2, kNf4Levels[4] * 2, 0.0f, kNf4Levels[9] * 2, -2.0f});
  EXPECT_TRUE(torch::equal(back, expected));
}

TEST(Nf4, CodesAreTheNearestLevelInEveryBlockIncludingThePartialLast) {
  torch::manual_seed(1);
  const int64_t n = 64 * 5 + 37;  // 6 blocks, the last with 37 values (odd)
  at::Tensor w = torch::randn({n}) * torch::linspace(0.1, 3.0, n);
  Nf4Weight q = Nf4Weight::quantize(w, false);
  ASSERT_EQ(q.layout.blocks, 6);
  const uint8_t* codes = q.storage.data_ptr<uint8_t>();
  const float* wp = w.data_ptr<float>();
  int checked = 0;
  for (int64_t blk = 0; blk < 6; ++blk) {
    const int64_t begin = blk * 64, end = std::min<int64_t>(n, begin + 64);
    double absmax = 0;
    for (int64_t i = begin; i < end; ++i) absmax = std::max(absmax, std::fabs((double)wp[i]));
    EXPECT_EQ(f32_at(q.storage, q.layout.absmax_offset + 4 * blk), (float)absmax);
    for (int64_t i = begin; i < end; ++i) {
      const double x = wp[i] / absmax;
      // Skip values within fp32 rounding of a midpoint, where fp64 and fp32 may disagree.
      bool near_tie = false;
      for (int k = 0; k < 15; ++k)
        near_tie |= std::fabs(x - (kNf4Levels[k] + (double)kNf4Levels[k + 1]) / 2) < 1e-6;
      if (near_tie) continue;
      const int code = (i % 2 == 0) ? codes[i / 2] >> 4 : codes[i / 2] & 15;
      ASSERT_EQ(code, nearest_level(x)) << "element " << i << " x/absmax " << x;
      ++checked;
    }
  }
  EXPECT_GT(checked, n - 5);
  EXPECT_EQ(codes[n / 2] & 15, 0);  // the padding nibble after the odd count
}

TEST(Nf4, DynamicMapIsBitsandbytesRecipe) {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), as its Python reads,
  // with libtorch ops in fp32.
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    at::Tensor b = torch::linspace(0.1, 1.0, (1 << i) + 1, torch::kFloat);
    at::Tensor means = (b.narrow(0, 0, b.size(0) - 1) + b.narrow(0, 1, b.size(0) - 1)) / 2.0;
    at::Tensor pos = std::pow(10.0, -(7 - 1) + i) * means;
    at::Tensor neg = -std::pow(10.0, -(7 - 1) + i) * means;
    for (int64_t j = 0; j < means.size(0); ++j) data.push_back(pos[j].item<float>());
    for (int64_t j = 0; j < means.size(0); ++j) data.push_back(neg[j].item<float>());
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  ASSERT_EQ(data.size(), 256u);
  const auto& map = signed_dynamic_map();
  // Within two ulps: the recipe's fp32 linspace rounds differently with the vector width ATen's
  // kernel runs at (so bitsandbytes' own map varies by ulps with the torch build and CPU; files
  // carry theirs as nested_quant_map).
  for (int i = 0; i < 256; ++i) {
    const float ulp = std::nextafter(std::fabs(data[i]), 2.0f) - std::fabs(data[i]);
    EXPECT_LE(std::fabs(map[i] - data[i]), 2 * ulp)
        << "entry " << i << ": " << map[i] << " vs " << data[i];
  }
  EXPECT_EQ(map[0], -map[254]);  // -0.99..., symmetric except the extra 1.0
  EXPECT_EQ(map[255], 1.0f);
}

TEST(Nf4, DynamicMapCodeIsTheNearestEntry) {
  const auto& map = signed_dynamic_map();
  torch::manual_seed(2);
  at::Tensor xs = torch::rand({20000}) * 2 - 1;
  xs = torch::cat({xs, torch::tensor({-1.0f, 1.0f, 0.0f, 1e-7f, -1e-7f, 0.99f})});
  for (int64_t i = 0; i < xs.size(0); ++i) {
    const float x = xs[i].item<float>();
    int best = 0;
    for (int k = 1; k < 256; ++k)
      if (std::fabs((double)x - map[k]) < std::fabs((double)x - map[best])) best = k;
    const double gap = std::fabs(std::fabs((double)x - map[best]) -
                                 std::fabs((double)x - map[dynamic_map_code(map, x)]));
    ASSERT_LE(gap, 1e-9) << "x = " << x << ": nearest " << best << " (" << map[best] << "), got "
                         << (int)dynamic_map_code(map, x);
  }
}

TEST(Nf4, DoubleQuantizedAbsmaxFollowsTheDefinition) {
  torch::manual_seed(3);
  const int64_t blocks = 300;  // two nested blocks, the second partial (44)
  at::Tensor w = torch::randn({blocks * 64 - 10}) * torch::rand({blocks * 64 - 10}).add(0.5);
  Nf4Weight dq = Nf4Weight::quantize(w, true);
  Nf4Weight single = Nf4Weight::quantize(w, false);
  ASSERT_EQ(dq.layout.blocks, blocks);
  ASSERT_EQ(dq.layout.nested_blocks, 2);
  // The same 4-bit codes either way.
  EXPECT_EQ(std::memcmp(dq.storage.data_ptr<uint8_t>(), single.storage.data_ptr<uint8_t>(),
                        dq.layout.code_bytes()),
            0);
  std::vector<double> absmax(blocks);
  double sum = 0;
  for (int64_t b = 0; b < blocks; ++b)
    sum += absmax[b] = f32_at(single.storage, 4 * b + single.layout.absmax_offset);
  const float offset = static_cast<float>(sum / blocks);
  EXPECT_EQ(f32_at(dq.storage, dq.layout.offset_offset), offset);
  const auto& map = signed_dynamic_map();
  std::vector<float> decoded(blocks);
  nf4_block_absmax(dq.storage.data_ptr<uint8_t>(), dq.layout, decoded.data());
  for (int64_t nb = 0; nb < 2; ++nb) {
    const int64_t begin = nb * 256, end = std::min<int64_t>(blocks, begin + 256);
    double m = 0;
    for (int64_t b = begin; b < end; ++b)
      m = std::max(m, (double)std::fabs((float)absmax[b] - offset));
    const float scale = f32_at(dq.storage, dq.layout.nested_absmax_offset + 4 * nb);
    EXPECT_EQ(scale, (float)m);
    for (int64_t b = begin; b < end; ++b) {
      const uint8_t q = dq.storage.data_ptr<uint8_t>()[dq.layout.absmax_offset + b];
      const double x = ((float)absmax[b] - offset) / m;
      // The stored code is a nearest map entry; decoding is map[q] * scale + offset.
      double best = 1e9;
      for (int k = 0; k < 256; ++k) best = std::min(best, std::fabs(x - map[k]));
      EXPECT_NEAR(std::fabs(x - map[q]), best, 1e-6) << "block " << b;
      EXPECT_EQ(decoded[b], map[q] * scale + offset);
      EXPECT_NEAR(decoded[b], absmax[b], 0.02 * m + 1e-6);  // the map's step near 1 is < 0.02
    }
  }
}

TEST(Nf4, EveryBf16KernelEqualsFp32DequantizationRounded) {
  // Many seeds and scales: a kernel that fused code x scale + offset into one rounding (FMA)
  // differs in about a fifth of the blocks.
  for (int64_t seed = 0; seed < 6; ++seed)
    for (int64_t n :
         {int64_t{1}, int64_t{63}, int64_t{64}, int64_t{4096 + 33}, int64_t{64 * 700}}) {
      torch::manual_seed(seed);
      at::Tensor w =
          torch::randn({n}, torch::kFloat) * (0.02 * (seed + 1)) * torch::rand({n}).add(0.1);
      for (bool double_quant : {false, true}) {
        Nf4Weight q = Nf4Weight::quantize(w, double_quant);
        at::Tensor reference = q.dequantize(at::kFloat).to(at::kBFloat16);
        EXPECT_TRUE(torch::equal(q.dequantize(at::kBFloat16), reference)) << n;
        for (const char* kernel : {"portable", "avx2", "avx512"}) {
          if (std::string(kernel) == "avx512" && !__builtin_cpu_supports("avx512bw")) continue;
          if (std::string(kernel) == "avx2" && !__builtin_cpu_supports("avx2")) continue;
          at::Tensor out = torch::empty({n}, torch::kBFloat16);
          nf4_dequantize_bf16_with(kernel, q.storage.data_ptr<uint8_t>(), q.layout, 0,
                                   q.layout.blocks, reinterpret_cast<uint16_t*>(out.data_ptr()));
          EXPECT_TRUE(torch::equal(out, reference))
              << kernel << " n=" << n << " dq=" << double_quant;
        }
      }
    }
}

TEST(Nf4, RoundTripErrorIsWithinHalfTheLevelGapTimesAbsmax) {
  torch::manual_seed(5);
  at::Tensor w = torch::randn({256, 320}, torch::kFloat) * 0.02;
  Nf4Weight q = Nf4Weight::quantize(w.to(at::kBFloat16), true);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{256, 320}));
  at::Tensor back = q.dequantize(at::kFloat);
  at::Tensor blocks = w.to(at::kBFloat16).to(at::kFloat).view({-1, 64});
  at::Tensor absmax = blocks.abs().amax(1, true);
  // Largest gap between neighbouring levels is 1 - 0.7229568 (at the ends); plus the 8-bit
  // absmax error (<= 1% of the nested scale here).
  at::Tensor err = (back.view({-1, 64}) - blocks).abs();
  EXPECT_TRUE((err <= absmax * (0.5 * (1 - 0.7229568362236023) + 0.02)).all().item<bool>());
  const double rel_rms = ((back - w).pow(2).mean() / w.pow(2).mean()).sqrt().item<double>();
  EXPECT_LT(rel_rms, 0.12);  // NF4 on Gaussian weights: about 0.1
  EXPECT_NEAR(Nf4Layout(4096 * 4096, true).bits_per_param(), 4 + 8.0 / 64 + 32.0 / (64 * 256),
              1e-4);
  EXPECT_NEAR(Nf4Layout(4096 * 4096, false).bits_per_param(), 4.5, 1e-6);
}

// The values' bits, so -0 and +0 (and NaN payloads) count as different.
at::Tensor value_bits(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16:
      return t.contiguous().view(at::kShort);
    case at::kFloat:
      return t.contiguous().view(at::kInt);
    default:
      return t.contiguous().view(at::kLong);
  }
}

TEST(Nf4, GenericDequantizationEqualsTheCpuKernelsBitForBit) {
  // Tolerance zero: both paths compute level * absmax as one fp32 product (with double
  // quantization absmax = code * scale + offset, two separate fp32 roundings) and round it once,
  // to nearest even, into the output dtype. Sizes: one value, a partial block, a partial nested
  // block with an odd count, and more than two of the generic path's 16384-block chunks.
  for (int64_t n :
       {int64_t{1}, int64_t{63}, int64_t{64 * 257 + 31}, int64_t{64 * 16384 * 2 + 64 * 3 + 17}}) {
    torch::manual_seed(n);
    // Scales that vary by block, and one all-zero block where there are several.
    at::Tensor w = torch::randn({n}) * torch::rand({n}).add(0.05) * 0.03;
    if (n > 128) w.narrow(0, 64, 64).zero_();
    for (bool double_quant : {false, true}) {
      Nf4Weight q = Nf4Weight::quantize(w.view({1, n}), double_quant);
      for (at::ScalarType dtype : {at::kBFloat16, at::kFloat, at::kDouble}) {
        at::Tensor cpu = q.dequantize(dtype), generic = nf4_dequantize_generic(q, dtype);
        ASSERT_EQ(generic.sizes(), cpu.sizes());
        ASSERT_EQ(generic.scalar_type(), dtype);
        EXPECT_TRUE(value_bits(generic).equal(value_bits(cpu)))
            << "n=" << n << " double_quant=" << double_quant << " " << c10::toString(dtype);
      }
    }
  }
}

TEST(Nf4, BothPathsReadABufferAtAnyByteOffsetOfAFlatParameter) {
  // A sharded model's NF4 buffer is a slice of a flat uint8 parameter: its fp32 statistics need
  // not be 4-byte aligned in memory.
  torch::manual_seed(6);
  const int64_t n = 64 * 300 + 5;
  for (bool double_quant : {false, true}) {
    Nf4Weight q = Nf4Weight::quantize(torch::randn({n}) * 0.02, double_quant);
    at::Tensor flat = torch::full({q.layout.bytes + 10}, 0xAB, torch::kUInt8);
    Nf4Weight sliced = q;
    sliced.storage = flat.narrow(0, 3, q.layout.bytes);
    sliced.storage.copy_(q.storage);
    const at::Tensor expected = value_bits(q.dequantize(at::kBFloat16));
    EXPECT_TRUE(value_bits(sliced.dequantize(at::kBFloat16)).equal(expected)) << double_quant;
    EXPECT_TRUE(value_bits(nf4_dequantize_generic(sliced, at::kBFloat16)).equal(expected))
        << double_quant;
  }
}

TEST(Nf4, AllZeroBlockDequantizesToZero) {
  at::Tensor w = torch::zeros({70});
  w[69] = 1.0;
  Nf4Weight q = Nf4Weight::quantize(w, true);
  at::Tensor back = q.dequantize(at::kFloat);
  EXPECT_EQ(back.narrow(0, 0, 64).abs().max().item<float>(), 0.0f);
  EXPECT_NEAR(back[69].item<float>(), 1.0f, 0.02);
}

}  // namespace
}  // namespace ptrain
