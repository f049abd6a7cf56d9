// The model on a CUDA device against the same model on the CPU: a tiny model's loss and gradients
// (dense, and NF4 base + LoRA with dropout), KV-cache decoding, and NF4 dequantization of device
// buffers. Needs a libtorch built with CUDA and a visible device; skips, saying so, otherwise (a
// CPU-only libtorch beside a CUDA toolkit builds this test but has no CUDA tensors).
//
// Not yet run on a GPU when written (docs/gpu.md says which parts have been): the tolerances
// below are reasoned, not measured.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "model/llama.h"
#include "model/llama_config.h"
#include "model/llama_ops.h"
#include "quant/nf4_weight.h"
#include "unit/model_fixtures.h"

namespace ptrain {
namespace {

#define PTRAIN_SKIP_WITHOUT_CUDA()                                                          \
  if (!torch::cuda::is_available())                                                         \
  GTEST_SKIP() << "libtorch sees no CUDA device (torch::cuda::is_available() is false): a " \
                  "CPU-only libtorch, or no GPU or driver on this machine"

const at::Device kCuda(at::kCUDA, 0);

PackedBatch to_device(const PackedBatch& b, at::Device device) {
  return {b.input_ids.to(device), b.position_ids.to(device), b.sequence_ids.to(device),
          b.labels.to(device)};
}

PackedBatch tiny_batch() {
  return make_packed_batch(
      {{{3, 1, 4, 1, 5, 9, 2, 6}, {5, 3, 5}, {200, 100, 50}}, {{8, 9, 7, 9, 3, 2, 3, 8, 4}, {10}}},
      16);
}

// The fixtures' tiny model, moved to `device`.
LlamaForCausalLM tiny_model(at::ScalarType dtype, bool nf4_lora, at::Device device) {
  LlamaForCausalLM model = ::ptrain::tiny_model(dtype, nf4_lora);
  model->to(device);
  return model;
}

double relative(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm().clamp_min(1e-30)).item<double>();
}

TEST(ModelOnCuda, Fp32LossAndGradientsMatchTheCpu) {
  PTRAIN_SKIP_WITHOUT_CUDA();
  // fp32 matmuls without TF32 (libtorch's default; set here so the test does not depend on it):
  // the same math in another summation order, a few fp32 ulps per dot product of up to 259
  // terms (about 1e-5 relative), compounded over two layers and backward: 1e-4.
  at::globalContext().setAllowTF32CuBLAS(false);
  for (bool nf4_lora : {false, true}) {
    SCOPED_TRACE(nf4_lora ? "NF4 base + LoRA" : "dense");
    LlamaForCausalLM cpu = tiny_model(at::kFloat, nf4_lora, at::kCPU);
    LlamaForCausalLM gpu = tiny_model(at::kFloat, nf4_lora, kCuda);
    const PackedBatch batch = tiny_batch();
    const ModelRun want = run_model(cpu, batch), got = run_model(gpu, to_device(batch, kCuda));
    EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::fabs(want.loss));
    ASSERT_EQ(got.grads.size(), want.grads.size());
    for (const auto& [name, grad] : want.grads)
      EXPECT_LE(relative(got.grads.at(name), grad), 1e-4) << name;
  }
}

TEST(ModelOnCuda, Bf16LossAndGradientsStayWithinTheCpusBf16Noise) {
  PTRAIN_SKIP_WITHOUT_CUDA();
  // The GPU runs the generic SwiGLU and RoPE (the CPU's math under PortableKernelsGuard) and
  // cuBLAS bf16 matmuls (fp32 accumulation, one rounding), in other summation orders than the
  // CPU. So it is not bit-equal to either CPU run, but it is bf16 rounding noise around the same
  // exact values: its distance from the fp32 model with the same values may be at most twice the
  // CPU bf16 run's own (or 2^-7, when that is tiny), per gradient and for the loss.
  for (bool nf4_lora : {false, true}) {
    SCOPED_TRACE(nf4_lora ? "NF4 base + LoRA" : "dense");
    LlamaForCausalLM cpu = tiny_model(at::kBFloat16, nf4_lora, at::kCPU);
    LlamaForCausalLM gpu = tiny_model(at::kBFloat16, nf4_lora, kCuda);
    LlamaForCausalLM exact = tiny_model(at::kFloat, nf4_lora, at::kCPU);
    {
      torch::NoGradGuard no_grad;  // fp32 with exactly the bf16 model's values
      for (const auto& p : cpu->named_parameters())
        exact->named_parameters()[p.key()].copy_(p.value());
      for (const auto& b : cpu->named_buffers()) exact->named_buffers()[b.key()].copy_(b.value());
    }
    const PackedBatch batch = tiny_batch();
    const ModelRun reference = run_model(exact, batch);
    const ModelRun got = run_model(gpu, to_device(batch, kCuda));
    for (bool portable : {false, true}) {
      const ModelRun cpu_run = run_model(cpu, batch, portable);
      const double loss_noise = std::fabs(cpu_run.loss - reference.loss);
      EXPECT_LE(std::fabs(got.loss - reference.loss),
                std::max(2 * loss_noise, std::fabs(reference.loss) / 128))
          << "portable " << portable;
      for (const auto& [name, grad] : reference.grads) {
        const double noise = relative(cpu_run.grads.at(name), grad);
        EXPECT_LE(relative(got.grads.at(name), grad), std::max(2 * noise, 1.0 / 128))
            << name << " (portable " << portable << ")";
      }
    }
  }
}

TEST(ModelOnCuda, KvCacheDecodingMatchesTheCpu) {
  PTRAIN_SKIP_WITHOUT_CUDA();
  at::globalContext().setAllowTF32CuBLAS(false);
  LlamaForCausalLM cpu = tiny_model(at::kFloat, false, at::kCPU);
  LlamaForCausalLM gpu = tiny_model(at::kFloat, false, kCuda);
  cpu->eval();
  gpu->eval();
  KVCache cpu_cache = cpu->make_cache(1, 12), gpu_cache = gpu->make_cache(1, 12);
  ASSERT_EQ(gpu_cache.keys[0].device(), kCuda);
  at::Tensor prompt = torch::tensor({{5, 9, 200, 31, 7}}, torch::kLong);
  at::Tensor want = cpu->decode_step(prompt, cpu_cache);
  at::Tensor got = gpu->decode_step(prompt.to(kCuda), gpu_cache);
  for (int step = 0; step < 4; ++step) {
    EXPECT_TRUE(torch::allclose(got.cpu(), want, 1e-4, 1e-4)) << "step " << step;
    at::Tensor next = want.argmax(-1, true);
    want = cpu->decode_step(next, cpu_cache);
    got = gpu->decode_step(next.to(kCuda), gpu_cache);
  }
}

TEST(Nf4OnCuda, DeviceBuffersDequantizeToTheCpuKernelsBits) {
  PTRAIN_SKIP_WITHOUT_CUDA();
  // Tolerance zero: every path is fp32 level * absmax rounded once (quant/nf4_weight.h).
  torch::manual_seed(1);
  for (int64_t n : {int64_t{63}, int64_t{64 * 257 + 31}, int64_t{4096 * 1024 + 5}}) {
    for (bool double_quant : {false, true}) {
      Nf4Weight q = Nf4Weight::quantize(torch::randn({n}) * 0.02, double_quant);
      Nf4Weight on_gpu = q;
      on_gpu.storage = q.storage.to(kCuda);
      for (at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
        const at::Tensor want = q.dequantize(dtype);
        const at::Tensor by_kernel = on_gpu.dequantize(dtype);  // the CUDA kernel for bf16
        const at::Tensor generic = nf4_dequantize_generic(on_gpu, dtype);
        EXPECT_EQ(by_kernel.device(), kCuda);
        EXPECT_TRUE(by_kernel.cpu().equal(want)) << n << " " << double_quant;
        EXPECT_TRUE(generic.cpu().equal(want)) << n << " " << double_quant;
      }
    }
  }
}

}  // namespace
}  // namespace ptrain
