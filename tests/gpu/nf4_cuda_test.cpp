// The CUDA NF4 kernel against the CPU kernels (bit-exact). Skips, saying why, without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "quant/cuda/nf4_cuda.h"
#include "quant/nf4.h"

namespace ptrain {
namespace {

TEST(Nf4Cuda, DequantizationEqualsTheCpuKernelBitForBit) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    GTEST_SKIP() << "no CUDA device on this machine";
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (int64_t n : {int64_t{1}, int64_t{63}, int64_t{64 * 257 + 31}, int64_t{4096 * 1024}}) {
    for (bool double_quant : {false, true}) {
      std::vector<float> w(n);
      for (auto& v : w) v = normal(rng);
      Nf4Layout layout(n, double_quant);
      std::vector<uint8_t> buffer(layout.bytes);
      nf4_quantize(w.data(), layout, buffer.data());
      std::vector<uint16_t> cpu(n), gpu(n);
      nf4_dequantize_bf16_with("portable", buffer.data(), layout, 0, layout.blocks, cpu.data());
      uint8_t* d_buffer = nullptr;
      uint16_t* d_out = nullptr;
      ASSERT_EQ(cudaMalloc(&d_buffer, layout.bytes), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&d_out, n * sizeof(uint16_t)), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(d_buffer, buffer.data(), layout.bytes, cudaMemcpyHostToDevice),
                cudaSuccess);
      ASSERT_EQ(nf4_dequantize_bf16_cuda(d_buffer, layout, d_out, nullptr), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(gpu.data(), d_out, n * sizeof(uint16_t), cudaMemcpyDeviceToHost),
                cudaSuccess);
      cudaFree(d_buffer);
      cudaFree(d_out);
      EXPECT_EQ(cpu, gpu) << "n=" << n << " double_quant=" << double_quant;
    }
  }
}

TEST(Nf4Cuda, TheCheckedLaunchGivesTheSameResult) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    GTEST_SKIP() << "no CUDA device on this machine";
  const int64_t n = 64 * 33 + 5;
  std::vector<float> w(n);
  for (int64_t i = 0; i < n; ++i) w[i] = 0.001f * static_cast<float>(i % 97 - 48);
  Nf4Layout layout(n, true);
  std::vector<uint8_t> buffer(layout.bytes);
  nf4_quantize(w.data(), layout, buffer.data());
  std::vector<uint16_t> cpu(n), gpu(n);
  nf4_dequantize_bf16_with("portable", buffer.data(), layout, 0, layout.blocks, cpu.data());
  uint8_t* d_buffer = nullptr;
  uint16_t* d_out = nullptr;
  ASSERT_EQ(cudaMalloc(&d_buffer, layout.bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, n * sizeof(uint16_t)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_buffer, buffer.data(), layout.bytes, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_NO_THROW(
      nf4_dequantize_bf16_cuda_checked(d_buffer, layout, d_out, nullptr, "rank 0 on host test"));
  ASSERT_EQ(cudaMemcpy(gpu.data(), d_out, n * sizeof(uint16_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(d_buffer);
  cudaFree(d_out);
  EXPECT_EQ(cpu, gpu);
}

}  // namespace
}  // namespace ptrain
