// The linear layers of a decoder (q/k/v/o and gate/up/down projections): y = x W^T (+ b), where W
// is either a dense parameter or an NF4-quantized buffer (QLoRA's frozen base), optionally plus a
// LoRA adapter: y += B A dropout(x) * scaling, exactly as PEFT computes it.
//
// Names follow Hugging Face and PEFT: "weight" and "bias" (dense), "lora_A.weight" [r, in] and
// "lora_B.weight" [out, r]; the NF4 buffer is "weight_nf4" (uint8, quant/nf4.h layout).
// LoRA parameters are fp32 master weights, cast to the input's dtype for the matmuls. The NF4
// weight is dequantized for the matmul in forward and again in backward; the dequantized copy
// lives only for the layer's own computation.
#pragma once

#include <torch/torch.h>

#include <optional>

#include "quant/nf4_weight.h"

namespace ptrain {

struct LoraOptions {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  bool rslora = false;  // scaling alpha / sqrt(r) instead of alpha / r
  double scaling() const;
};

// A module that holds one registered "weight" parameter (Hugging Face's leaf modules: norms,
// embeddings, lm_head, and PEFT's lora_A / lora_B), read from the registry at each use.
class WeightModuleImpl : public torch::nn::Module {
 public:
  explicit WeightModuleImpl(at::Tensor weight) { register_parameter("weight", std::move(weight)); }
  at::Tensor weight() const { return *parameters_.find("weight"); }
};
TORCH_MODULE(WeightModule);

// Tensors are read from the module registry at every use and never cached (the storage-swap
// contract of model/model_units.h): the accessors below return handles that share the registered
// tensor, so in-place writes through them (copy_, normal_) reach the module.
class ProjectionImpl : public torch::nn::Module {
 public:
  // A dense (nf4 = false) or NF4-quantized base of shape [out, in]; the NF4 buffer is allocated
  // but holds no weight until set_weight(). `deferred`: the weight (or NF4 buffer) and bias are
  // deferred tensors (model/deferred_weights.h) until set.
  ProjectionImpl(int64_t in, int64_t out, bool bias, at::ScalarType dtype, bool nf4,
                 bool double_quant = true, bool deferred = false);

  at::Tensor forward(const at::Tensor& x);

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool quantized() const { return nf4_format_.has_value(); }
  // The NF4 weight over the registered buffer; nullopt when dense.
  std::optional<Nf4Weight> nf4() const;
  at::Tensor dense() const;  // undefined when quantized
  at::Tensor bias() const;   // undefined without a bias

  // Sets the base weight from a dense [out, in] tensor: copied, or quantized when NF4.
  void set_weight(const at::Tensor& weight);
  // Sets the NF4 buffer directly (a weight already quantized, e.g. by bitsandbytes).
  void set_nf4(const Nf4Weight& weight);
  // The base weight in `dtype` (dequantized when NF4), without the adapter.
  at::Tensor base_weight(at::ScalarType dtype) const;
  // base_weight + (B @ A) * scaling, computed in fp32 and rounded once to `dtype`.
  at::Tensor merged_weight(at::ScalarType dtype) const;

  // Adds a LoRA adapter: A ~ kaiming_uniform(a = sqrt(5)) (U(-1/sqrt(in), 1/sqrt(in))), B = 0, as
  // PEFT initialises it; deterministic in `generator`.
  void add_lora(const LoraOptions& options, at::Generator generator);
  bool has_lora() const { return !lora_a_.is_empty(); }
  const LoraOptions& lora() const { return lora_options_; }
  at::Tensor lora_a() const;  // [r, in], fp32 master
  at::Tensor lora_b() const;  // [out, r], fp32 master

  // The generator LoRA dropout draws its masks from (the model's own; a projection built alone
  // has one seeded with 0).
  void set_generator(at::Generator generator) { generator_ = std::move(generator); }

 private:
  // A registered parameter of this module by name (undefined when absent).
  at::Tensor parameter(const char* name) const;

  int64_t in_, out_;
  at::ScalarType dtype_;
  // Shape, layout and source dtype of the NF4 base; its `storage` stays undefined (the bytes are
  // the registered buffer "weight_nf4").
  std::optional<Nf4Weight> nf4_format_;
  LoraOptions lora_options_;
  WeightModule lora_a_{nullptr}, lora_b_{nullptr};  // "lora_A", "lora_B"
  at::Generator generator_;
};
TORCH_MODULE(Projection);

}  // namespace ptrain
