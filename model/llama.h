// A Llama-family causal language model (LlamaForCausalLM and its Mistral/Qwen2 variants) as a
// libtorch module whose parameter names are exactly the Hugging Face checkpoint names
// ("model.layers.0.self_attn.q_proj.weight", ...), so weights load and save by name.
//
// Inputs are packed rows (PackedBatch): several samples per row, position_ids restarting at each
// sample, attention never crossing a sample, padding (sequence id -1) seeing only itself; an input
// id outside the vocabulary is a UserError. The loss is the sum over labelled tokens (label !=
// -100), computed in chunks so the full [tokens, vocab] fp32 logits never exist; divide by the
// label count for the mean.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>

#include "core/stateful.h"
#include "model/deferred_weights.h"
#include "model/llama_config.h"
#include "model/model_units.h"
#include "model/projection.h"

namespace ptrain {

struct PackedBatch {
  at::Tensor input_ids;     // [B, T] int64
  at::Tensor position_ids;  // [B, T] int64, 0 at each sample start
  at::Tensor sequence_ids;  // [B, T] int64, sample index within the row, -1 for padding
  at::Tensor labels;        // [B, T] int64: the target of position t (the next token of the same
                            // sample, already shifted), -100 where no loss is taken
};

struct ModelOptions {
  at::ScalarType dtype = at::kBFloat16;   // parameters and matmuls; kFloat/kDouble for tests
  bool activation_checkpointing = false;  // recompute each decoder layer in backward
  int64_t loss_chunk_tokens = 0;          // 0: as many rows as keep the chunk's logits at 64 MiB
  int64_t attention_block = 512;          // rows longer than this use blockwise attention
  bool nf4_base = false;                  // decoder projections stored as NF4 (QLoRA base)
  bool nf4_double_quant = true;           // NF4 absmax double-quantized (4.127 bits/param)
  // Checkpoint tensors without memory until loaded (model/deferred_weights.h): for loading and
  // sharding one unit at a time.
  bool defer_weights = false;
  // Seed of the model's own generator (LoRA dropout). The job assembly derives it from the job
  // seed and the rank, so ranks draw different masks and a run is reproducible.
  uint64_t rng_seed = 0;
};

// The final norm and the decoder layers' norms: x * rsqrt(mean(x^2) + eps) * weight.
class LlamaRmsNormImpl : public WeightModuleImpl {
 public:
  LlamaRmsNormImpl(int64_t size, double eps, at::ScalarType dtype, bool deferred = false)
      : WeightModuleImpl(deferred ? deferred_tensor({size}, dtype)
                                  : torch::ones({size}, torch::dtype(dtype))),
        eps_(eps) {}
  at::Tensor forward(const at::Tensor& x) const;

 private:
  double eps_;
};
TORCH_MODULE(LlamaRmsNorm);

// Keys and values of the tokens a sequence has seen so far, per layer, for incremental decoding:
// keys[l] and values[l] are [B, KV heads, capacity, head_dim]; the first `length` positions are
// filled.
struct KVCache {
  std::vector<at::Tensor> keys, values;
  int64_t length = 0;
  int64_t capacity = 0;
};

// What the T queries of a layer may attend to among S keys (S = T for packed rows, cached + T with
// a KV cache). Up to ModelOptions::attention_block queries carry the dense additive bias, built
// once per batch and shared by the layers; longer rows carry no bias, and blockwise attention
// builds each block's mask from the sequence ids, so nothing of size T x S exists (docs/model.md).
struct AttentionMask {
  at::Tensor bias;          // [B, 1, T, S] additive (0 or -inf); undefined: blockwise attention
  at::Tensor sequence_ids;  // [B, S]: each key position's sample, -1 for padding
  int64_t window = 0;       // sliding window (0: none)
};

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaConfig& config, const ModelOptions& options);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                     const AttentionMask& mask);
  // The same layer for T new tokens at positions offset..offset+T-1: their keys and values are
  // written into the cache tensors, and the queries attend over the cache's first offset+T keys.
  at::Tensor forward_cached(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                            const AttentionMask& mask, at::Tensor& key_cache,
                            at::Tensor& value_cache, int64_t offset);

 private:
  // q [B, H, T, d], k and v [B, KV, T, d] of the normed input, RoPE applied to q and k.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> project_qkv(const at::Tensor& hidden,
                                                             const at::Tensor& cos,
                                                             const at::Tensor& sin);
  // The output projection, the residual and the MLP block, from attention output [B, H, T, d].
  at::Tensor finish(const at::Tensor& hidden, const at::Tensor& attn);

  const LlamaConfig config_;
  const int64_t attention_block_;
  Projection q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  Projection gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
  LlamaRmsNorm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// The model's state (Stateful) is its generator's: what an exact resume needs beyond the tensors,
// which a sharding layer or checkpoint reads through units().
class LlamaForCausalLMImpl : public torch::nn::Module, public Stateful {
 public:
  LlamaForCausalLMImpl(const LlamaConfig& config, const ModelOptions& options);

  // Final hidden states [B, T, hidden] (after the last norm).
  at::Tensor hidden_states(const PackedBatch& batch);
  // Summed loss over labelled tokens (fp32 scalar) with its gradient path.
  at::Tensor loss_sum(const PackedBatch& batch);
  // Full logits [B, T, vocab] in fp32 (tests, evaluation of short inputs, generation).
  at::Tensor logits(const PackedBatch& batch);
  // Evaluation without gradients: the summed loss over labelled tokens and how many of them the
  // model predicts exactly (argmax), both fp64 scalars; logits a chunk of positions at a time.
  std::pair<double, int64_t> score(const PackedBatch& batch);

  // An empty KV cache for `batch` sequences of up to `capacity` tokens.
  KVCache make_cache(int64_t batch, int64_t capacity) const;
  // Runs `input_ids` [B, T] (the next T tokens of each sequence) against the cache, appends their
  // keys and values, and returns the fp32 logits of the last position [B, vocab]. Inference only
  // (no autograd); UserError when there are no tokens, the cache would overflow or an id is
  // outside the vocabulary.
  at::Tensor decode_step(const at::Tensor& input_ids, KVCache& cache);

  const LlamaConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  // The lm_head weight (the embedding matrix when tied).
  at::Tensor output_weight() const;
  void set_activation_checkpointing(bool on) { options_.activation_checkpointing = on; }

  // ---- the sharding seam (model/model_units.h)
  // Unit 0 is the root (embed_tokens, norm, lm_head), unit 1 + l decoder layer l; tensors split
  // into frozen NF4 bytes, frozen and trainable by kind. List them once adapters are applied.
  std::vector<ModelUnit> units() const;
  // Hooks called around every unit from now on (null: none). Not owned; must outlive their use.
  void set_unit_hooks(UnitHooks* hooks) { hooks_ = hooks; }

  // ---- randomness and resumable state
  // The generator every random draw of a forward uses (LoRA dropout); never libtorch's global one.
  at::Generator& generator() { return generator_; }
  // {"generator": the generator's state}; restore() puts it back (UserError when malformed).
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;

  // Random initialisation as Hugging Face does it: normal(0, 0.02) for linear and embedding
  // weights, zeros for biases, ones for norms; deterministic for `seed`, and the same values
  // (before quantization) whether the projections are dense or NF4.
  void initialize(uint64_t seed);

  // The decoder projections by module name ("model.layers.0.self_attn.q_proj"), in layer order.
  const std::map<std::string, ProjectionImpl*>& projections() const { return projections_; }
  // Sets checkpoint tensor `name` (a Hugging Face name from llama_tensor_shapes) from `value`:
  // copied into the parameter, or quantized into an NF4 projection.
  void set_tensor(const std::string& name, const at::Tensor& value);
  // Sets NF4 projection `name` ("...q_proj.weight") from an already quantized weight.
  void set_nf4_tensor(const std::string& name, const Nf4Weight& weight);
  // Checkpoint tensor `name` in `dtype`: dequantized for NF4 projections, with the LoRA adapter
  // merged in when `merge_lora`.
  at::Tensor tensor_value(const std::string& name, at::ScalarType dtype, bool merge_lora) const;

 private:
  // Final hidden states after the last norm; calls the root's pre_forward hook and the layers'.
  at::Tensor run_layers(const PackedBatch& batch);
  // The mask of `queries` new tokens over keys with `sequence_ids` [B, S]: the dense bias (from
  // `dense_mask`, [B or 1, 1, queries, S] bool) only when the rows are short enough for it.
  AttentionMask attention_mask(const at::Tensor& sequence_ids, int64_t queries,
                               const std::function<at::Tensor()>& dense_mask) const;
  // The head's output `y`, after the root's post_forward hook.
  at::Tensor leave(const at::Tensor& y);
  // Positions per chunk of the loss's logits: loss_chunk_tokens, or as many as keep a chunk's
  // fp32 logits at 64 MiB.
  int64_t loss_chunk_tokens() const;
  // fp64 for an fp64 model (tests), else fp32: where logits and losses are computed.
  at::ScalarType accumulation_dtype() const;

  LlamaConfig config_;
  ModelOptions options_;
  WeightModule embed_tokens_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  LlamaRmsNorm norm_{nullptr};
  WeightModule lm_head_{nullptr};  // null when tied
  at::Tensor inv_freq_;            // a constant of the config, not a parameter
  std::map<std::string, ProjectionImpl*> projections_;
  at::Generator generator_;
  UnitHooks* hooks_ = nullptr;
};
TORCH_MODULE(LlamaForCausalLM);

// One sample's tokens as placed in a packed row: `length` ids from `ids`, and either its own
// already-shifted labels (`labels`, may hold -100) or, when null, the sample's next tokens.
struct SampleSpan {
  const int64_t* ids = nullptr;
  const int64_t* labels = nullptr;
  int64_t length = 0;
};

// Packs `rows` (each a list of sample spans) left-aligned into [rows, seq_len]: position ids
// restart per sample, sequence ids count samples, the rest is padding (id 0, sequence id -1,
// label -100).
PackedBatch pack_rows(const std::vector<std::vector<SampleSpan>>& rows, int64_t seq_len);

// Packs `rows` (each a list of samples, each a list of token ids) left-aligned into [rows,
// seq_len]: position ids restart per sample, labels are each sample's next tokens (-100 at its last
// token), the rest is padding (id 0, sequence id -1, label -100).
PackedBatch make_packed_batch(const std::vector<std::vector<std::vector<int64_t>>>& rows,
                              int64_t seq_len);

}  // namespace ptrain
