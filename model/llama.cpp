#include "model/llama.h"

#include "core/error.h"
#include "model/llama_ops.h"

namespace ptrain {
namespace {

torch::nn::Linear linear(int64_t in, int64_t out, bool bias, at::ScalarType dtype) {
  torch::nn::Linear layer(torch::nn::LinearOptions(in, out).bias(bias));
  layer->to(dtype);
  return layer;
}

Projection projection(int64_t in, int64_t out, bool bias, const ModelOptions& options) {
  return Projection(in, out, bias, options.dtype, options.nf4_base, options.nf4_double_quant);
}

// ---------------------------------------------------------------- activation checkpointing

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Runs a decoder layer without keeping its activations; backward recomputes the layer with
// gradients on and backpropagates through it, which accumulates parameter gradients directly into
// .grad (as PyTorch's reentrant checkpoint does: use loss.backward(), not autograd::grad()).
class CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden,
                            LlamaDecoderLayerImpl* layer, const at::Tensor& cos,
                            const at::Tensor& sin, const at::Tensor& mask) {
    ctx->save_for_backward({hidden, cos, sin, mask});
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    // The recompute must draw the same dropout masks (LoRA dropout) as this forward, as
    // torch.utils.checkpoint's preserve_rng_state does.
    auto generator = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      ctx->saved_data["rng"] = generator.get_state();
    }
    torch::NoGradGuard no_grad;
    return layer->forward(hidden, cos, sin, mask);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    at::Tensor input = saved[0].detach().requires_grad_(true);
    at::Tensor output;
    {
      auto generator = at::detail::getDefaultCPUGenerator();
      at::Tensor current;
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        current = generator.get_state();
        generator.set_state(ctx->saved_data["rng"].toTensor());
      }
      torch::AutoGradMode grad_on(true);
      output = layer->forward(input, saved[1], saved[2], saved[3]);
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(current);
    }
    torch::autograd::backward({output}, {grad_outputs[0]});
    return {input.grad(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// ---------------------------------------------------------------- decoder layer

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& config, const ModelOptions& options)
    : config_(config), attention_block_(options.attention_block) {
  const at::ScalarType dtype = options.dtype;
  const int64_t h = config.hidden_size, q = config.num_attention_heads * config.head_dim,
                kv = config.num_key_value_heads * config.head_dim, i = config.intermediate_size;
  // Registered under the Hugging Face names: self_attn.*, mlp.*, *_layernorm.
  auto attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  q_proj_ = attn->register_module("q_proj", projection(h, q, config.qkv_bias, options));
  k_proj_ = attn->register_module("k_proj", projection(h, kv, config.qkv_bias, options));
  v_proj_ = attn->register_module("v_proj", projection(h, kv, config.qkv_bias, options));
  o_proj_ = attn->register_module("o_proj", projection(q, h, config.o_bias, options));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  gate_proj_ = mlp->register_module("gate_proj", projection(h, i, config.mlp_bias, options));
  up_proj_ = mlp->register_module("up_proj", projection(h, i, config.mlp_bias, options));
  down_proj_ = mlp->register_module("down_proj", projection(i, h, config.mlp_bias, options));
  auto input_norm = register_module("input_layernorm", std::make_shared<torch::nn::Module>());
  input_layernorm_ =
      input_norm->register_parameter("weight", torch::ones({h}, torch::dtype(dtype)));
  auto post_norm =
      register_module("post_attention_layernorm", std::make_shared<torch::nn::Module>());
  post_attention_layernorm_ =
      post_norm->register_parameter("weight", torch::ones({h}, torch::dtype(dtype)));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> LlamaDecoderLayerImpl::project_qkv(
    const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t b = hidden.size(0), t = hidden.size(1), d = config_.head_dim;
  at::Tensor x = rms_norm(hidden, input_layernorm_, config_.rms_norm_eps);
  // RoPE in the projections' [B, T, heads, d] layout, then the head transpose.
  at::Tensor q = apply_rope_bthd(q_proj_(x).view({b, t, config_.num_attention_heads, d}), cos, sin);
  at::Tensor k = apply_rope_bthd(k_proj_(x).view({b, t, config_.num_key_value_heads, d}), cos, sin);
  at::Tensor v = v_proj_(x).view({b, t, config_.num_key_value_heads, d});
  return {q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)};
}

at::Tensor LlamaDecoderLayerImpl::finish(const at::Tensor& hidden, const at::Tensor& attn) {
  const int64_t b = hidden.size(0), t = hidden.size(1);
  at::Tensor h =
      hidden +
      o_proj_(attn.transpose(1, 2).reshape({b, t, config_.num_attention_heads * config_.head_dim}));
  at::Tensor y = rms_norm(h, post_attention_layernorm_, config_.rms_norm_eps);
  return h + down_proj_(swiglu(gate_proj_(y), up_proj_(y)));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& hidden, const at::Tensor& cos,
                                          const at::Tensor& sin, const at::Tensor& mask) {
  auto [q, k, v] = project_qkv(hidden, cos, sin);
  at::Tensor attn = hidden.size(1) > attention_block_
                        ? blockwise_attention(q, k, v, mask, attention_block_)
                        : grouped_attention(q, k, v.contiguous(), mask);
  return finish(hidden, attn);
}

at::Tensor LlamaDecoderLayerImpl::forward_cached(const at::Tensor& hidden, const at::Tensor& cos,
                                                 const at::Tensor& sin, const at::Tensor& bias,
                                                 at::Tensor& key_cache, at::Tensor& value_cache,
                                                 int64_t offset) {
  const int64_t t = hidden.size(1);
  auto [q, k, v] = project_qkv(hidden, cos, sin);
  key_cache.narrow(2, offset, t).copy_(k);
  value_cache.narrow(2, offset, t).copy_(v);
  // A long prefill (nothing cached yet) takes the blockwise path, so a prompt of T tokens never
  // holds heads x T x T scores.
  if (offset == 0 && t > attention_block_)
    return finish(hidden, blockwise_attention(q, k, v, bias, attention_block_));
  return finish(hidden, grouped_attention(q, key_cache.narrow(2, 0, offset + t),
                                          value_cache.narrow(2, 0, offset + t), bias));
}

// ---------------------------------------------------------------- causal LM

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& config, const ModelOptions& options)
    : config_(config), options_(options) {
  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  model_ = model.get();
  embed_tokens_ = model->register_module(
      "embed_tokens", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  embed_tokens_->to(options.dtype);
  layers_ = model->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i)
    layers_->push_back(LlamaDecoderLayer(config, options));
  auto norm = model->register_module("norm", std::make_shared<torch::nn::Module>());
  norm_ = norm->register_parameter("weight",
                                   torch::ones({config.hidden_size}, torch::dtype(options.dtype)));
  if (!config.tie_word_embeddings)
    lm_head_ = register_module("lm_head",
                               linear(config.hidden_size, config.vocab_size, false, options.dtype));
  inv_freq_ = rope_inv_freq(config);
  for (const auto& named : named_modules("", /*include_self=*/false)) {
    if (auto* p = named.value()->as<ProjectionImpl>()) projections_[named.key()] = p;
  }
}

at::Tensor LlamaForCausalLMImpl::output_weight() const {
  return config_.tie_word_embeddings ? embed_tokens_->weight : lm_head_->weight;
}

at::Tensor LlamaForCausalLMImpl::hidden_states(const PackedBatch& batch) {
  PTRAIN_CHECK(batch.input_ids.dim() == 2 &&
                   batch.position_ids.sizes() == batch.input_ids.sizes() &&
                   batch.sequence_ids.sizes() == batch.input_ids.sizes(),
               "packed batch: input_ids {}, position_ids {} and sequence_ids {} must all be [B, T]",
               shape_string(batch.input_ids.sizes()), shape_string(batch.position_ids.sizes()),
               shape_string(batch.sequence_ids.sizes()));
  auto [cos, sin] = rope_tables(inv_freq_, batch.position_ids);
  at::Tensor mask = attention_bias(packed_causal_mask(batch.sequence_ids, config_.sliding_window),
                                   options_.dtype);
  at::Tensor h = embed_tokens_(batch.input_ids);
  const bool checkpoint = options_.activation_checkpointing && torch::GradMode::is_enabled();
  for (const auto& module : *layers_) {
    auto* layer = module->as<LlamaDecoderLayerImpl>();
    if (checkpoint && !h.requires_grad()) {
      // Frozen embeddings (LoRA): nothing upstream needs this gradient, but the Function's output
      // only carries a gradient when an input does, so give it one to differentiate against.
      h = h.detach().requires_grad_(true);
    }
    h = checkpoint ? CheckpointedLayer::apply(h, layer, cos, sin, mask)
                   : layer->forward(h, cos, sin, mask);
  }
  return rms_norm(h, norm_, config_.rms_norm_eps);
}

at::Tensor LlamaForCausalLMImpl::loss_sum(const PackedBatch& batch) {
  at::Tensor h = hidden_states(batch);
  int64_t chunk = options_.loss_chunk_tokens;
  if (chunk <= 0) chunk = std::max<int64_t>(1, (int64_t{64} << 20) / (4 * config_.vocab_size));
  return chunked_cross_entropy_sum(h.reshape({-1, config_.hidden_size}), output_weight(),
                                   batch.labels.reshape({-1}), chunk);
}

at::Tensor LlamaForCausalLMImpl::logits(const PackedBatch& batch) {
  at::Tensor h = hidden_states(batch);
  const at::ScalarType acc = options_.dtype == at::kDouble ? at::kDouble : at::kFloat;
  return at::matmul(h, output_weight().t()).to(acc);
}

KVCache LlamaForCausalLMImpl::make_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  cache.capacity = capacity;
  const auto options = torch::dtype(options_.dtype);
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    cache.keys.push_back(
        torch::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim}, options));
    cache.values.push_back(torch::empty_like(cache.keys.back()));
  }
  return cache;
}

at::Tensor LlamaForCausalLMImpl::decode_step(const at::Tensor& input_ids, KVCache& cache) {
  torch::NoGradGuard no_grad;
  const int64_t b = input_ids.size(0), t = input_ids.size(1), offset = cache.length;
  PTRAIN_CHECK(!cache.keys.empty() && cache.keys[0].size(0) == b,
               "decode_step: {} sequences for a KV cache of {}", b,
               cache.keys.empty() ? 0 : cache.keys[0].size(0));
  PTRAIN_CHECK(offset + t <= cache.capacity,
               "{} tokens do not fit the KV cache ({} of {} positions used)", t, offset,
               cache.capacity);
  at::Tensor positions = torch::arange(offset, offset + t, torch::kLong).expand({b, t});
  auto [cos, sin] = rope_tables(inv_freq_, positions);
  at::Tensor bias =
      attention_bias(cached_causal_mask(offset, t, config_.sliding_window), options_.dtype);
  at::Tensor h = embed_tokens_(input_ids);
  for (size_t l = 0; l < layers_->size(); ++l)
    h = layers_[l]->as<LlamaDecoderLayerImpl>()->forward_cached(h, cos, sin, bias, cache.keys[l],
                                                                cache.values[l], offset);
  cache.length = offset + t;
  at::Tensor last = rms_norm(h.select(1, t - 1), norm_, config_.rms_norm_eps);
  const at::ScalarType acc = options_.dtype == at::kDouble ? at::kDouble : at::kFloat;
  return at::matmul(last, output_weight().t()).to(acc);
}

void LlamaForCausalLMImpl::initialize(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const auto& [name, shape] : llama_tensor_shapes(config_)) {
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      set_tensor(name, torch::zeros(shape));
    } else if (name.find("norm") != std::string::npos) {
      set_tensor(name, torch::ones(shape));
    } else {
      set_tensor(name, at::normal(0.0, 0.02, shape, generator, torch::dtype(at::kFloat)));
    }
  }
}

namespace {

// "model.layers.0.self_attn.q_proj.weight" -> the projection and "weight"; null when the name is
// not a projection's.
std::pair<ProjectionImpl*, std::string> find_projection(
    const std::map<std::string, ProjectionImpl*>& projections, const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {nullptr, ""};
  auto it = projections.find(name.substr(0, dot));
  if (it == projections.end()) return {nullptr, ""};
  return {it->second, name.substr(dot + 1)};
}

}  // namespace

void LlamaForCausalLMImpl::set_tensor(const std::string& name, const at::Tensor& value) {
  torch::NoGradGuard no_grad;
  auto [proj, leaf] = find_projection(projections_, name);
  if (proj && leaf == "weight") {
    // NF4 would hide a NaN (it becomes -absmax) or spread an inf over its block.
    PTRAIN_CHECK(!proj->quantized() || at::isfinite(value).all().item<bool>(),
                 "tensor '{}' holds NaN or infinite values; it cannot be quantized to NF4", name);
    proj->set_weight(value);
    return;
  }
  at::Tensor* param = named_parameters().find(name);
  PTRAIN_ASSERT(param != nullptr, "model has no tensor '{}'", name);
  param->copy_(value);
}

void LlamaForCausalLMImpl::set_nf4_tensor(const std::string& name, const Nf4Weight& weight) {
  auto [proj, leaf] = find_projection(projections_, name);
  PTRAIN_ASSERT(proj && leaf == "weight", "'{}' is not a projection weight", name);
  PTRAIN_CHECK(proj->quantized(),
               "'{}' is stored 4-bit; load the model with its projections quantized (NF4)", name);
  proj->set_nf4(weight);
}

at::Tensor LlamaForCausalLMImpl::tensor_value(const std::string& name, at::ScalarType dtype,
                                              bool merge_lora) const {
  auto [proj, leaf] = find_projection(projections_, name);
  if (proj && leaf == "weight")
    return merge_lora ? proj->merged_weight(dtype) : proj->base_weight(dtype);
  const at::Tensor* param = named_parameters().find(name);
  PTRAIN_ASSERT(param != nullptr, "model has no tensor '{}'", name);
  return param->detach().to(dtype);
}

// ---------------------------------------------------------------- batches

PackedBatch pack_rows(const std::vector<std::vector<SampleSpan>>& rows, int64_t seq_len) {
  const int64_t b = static_cast<int64_t>(rows.size());
  PackedBatch batch;
  batch.input_ids = torch::zeros({b, seq_len}, torch::kLong);
  batch.position_ids = torch::zeros({b, seq_len}, torch::kLong);
  batch.sequence_ids = torch::full({b, seq_len}, -1, torch::kLong);
  batch.labels = torch::full({b, seq_len}, -100, torch::kLong);
  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto pos = batch.position_ids.accessor<int64_t, 2>();
  auto seq = batch.sequence_ids.accessor<int64_t, 2>();
  auto lab = batch.labels.accessor<int64_t, 2>();
  for (int64_t r = 0; r < b; ++r) {
    int64_t t = 0;
    for (size_t s = 0; s < rows[r].size(); ++s) {
      const SampleSpan& sample = rows[r][s];
      PTRAIN_CHECK(t + sample.length <= seq_len, "row {} holds more than sequence_len {} tokens", r,
                   seq_len);
      for (int64_t i = 0; i < sample.length; ++i, ++t) {
        ids[r][t] = sample.ids[i];
        pos[r][t] = i;
        seq[r][t] = static_cast<int64_t>(s);
        if (sample.labels) {
          lab[r][t] = sample.labels[i];
        } else if (i + 1 < sample.length) {
          lab[r][t] = sample.ids[i + 1];
        }
      }
    }
  }
  return batch;
}

PackedBatch make_packed_batch(const std::vector<std::vector<std::vector<int64_t>>>& rows,
                              int64_t seq_len) {
  std::vector<std::vector<SampleSpan>> spans(rows.size());
  for (size_t r = 0; r < rows.size(); ++r)
    for (const auto& sample : rows[r])
      spans[r].push_back({sample.data(), nullptr, static_cast<int64_t>(sample.size())});
  return pack_rows(spans, seq_len);
}

}  // namespace ptrain
