#include "model/llama_ops.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace ptrain {

// ---------------------------------------------------------------- norms and rotary embeddings

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // Statistics in fp32; the fp64 test path keeps fp64.
  at::Tensor x32 = x.scalar_type() == at::kDouble ? x : x.to(at::kFloat);
  at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

at::Tensor rope_inv_freq(const LlamaConfig& config) {
  const int64_t d = config.head_dim;
  std::vector<double> inv(d / 2);
  for (int64_t i = 0; i < d / 2; ++i)
    inv[i] = 1.0 / std::pow(config.rope_theta, static_cast<double>(2 * i) / static_cast<double>(d));
  const RopeScaling& s = config.rope_scaling;
  if (s.type == "linear") {
    for (double& f : inv) f /= s.factor;
  } else if (s.type == "llama3") {
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
  } else {
    PTRAIN_ASSERT(s.type == "default", "rope type {}", s.type);
  }
  return torch::tensor(inv, torch::kDouble).to(at::kFloat);
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& inv_freq,
                                              const at::Tensor& position_ids) {
  // inv_freq is a CPU constant of the config; the tables live with the positions.
  at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) *
                     inv_freq.to(position_ids.device());  // [B, T, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // In x's dtype with the tables cast to it, as Hugging Face computes it.
  at::Tensor c = cos.unsqueeze(1).to(x.scalar_type());  // [B, 1, T, d]
  at::Tensor s = sin.unsqueeze(1).to(x.scalar_type());
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c + rotated * s;
}

// ---------------------------------------------------------------- attention

at::Tensor sequence_ids_from_positions(const at::Tensor& position_ids) {
  at::Tensor starts = position_ids.eq(0).to(at::kLong);
  starts.select(1, 0).fill_(1);
  return starts.cumsum(1) - 1;
}

at::Tensor packed_causal_mask(const at::Tensor& sequence_ids, int64_t window) {
  const int64_t t = sequence_ids.size(1);
  at::Tensor idx = torch::arange(t, sequence_ids.options().dtype(at::kLong));
  at::Tensor causal = idx.unsqueeze(1) >= idx.unsqueeze(0);  // [T, T], query i, key j <= i
  if (window > 0) causal = causal & ((idx.unsqueeze(1) - idx.unsqueeze(0)) < window);
  at::Tensor same = sequence_ids.unsqueeze(2) == sequence_ids.unsqueeze(1);  // [B, T, T]
  at::Tensor real = (sequence_ids >= 0).unsqueeze(2);
  at::Tensor self = torch::eye(t, sequence_ids.options().dtype(at::kBool));
  return ((same & real & causal) | self).unsqueeze(1);
}

at::Tensor cached_causal_mask(int64_t offset, int64_t t, int64_t window, at::Device device) {
  const auto options = torch::dtype(at::kLong).device(device);
  at::Tensor query = torch::arange(offset, offset + t, options).unsqueeze(1);
  at::Tensor key = torch::arange(offset + t, options).unsqueeze(0);
  at::Tensor allowed = key <= query;
  if (window > 0) allowed = allowed & ((query - key) < window);
  return allowed.view({1, 1, t, offset + t});
}

at::Tensor attention_bias(const at::Tensor& mask, at::ScalarType dtype) {
  return torch::zeros(mask.sizes(), mask.options().dtype(dtype))
      .masked_fill_(mask.logical_not(), -std::numeric_limits<double>::infinity());
}

at::Tensor grouped_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& bias) {
  const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), d = q.size(3);
  const int64_t kv_heads = k.size(1), group = heads / kv_heads, keys = k.size(2);
  PTRAIN_ASSERT(heads % kv_heads == 0, "{} query heads over {} kv heads", heads, kv_heads);
  // Query heads h = g * group + j share kv head g: fold the group into the row dimension, so one
  // matmul per kv head serves all its query heads without repeating K or V.
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor qg = (q * scale).reshape({b, kv_heads, group * t, d});
  at::Tensor scores = at::matmul(qg, k.transpose(-1, -2));  // [B, KV, group*T, keys]
  // The softmax kernel accumulates in fp32 for bf16 input and writes probabilities in the compute
  // dtype (as Hugging Face rounds them).
  scores = (scores.view({b, kv_heads, group, t, keys}) + bias.unsqueeze(1))
               .view({b, kv_heads, group * t, keys});
  at::Tensor probs = at::softmax(scores, -1);
  return at::matmul(probs, v).view({b, heads, t, d});
}

// ---------------------------------------------------------------- blockwise attention

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Which keys a block of queries sees: an explicit additive bias [B, 1, T, S] narrowed to the
// block, or packed_causal_mask's rule evaluated from sequence ids [B, S] for the block alone. The
// T queries are the last T of the S key positions (offset = S - T).
struct BlockVisibility {
  at::Tensor mask;  // the bias, or the sequence ids
  bool from_ids = false;
  int64_t window = 0;
  int64_t offset = 0;

  // Keys [first, end) of queries [begin, begin + len): none after the block's last query, and with
  // a window none before the first query's window.
  std::pair<int64_t, int64_t> keys(int64_t begin, int64_t len) const {
    const int64_t end = offset + begin + len;
    const int64_t first =
        from_ids && window > 0 ? std::max<int64_t>(0, offset + begin - window + 1) : 0;
    return {first, end};
  }

  // Masks scores s [B, KV, group, len, keys] (the acc dtype) of queries [begin, begin + len)
  // against keys [first, end) in place.
  void apply(at::Tensor& s, int64_t begin, int64_t len, int64_t first, int64_t end) const {
    const int64_t n = end - first;
    if (!from_ids) {
      s.add_(mask.narrow(2, begin, len).narrow(3, first, n).unsqueeze(1).to(s.scalar_type()));
      return;
    }
    const int64_t b = mask.size(0), query = offset + begin;
    at::Tensor query_ids = mask.narrow(1, query, len).unsqueeze(2);  // [B, len, 1]
    at::Tensor key_ids = mask.narrow(1, first, n).unsqueeze(1);      // [B, 1, keys]
    at::Tensor query_pos = torch::arange(query, query + len, mask.options()).unsqueeze(1);
    at::Tensor key_pos = torch::arange(first, end, mask.options()).unsqueeze(0);
    at::Tensor seen = key_pos.le(query_pos);  // [len, keys]
    if (window > 0) seen.logical_and_(key_pos.gt(query_pos - window));
    at::Tensor allowed = query_ids.eq(key_ids).logical_and_(query_ids.ge(0)).logical_and_(seen);
    allowed.logical_or_(key_pos.eq(query_pos));  // a padding token sees itself
    s.masked_fill_(allowed.logical_not_().view({b, 1, 1, len, n}),
                   -std::numeric_limits<double>::infinity());
  }
};

// Attention over query blocks (the flash-attention recurrence, in libtorch ops): for each block of
// `block` queries, scores against the keys the mask can allow (none after the block's last query),
// softmax with fp32 statistics, and the weighted values. Only the output and each row's
// log-sum-exp are kept for backward, which recomputes the block's probabilities; the [T, S]
// scores of a head never exist in full, nor (with sequence ids) does a [T, S] mask.
class BlockAttention : public torch::autograd::Function<BlockAttention> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& mask, bool from_ids,
                            int64_t window, int64_t block) {
    const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), d = q.size(3);
    const int64_t kv_heads = k.size(1), group = heads / kv_heads;
    const BlockVisibility visibility{mask, from_ids, window, k.size(2) - t};
    const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    at::Tensor out = torch::empty_like(q);
    at::Tensor lse = torch::empty({b, kv_heads, group, t}, q.options().dtype(acc));
    at::Tensor qs = q * scale;
    for (int64_t begin = 0; begin < t; begin += block) {
      const int64_t len = std::min(block, t - begin);
      const auto [first, end] = visibility.keys(begin, len);
      const int64_t n = end - first;
      at::Tensor qb = qs.narrow(2, begin, len).reshape({b, kv_heads, group * len, d});
      at::Tensor s = at::matmul(qb, k.narrow(2, first, n).transpose(-1, -2))
                         .to(acc)
                         .view({b, kv_heads, group, len, n});
      visibility.apply(s, begin, len, first, end);
      at::Tensor row_lse = at::logsumexp(s, -1);  // [B, KV, group, len]
      lse.narrow(3, begin, len).copy_(row_lse);
      at::Tensor p = s.sub_(row_lse.unsqueeze(-1)).exp_().to(q.scalar_type());
      at::Tensor ob = at::matmul(p.view({b, kv_heads, group * len, n}), v.narrow(2, first, n));
      out.narrow(2, begin, len).copy_(ob.view({b, heads, len, d}));
    }
    ctx->save_for_backward({q, k, v, mask, out, lse});
    ctx->saved_data["from_ids"] = from_ids;
    ctx->saved_data["window"] = window;
    ctx->saved_data["block"] = block;
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &mask = saved[3], &out = saved[4],
                     &lse = saved[5];
    const int64_t block = ctx->saved_data["block"].toInt();
    const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), d = q.size(3);
    const int64_t kv_heads = k.size(1), group = heads / kv_heads;
    const BlockVisibility visibility{mask, ctx->saved_data["from_ids"].toBool(),
                                     ctx->saved_data["window"].toInt(), k.size(2) - t};
    const at::ScalarType acc = lse.scalar_type();
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    at::Tensor dout = grad_outputs[0].contiguous();
    // D_i = sum_e dout_ie * out_ie: the softmax backward's row term.
    at::Tensor delta = (dout.to(acc) * out.to(acc)).sum(-1).view({b, kv_heads, group, t});
    at::Tensor qs = q * scale;
    at::Tensor dq = torch::empty_like(q);
    at::Tensor dk = torch::zeros(k.sizes(), k.options().dtype(acc));
    at::Tensor dv = torch::zeros(v.sizes(), v.options().dtype(acc));
    for (int64_t begin = 0; begin < t; begin += block) {
      const int64_t len = std::min(block, t - begin);
      const auto [first, end] = visibility.keys(begin, len);
      const int64_t n = end - first;
      at::Tensor kk = k.narrow(2, first, n), vv = v.narrow(2, first, n);
      at::Tensor qb = qs.narrow(2, begin, len).reshape({b, kv_heads, group * len, d});
      at::Tensor s =
          at::matmul(qb, kk.transpose(-1, -2)).to(acc).view({b, kv_heads, group, len, n});
      visibility.apply(s, begin, len, first, end);
      at::Tensor p = s.sub_(lse.narrow(3, begin, len).unsqueeze(-1)).exp_();  // [B,KV,G,len,n]
      at::Tensor dob = dout.narrow(2, begin, len).reshape({b, kv_heads, group * len, d});
      at::Tensor p2 = p.view({b, kv_heads, group * len, n});
      dv.narrow(2, first, n)
          .add_(at::matmul(p2.to(q.scalar_type()).transpose(-1, -2), dob).to(acc));
      at::Tensor dp =
          at::matmul(dob, vv.transpose(-1, -2)).to(acc).view({b, kv_heads, group, len, n});
      at::Tensor ds = (p * (dp - delta.narrow(3, begin, len).unsqueeze(-1)))
                          .view({b, kv_heads, group * len, n})
                          .to(q.scalar_type());
      dq.narrow(2, begin, len).copy_((at::matmul(ds, kk) * scale).view({b, heads, len, d}));
      dk.narrow(2, first, n).add_(at::matmul(ds.transpose(-1, -2), qb).to(acc));
    }
    return {dq,           dk.to(k.scalar_type()), dv.to(v.scalar_type()),
            at::Tensor(), at::Tensor(),           at::Tensor(),
            at::Tensor()};
  }
};

void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  PTRAIN_ASSERT(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() &&
                    q.size(1) % k.size(1) == 0 && q.size(2) <= k.size(2),
                "attention over q {}, k {}, v {}", shape_string(q.sizes()), shape_string(k.sizes()),
                shape_string(v.sizes()));
}

}  // namespace

at::Tensor blockwise_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& bias, int64_t block) {
  check_attention_inputs(q, k, v);
  return BlockAttention::apply(q, k.contiguous(), v.contiguous(), bias, false, int64_t{0},
                               std::max<int64_t>(1, block));
}

at::Tensor blockwise_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& sequence_ids, int64_t window, int64_t block) {
  check_attention_inputs(q, k, v);
  PTRAIN_ASSERT(sequence_ids.dim() == 2 && sequence_ids.size(0) == q.size(0) &&
                    sequence_ids.size(1) == k.size(2),
                "sequence ids {} for keys {}", shape_string(sequence_ids.sizes()),
                shape_string(k.sizes()));
  return BlockAttention::apply(q, k.contiguous(), v.contiguous(), sequence_ids, true, window,
                               std::max<int64_t>(1, block));
}

// ---------------------------------------------------------------- loss

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

class ChunkedCrossEntropy : public torch::autograd::Function<ChunkedCrossEntropy> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& labels, int64_t chunk) {
    const int64_t n = hidden.size(0);
    const at::ScalarType acc = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor total = torch::zeros({}, hidden.options().dtype(acc));
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t len = std::min(chunk, n - begin);
      at::Tensor logits = at::matmul(hidden.narrow(0, begin, len), weight.t());
      at::Tensor log_probs = at::log_softmax(logits, -1, acc);  // converts inside the kernel
      at::Tensor lab = labels.narrow(0, begin, len);
      at::Tensor valid = lab.ne(-100).to(acc);
      total -= (log_probs.gather(1, lab.clamp_min(0).unsqueeze(1)).squeeze(1) * valid).sum();
    }
    ctx->save_for_backward({hidden, weight, labels});
    ctx->saved_data["chunk"] = chunk;
    return total;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &weight = saved[1], &labels = saved[2];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const at::ScalarType acc = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor g = grad_outputs[0];
    const bool weight_needs_grad = ctx->needs_input_grad(1);
    at::Tensor grad_hidden = torch::empty_like(hidden);
    at::Tensor grad_weight;  // fp32 sum over chunks
    const int64_t n = hidden.size(0);
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t len = std::min(chunk, n - begin);
      at::Tensor h = hidden.narrow(0, begin, len);
      at::Tensor lab = labels.narrow(0, begin, len);
      // d loss / d logits = softmax - onehot(label), zero on ignored rows, times the upstream
      // grad, in fp32; cast to the compute dtype for the two matmuls.
      at::Tensor d = at::softmax(at::matmul(h, weight.t()), -1, acc);
      d.scatter_add_(1, lab.clamp_min(0).unsqueeze(1), -torch::ones({len, 1}, d.options()));
      d.mul_((lab.ne(-100).to(acc) * g).unsqueeze(1));
      at::Tensor dc = d.to(hidden.scalar_type());
      grad_hidden.narrow(0, begin, len).copy_(at::matmul(dc, weight));
      if (!weight_needs_grad) continue;  // frozen lm_head (LoRA): skip the [V, H] matmul
      at::Tensor chunk_grad = at::matmul(dc.t(), h).to(acc);
      grad_weight = grad_weight.defined() ? grad_weight.add_(chunk_grad) : chunk_grad;
    }
    if (!weight_needs_grad) return {grad_hidden, at::Tensor(), at::Tensor(), at::Tensor()};
    if (!grad_weight.defined())
      grad_weight = torch::zeros(weight.sizes(), weight.options().dtype(acc));
    return {grad_hidden, grad_weight.to(weight.scalar_type()), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor chunked_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight,
                                     const at::Tensor& labels, int64_t chunk_tokens) {
  const int64_t vocab = weight.size(0);
  PTRAIN_CHECK(
      labels.numel() == 0 ||
          (labels.eq(-100) | (labels.ge(0) & labels.lt(vocab))).all().item<bool>(),
      "labels must be token ids in [0, {}) or -100 (no loss); found {}", vocab,
      labels.masked_select(labels.ne(-100) & (labels.lt(0) | labels.ge(vocab)))[0].item<int64_t>());
  PTRAIN_ASSERT(hidden.dim() == 2 && labels.dim() == 1 && hidden.size(0) == labels.size(0),
                "hidden {} labels {}", shape_string(hidden.sizes()), shape_string(labels.sizes()));
  return ChunkedCrossEntropy::apply(hidden, weight, labels, std::max<int64_t>(1, chunk_tokens));
}

}  // namespace ptrain
