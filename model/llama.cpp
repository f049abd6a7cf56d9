#include "model/llama.h"

#include "core/error.h"
#include "model/deferred_weights.h"
#include "model/llama_ops.h"

namespace ptrain {
namespace {

Projection projection(int64_t in, int64_t out, bool bias, const ModelOptions& options) {
  return Projection(in, out, bias, options.dtype, options.nf4_base, options.nf4_double_quant,
                    options.defer_weights);
}

// UserError naming the first id outside [0, vocab) (libtorch's embedding would throw an index
// error without one).
void check_input_ids(const at::Tensor& ids, int64_t vocab) {
  at::Tensor outside = ids.lt(0) | ids.ge(vocab);
  PTRAIN_CHECK(!outside.any().item<bool>(), "input id {} is outside [0, {}) (the vocabulary)",
               ids.masked_select(outside)[0].item<int64_t>(), vocab);
}

// The rope inverse frequencies on `device`: a constant of the config, built on the CPU with the
// model, moved once to the device the inputs arrive on rather than copied at every step.
const at::Tensor& rope_frequencies_on(at::Tensor& inv_freq, at::Device device) {
  if (inv_freq.device() != device) inv_freq = inv_freq.to(device);
  return inv_freq;
}

}  // namespace

at::Tensor LlamaRmsNormImpl::forward(const at::Tensor& x) const {
  return rms_norm(x, weight(), eps_);
}

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
  input_layernorm_ = register_module(
      "input_layernorm", LlamaRmsNorm(h, config.rms_norm_eps, dtype, options.defer_weights));
  post_attention_layernorm_ =
      register_module("post_attention_layernorm",
                      LlamaRmsNorm(h, config.rms_norm_eps, dtype, options.defer_weights));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> LlamaDecoderLayerImpl::project_qkv(
    const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t b = hidden.size(0), t = hidden.size(1), d = config_.head_dim;
  at::Tensor x = input_layernorm_(hidden);
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
  at::Tensor y = post_attention_layernorm_(h);
  return h + down_proj_(swiglu(gate_proj_(y), up_proj_(y)));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& hidden, const at::Tensor& cos,
                                          const at::Tensor& sin, const AttentionMask& mask) {
  auto [q, k, v] = project_qkv(hidden, cos, sin);
  at::Tensor attn = mask.bias.defined() ? grouped_attention(q, k, v.contiguous(), mask.bias)
                                        : blockwise_attention(q, k, v, mask.sequence_ids,
                                                              mask.window, attention_block_);
  return finish(hidden, attn);
}

at::Tensor LlamaDecoderLayerImpl::forward_cached(const at::Tensor& hidden, const at::Tensor& cos,
                                                 const at::Tensor& sin, const AttentionMask& mask,
                                                 at::Tensor& key_cache, at::Tensor& value_cache,
                                                 int64_t offset) {
  const int64_t t = hidden.size(1);
  auto [q, k, v] = project_qkv(hidden, cos, sin);
  key_cache.narrow(2, offset, t).copy_(k);
  value_cache.narrow(2, offset, t).copy_(v);
  at::Tensor keys = key_cache.narrow(2, 0, offset + t),
             values = value_cache.narrow(2, 0, offset + t);
  // Many new tokens (a long prompt's prefill) take the blockwise path, so a prompt of T tokens
  // never holds heads x T x T scores nor a T x T mask.
  if (!mask.bias.defined())
    return finish(hidden, blockwise_attention(q, keys, values, mask.sequence_ids, mask.window,
                                              attention_block_));
  return finish(hidden, grouped_attention(q, keys, values, mask.bias));
}

// ---------------------------------------------------------------- causal LM

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& config, const ModelOptions& options)
    : config_(config),
      options_(options),
      generator_(at::make_generator<at::CPUGeneratorImpl>(options.rng_seed)) {
  auto checkpoint_tensor = [&](at::IntArrayRef shape) {
    return options.defer_weights ? deferred_tensor(shape, options.dtype)
                                 : torch::empty(shape, torch::dtype(options.dtype));
  };
  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  embed_tokens_ = model->register_module(
      "embed_tokens", WeightModule(checkpoint_tensor({config.vocab_size, config.hidden_size})));
  layers_ = model->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i)
    layers_->push_back(LlamaDecoderLayer(config, options));
  norm_ = model->register_module("norm", LlamaRmsNorm(config.hidden_size, config.rms_norm_eps,
                                                      options.dtype, options.defer_weights));
  if (!config.tie_word_embeddings)
    lm_head_ = register_module(
        "lm_head", WeightModule(checkpoint_tensor({config.vocab_size, config.hidden_size})));
  inv_freq_ = rope_inv_freq(config);
  for (const auto& named : named_modules("", /*include_self=*/false)) {
    if (auto* p = named.value()->as<ProjectionImpl>()) {
      projections_[named.key()] = p;
      p->set_generator(generator_);
    }
  }
}

at::Tensor LlamaForCausalLMImpl::output_weight() const {
  return config_.tie_word_embeddings ? embed_tokens_->weight() : lm_head_->weight();
}

at::Tensor LlamaForCausalLMImpl::run_layers(const PackedBatch& batch) {
  PTRAIN_CHECK(batch.input_ids.dim() == 2 &&
                   batch.position_ids.sizes() == batch.input_ids.sizes() &&
                   batch.sequence_ids.sizes() == batch.input_ids.sizes(),
               "packed batch: input_ids {}, position_ids {} and sequence_ids {} must all be [B, T]",
               shape_string(batch.input_ids.sizes()), shape_string(batch.position_ids.sizes()),
               shape_string(batch.sequence_ids.sizes()));
  check_input_ids(batch.input_ids, config_.vocab_size);
  auto [cos, sin] =
      rope_tables(rope_frequencies_on(inv_freq_, batch.position_ids.device()), batch.position_ids);
  const AttentionMask mask = attention_mask(batch.sequence_ids, batch.input_ids.size(1), [&] {
    return packed_causal_mask(batch.sequence_ids, config_.sliding_window);
  });
  if (hooks_) hooks_->pre_forward(0);
  at::Tensor h = at::embedding(embed_tokens_->weight(), batch.input_ids);
  const bool checkpoint = options_.activation_checkpointing;
  const bool per_unit = torch::GradMode::is_enabled() && (checkpoint || hooks_);
  for (size_t l = 0; l < layers_->size(); ++l) {
    auto* layer = layers_[l]->as<LlamaDecoderLayerImpl>();
    if (!hooks_ && !checkpoint) {
      h = layer->forward(h, cos, sin, mask);
      continue;
    }
    if (per_unit && !h.requires_grad()) {
      // Frozen embeddings (LoRA): nothing upstream needs this gradient, but the unit function's
      // output only carries a gradient when an input does, so give it one to differentiate
      // against.
      h = h.detach().requires_grad_(true);
    }
    h = run_unit(
        static_cast<int>(l) + 1,
        [layer, cos = cos, sin = sin, mask](const at::Tensor& x) {
          return layer->forward(x, cos, sin, mask);
        },
        h, checkpoint ? UnitActivations::kRecompute : UnitActivations::kKeep, hooks_, generator_);
  }
  return norm_(h);
}

AttentionMask LlamaForCausalLMImpl::attention_mask(
    const at::Tensor& sequence_ids, int64_t queries,
    const std::function<at::Tensor()>& dense_mask) const {
  AttentionMask mask;
  mask.sequence_ids = sequence_ids;
  mask.window = config_.sliding_window;
  if (queries <= options_.attention_block) mask.bias = attention_bias(dense_mask(), options_.dtype);
  return mask;
}

at::Tensor LlamaForCausalLMImpl::leave(const at::Tensor& y) {
  return hooks_ ? leave_root(y, *hooks_) : y;
}

int64_t LlamaForCausalLMImpl::loss_chunk_tokens() const {
  if (options_.loss_chunk_tokens > 0) return options_.loss_chunk_tokens;
  return std::max<int64_t>(1, (int64_t{64} << 20) / (4 * config_.vocab_size));
}

at::ScalarType LlamaForCausalLMImpl::accumulation_dtype() const {
  return options_.dtype == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor LlamaForCausalLMImpl::hidden_states(const PackedBatch& batch) {
  return leave(run_layers(batch));
}

at::Tensor LlamaForCausalLMImpl::loss_sum(const PackedBatch& batch) {
  at::Tensor h = run_layers(batch);
  return leave(chunked_cross_entropy_sum(h.reshape({-1, config_.hidden_size}), output_weight(),
                                         batch.labels.reshape({-1}), loss_chunk_tokens()));
}

at::Tensor LlamaForCausalLMImpl::logits(const PackedBatch& batch) {
  at::Tensor h = run_layers(batch);
  const at::ScalarType acc = accumulation_dtype();
  return leave(at::matmul(h, output_weight().t()).to(acc));
}

std::pair<double, int64_t> LlamaForCausalLMImpl::score(const PackedBatch& batch) {
  torch::NoGradGuard no_grad;
  const at::Tensor learned = batch.labels.ne(-100);
  const at::Tensor hidden = run_layers(batch).index({learned});
  const at::Tensor labels = batch.labels.index({learned});
  const at::Tensor weight = output_weight();  // the root is still gathered until leave()
  const at::ScalarType acc = accumulation_dtype();
  const int64_t chunk = loss_chunk_tokens();
  double loss = 0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < labels.numel(); begin += chunk) {
    const int64_t n = std::min(chunk, labels.numel() - begin);
    const at::Tensor logits = at::matmul(hidden.narrow(0, begin, n), weight.t()).to(acc);
    const at::Tensor target = labels.narrow(0, begin, n);
    loss += at::cross_entropy_loss(logits, target, {}, at::Reduction::Sum).item<double>();
    correct += logits.argmax(-1).eq(target).sum().item<int64_t>();
  }
  leave(at::Tensor());
  return {loss, correct};
}

KVCache LlamaForCausalLMImpl::make_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  cache.capacity = capacity;
  // With the model: where the embedding (and so every layer's output) lives.
  const auto options = torch::dtype(options_.dtype).device(embed_tokens_->weight().device());
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    cache.keys.push_back(
        torch::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim}, options));
    cache.values.push_back(torch::empty_like(cache.keys.back()));
  }
  return cache;
}

at::Tensor LlamaForCausalLMImpl::decode_step(const at::Tensor& input_ids, KVCache& cache) {
  torch::NoGradGuard no_grad;
  PTRAIN_CHECK(input_ids.dim() == 2, "decode_step: input_ids {} must be [B, T]",
               shape_string(input_ids.sizes()));
  const int64_t b = input_ids.size(0), t = input_ids.size(1), offset = cache.length;
  PTRAIN_CHECK(!cache.keys.empty() && cache.keys[0].size(0) == b,
               "decode_step: {} sequences for a KV cache of {}", b,
               cache.keys.empty() ? 0 : cache.keys[0].size(0));
  PTRAIN_CHECK(t >= 1, "decode_step: no tokens to run");
  PTRAIN_CHECK(offset + t <= cache.capacity,
               "{} tokens do not fit the KV cache ({} of {} positions used)", t, offset,
               cache.capacity);
  PTRAIN_CHECK(cache.keys[0].device() == input_ids.device(),
               "decode_step: the KV cache is on {} but the input ids are on {}",
               cache.keys[0].device().str(), input_ids.device().str());
  check_input_ids(input_ids, config_.vocab_size);
  const at::Device device = input_ids.device();
  at::Tensor positions =
      torch::arange(offset, offset + t, input_ids.options().dtype(at::kLong)).expand({b, t});
  auto [cos, sin] = rope_tables(rope_frequencies_on(inv_freq_, device), positions);
  // Each sequence of the cache is one sample: sequence id 0 at every position.
  const AttentionMask mask =
      attention_mask(torch::zeros({b, offset + t}, positions.options()), t,
                     [&] { return cached_causal_mask(offset, t, config_.sliding_window, device); });
  if (hooks_) hooks_->pre_forward(0);
  at::Tensor h = at::embedding(embed_tokens_->weight(), input_ids);
  for (size_t l = 0; l < layers_->size(); ++l) {
    auto* layer = layers_[l]->as<LlamaDecoderLayerImpl>();
    auto run = [&](const at::Tensor& x) {
      return layer->forward_cached(x, cos, sin, mask, cache.keys[l], cache.values[l], offset);
    };
    h = hooks_
            ? run_unit(static_cast<int>(l) + 1, run, h, UnitActivations::kKeep, hooks_, generator_)
            : run(h);
  }
  cache.length = offset + t;
  at::Tensor last = norm_(h.select(1, t - 1));
  const at::ScalarType acc = accumulation_dtype();
  return leave(at::matmul(last, output_weight().t()).to(acc));
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

std::vector<ModelUnit> LlamaForCausalLMImpl::units() const {
  return collect_units(*this, layers_->children());
}

nlohmann::json LlamaForCausalLMImpl::state() const {
  return {{"generator", generator_state_json(generator_)}};
}

void LlamaForCausalLMImpl::restore(const nlohmann::json& state) {
  PTRAIN_CHECK(state.is_object() && state.contains("generator"),
               "model state: expected an object with \"generator\", got {}", state.dump());
  restore_generator_json(generator_, state.at("generator"));
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
  allocate_if_deferred(*param);
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
