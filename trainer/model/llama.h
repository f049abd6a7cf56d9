// A Llama-family causal language model (LlamaForCausalLM and its Mistral/Qwen2 variants) as a
// libtorch module whose parameter names are exactly the Hugging Face checkpoint names
// ("model.layers.0.self_attn.q_proj.weight", ...), so weights load and save by name.
//
// Inputs are packed rows (PackedBatch): several samples per row, position_ids restarting at each
// sample, attention never crossing a sample, padding (sequence id -1) seeing only itself. The
// loss is the sum over labelled tokens (label != -100), computed in chunks so the full
// [tokens, vocab] fp32 logits never exist; divide by the label count for the mean.
#pragma once

#include <torch/torch.h>

#include "trainer/model/llama_config.h"

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
};

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaConfig& config, at::ScalarType dtype, int64_t attention_block);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& mask);

 private:
  const LlamaConfig config_;
  const int64_t attention_block_;
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  torch::nn::Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
  at::Tensor input_layernorm_, post_attention_layernorm_;
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  LlamaForCausalLMImpl(const LlamaConfig& config, const ModelOptions& options);

  // Final hidden states [B, T, hidden] (after the last norm).
  at::Tensor hidden_states(const PackedBatch& batch);
  // Summed loss over labelled tokens (fp32 scalar) with its gradient path.
  at::Tensor loss_sum(const PackedBatch& batch);
  // Full logits [B, T, vocab] in fp32 (tests, evaluation of short inputs, generation).
  at::Tensor logits(const PackedBatch& batch);

  const LlamaConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  // The lm_head weight (the embedding matrix when tied).
  at::Tensor output_weight() const;
  void set_activation_checkpointing(bool on) { options_.activation_checkpointing = on; }

  // Random initialisation as Hugging Face does it: normal(0, 0.02) for linear and embedding
  // weights, zeros for biases, ones for norms; deterministic for `seed`.
  void initialize(uint64_t seed);

 private:
  LlamaConfig config_;
  ModelOptions options_;
  torch::nn::Module* model_ = nullptr;  // the "model." submodule
  torch::nn::Embedding embed_tokens_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  at::Tensor norm_;
  torch::nn::Linear lm_head_{nullptr};  // null when tied
  at::Tensor inv_freq_;
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
