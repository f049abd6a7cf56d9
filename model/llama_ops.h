// The numerical pieces of a Llama decoder, as free functions over tensors, so tests can compare
// each against an independent fp64 reference. Precision policy: statistics (RMSNorm variance,
// softmax, log-sum-exp, the loss) in fp32 whatever the compute dtype; matmuls in the compute dtype.
//
// Devices: every op runs on the device of its inputs, and every tensor it creates takes its device
// from an input. The ops with a fused CPU kernel (swiglu and apply_rope_bthd here, implemented in
// model/elementwise_ops.cpp; NF4 dequantization in model/projection.cpp) choose by tensor: the
// fused kernel for bf16 CPU tensors, else the device-generic path (`*_generic`: libtorch ops with
// the fused kernel's precision policy, fp32 math and one rounding per output), which is what a GPU
// runs. PortableKernelsGuard forces the generic path on the CPU too, so a CPU test runs a GPU's
// math (docs/gpu.md).
#pragma once

#include <torch/torch.h>

#include "core/shape_string.h"
#include "model/llama_config.h"

namespace ptrain {

// x * rsqrt(mean(x^2) + eps) in fp32, cast back to x's dtype, times weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// inv_freq[i] = 1 / theta^(2i/d), with linear or llama3 scaling applied (fp64 math, fp32 result).
at::Tensor rope_inv_freq(const LlamaConfig& config);

// cos and sin tables for `position_ids` [B, T]: [B, T, head_dim] each, fp32 (emb = cat(f, f)).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& inv_freq,
                                              const at::Tensor& position_ids);

// ---- kernel choice

// While alive, the ops of this thread that have a fused CPU kernel take their device-generic path
// on the CPU as well (a GPU's math, for tests and comparisons); nests, restoring the previous
// choice. Autograd runs a CPU backward on the thread that called backward(): keep the guard alive
// over both. An op's backward always takes the path its forward took.
class PortableKernelsGuard {
 public:
  explicit PortableKernelsGuard(bool portable = true);
  ~PortableKernelsGuard();
  PortableKernelsGuard(const PortableKernelsGuard&) = delete;
  PortableKernelsGuard& operator=(const PortableKernelsGuard&) = delete;

 private:
  bool previous_;
};

// True while a PortableKernelsGuard(true) is the innermost guard of this thread.
bool portable_kernels_forced();

// Whether the fused CPU kernel serves `t`: a CPU tensor of `dtype` with no guard forcing the
// generic path.
bool use_fused_cpu_kernel(const at::Tensor& t, at::ScalarType dtype);

// q' = q * cos + rotate_half(q) * sin for x [B, heads, T, d], in x's dtype (as Hugging Face).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The same rotation for x in [B, T, heads, d] layout (the projections' output before the head
// transpose), cos and sin [B, T, d] fp32; the backward applies the inverse rotation. Math in fp32
// (fp64 for fp64 x) with one rounding to x's dtype per output, forward and backward. bf16 on the
// CPU: one fused pass (model/fused_kernels.h); otherwise apply_rope_bthd_generic.
at::Tensor apply_rope_bthd(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// The device-generic form of apply_rope_bthd (libtorch ops, any device and dtype), the same math.
at::Tensor apply_rope_bthd_generic(const at::Tensor& x, const at::Tensor& cos,
                                   const at::Tensor& sin);

// Which key each query may see in a packed row: a [B, 1, T, T] bool mask, true where query i and
// key j belong to the same sample (sequence_ids[b, i] == sequence_ids[b, j] >= 0), j <= i, and
// (when window > 0) i - j < window. A padding token (sequence id -1) sees only itself.
at::Tensor packed_causal_mask(const at::Tensor& sequence_ids, int64_t window);

// The causal mask of T new queries at absolute positions offset..offset+T-1 over the offset+T
// keys of a KV cache (one sample): [1, 1, T, offset + T] bool on `device`, with the same window
// rule.
at::Tensor cached_causal_mask(int64_t offset, int64_t t, int64_t window,
                              at::Device device = at::kCPU);

// Sequence ids for packed rows from position_ids that restart at 0 for every sample:
// [3 4 0 1 2 0] -> [0 0 1 1 1 2]. Rows start a sample at their first token.
at::Tensor sequence_ids_from_positions(const at::Tensor& position_ids);

// The additive form of a packed_causal_mask: 0 where allowed, -inf elsewhere, in `dtype` (the
// compute dtype). Built once per batch, shared by every layer.
at::Tensor attention_bias(const at::Tensor& mask, at::ScalarType dtype);

// softmax(q k^T / sqrt(d) + bias) v with grouped-query heads: q [B, H, T, d], k and v
// [B, KV, S, d] with H a multiple of KV, bias [B, 1, T, S] (S = T in training; S = cached + T
// when decoding with a KV cache); keys and values are shared by H/KV query heads without being
// repeated in memory. Scores in the compute dtype, the softmax accumulating in fp32 (for
// bf16 inputs the kernel converts internally), probabilities rounded to the compute dtype as
// Hugging Face does. Returns [B, H, T, d].
at::Tensor grouped_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& bias);

// The same result as grouped_attention, computed over blocks of `block` queries (each against the
// keys up to its last query) with fp32 softmax statistics; backward recomputes each block's
// probabilities from the saved per-row log-sum-exp. Memory per head is block x S instead of
// T x S, and keys after a block are never touched (causal skipping). The queries are the last T of
// the S key positions. This form takes an explicit (causal) bias [B, 1, T, S], which is itself
// T x S: the model uses the sequence-id form below.
at::Tensor blockwise_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& bias, int64_t block);

// blockwise_attention under packed_causal_mask's rule without its [T, S] matrix: `sequence_ids`
// [B, S] names the sample of each key position (-1: padding), the queries are the last T of those
// positions (S = T for a packed row; S = cached + T with a KV cache, all ids 0), and each block
// builds its own [B, block, keys] mask from the ids, forward and backward. Nothing of size T x S
// is ever allocated. With a window, keys older than the block's first query's window are skipped.
at::Tensor blockwise_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& sequence_ids, int64_t window, int64_t block);

// silu(gate) * up, the SwiGLU activation, with gate and up of one shape: math in fp32 (fp64 for
// fp64 inputs) and one rounding per output, forward and backward (which recomputes from the saved
// inputs). bf16 on the CPU: one fused pass each way (model/fused_kernels.h); otherwise
// swiglu_generic. Inputs of different shapes broadcast through the plain libtorch ops.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);
// The device-generic form of swiglu (libtorch ops, any device and dtype), the same math.
at::Tensor swiglu_generic(const at::Tensor& gate, const at::Tensor& up);

// Sum over tokens with label != -100 of cross_entropy(hidden @ weight^T, label), computed over
// chunks of `chunk_tokens` rows so no more than chunk_tokens x vocab fp32 logits exist at once, in
// forward or backward (the backward recomputes each chunk's logits). hidden [N, H], weight [V, H],
// labels [N] int64. Returns an fp32 scalar (fp64 for fp64 inputs).
at::Tensor chunked_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight,
                                     const at::Tensor& labels, int64_t chunk_tokens);

}  // namespace ptrain
