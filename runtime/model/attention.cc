// Attention of the decoder (model.h): the layer itself (projections, q/k
// norms, RoPE, decoding with a KV cache) and how tokens attend to each other
// — causal rows, packed runs one call each (SegmentedCausalAttention), sliding
// windows in blocks (WindowedCausalAttention), masks for the rest.
//
// Shape legend: B batch, T tokens, C hidden, Hq query heads, Hk key/value
// heads, D head dim, S cached tokens.
#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "runtime/kernels/ops.h"
#include "runtime/model/model.h"

namespace fjord::model {

using torch::Tensor;

Attention::Attention(const ModelConfig& config, std::shared_ptr<LinearBase> q,
                     std::shared_ptr<LinearBase> k, std::shared_ptr<LinearBase> v,
                     std::shared_ptr<LinearBase> o, std::shared_ptr<RmsNormModule> qn,
                     std::shared_ptr<RmsNormModule> kn)
    : q_proj(std::move(q)),
      k_proj(std::move(k)),
      v_proj(std::move(v)),
      o_proj(std::move(o)),
      q_norm(std::move(qn)),
      k_norm(std::move(kn)),
      num_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      rotary_dim_(config.rotary_dim()),
      window_(config.sliding_window),
      dropout_(config.attention_dropout) {
  if (config.query_pre_attn_scalar > 0) scale_ = 1.0 / std::sqrt(config.query_pre_attn_scalar);
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  register_module("o_proj", o_proj);
  if (q_norm) register_module("q_norm", q_norm);
  if (k_norm) register_module("k_norm", k_norm);
}

Attention::Attention(const ModelConfig& config, std::shared_ptr<LinearBase> qkv,
                     std::shared_ptr<LinearBase> o)
    : o_proj(std::move(o)),
      qkv_proj(std::move(qkv)),
      num_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      rotary_dim_(config.rotary_dim()),
      window_(config.sliding_window),
      dropout_(config.attention_dropout) {
  // HF's order: o_proj, then qkv_proj.
  register_module("o_proj", o_proj);
  register_module("qkv_proj", qkv_proj);
}

AttentionLayout AttentionLayout::FromSegments(const Tensor& segment_ids,
                                              const torch::Device& device) {
  AttentionLayout layout;
  if (!segment_ids.defined() || segment_ids.numel() == 0) return layout;
  TORCH_CHECK(segment_ids.dim() == 2, "AttentionLayout::FromSegments: want (B, T), got ",
              segment_ids.sizes());
  const Tensor seg = segment_ids.to(torch::kCPU).to(torch::kInt64).contiguous();
  const int64_t b = seg.size(0), t = seg.size(1);
  const int64_t* p = seg.data_ptr<int64_t>();
  bool runs = true;
  int64_t total_runs = 0;
  layout.segment_lengths.resize(static_cast<size_t>(b));
  for (int64_t r = 0; r < b && runs; ++r) {
    const int64_t* row = p + r * t;
    std::unordered_set<int64_t> ended;  // ids whose run is over: one coming back needs the mask
    std::vector<int64_t>& lengths = layout.segment_lengths[static_cast<size_t>(r)];
    int64_t start = 0;
    for (int64_t i = 1; i <= t; ++i) {
      if (i < t && row[i] == row[i - 1]) continue;
      lengths.push_back(i - start);
      start = i;
      if (i == t) break;
      ended.insert(row[i - 1]);
      if (ended.count(row[i]) != 0) {
        runs = false;
        break;
      }
    }
    total_runs += static_cast<int64_t>(lengths.size());
  }
  // Runs of a few tokens each would cost a call apiece for little work: below
  // a mean of kMinMeanRun tokens one masked call is cheaper.
  constexpr int64_t kMinMeanRun = 16;
  if (runs && total_runs * kMinMeanRun > b * t) runs = false;
  if (runs) {
    if (total_runs == b) layout.segment_lengths.clear();  // one run per row: plain causal rows
    return layout;
  }
  layout.segment_lengths.clear();
  layout.mask = BlockDiagonalCausalMask(seg, device);
  return layout;
}

Tensor BlockDiagonalCausalMask(const Tensor& segment_ids, const torch::Device& device) {
  const Tensor seg = segment_ids.to(device);
  const int64_t t = seg.size(1);
  const Tensor same = seg.unsqueeze(2) == seg.unsqueeze(1);  // (B, T, T)
  const Tensor causal =
      torch::ones({t, t}, torch::TensorOptions(torch::kBool).device(device)).tril();
  return (same & causal).unsqueeze(1);  // (B, 1, T, T)
}

Tensor SegmentedCausalAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                const std::vector<std::vector<int64_t>>& segment_lengths,
                                double dropout, std::optional<double> scale, int64_t window) {
  TORCH_CHECK(
      q.dim() == 4 && k.dim() == 4 && v.dim() == 4 &&
          static_cast<int64_t>(segment_lengths.size()) == q.size(0),
      "SegmentedCausalAttention: q, k, v must be (B, H, T, D) with one length list per row");
  const bool gqa = q.size(1) != k.size(1);
  auto causal = [&](const Tensor& qs, const Tensor& ks, const Tensor& vs) {
    if (window > 0 && qs.size(2) > window) {
      return WindowedCausalAttention(qs, ks, vs, window, dropout, scale);
    }
    return at::scaled_dot_product_attention(qs, ks, vs, /*attn_mask=*/{}, dropout,
                                            /*is_causal=*/true, scale, gqa);
  };
  // unbind / split / cat / stack: their backwards are one stack, cat and
  // split each, never a zero-filled full-size gradient per piece (as
  // slicing would give).
  const std::vector<Tensor> qr = q.unbind(0), kr = k.unbind(0), vr = v.unbind(0);  // (H, T, D) each
  std::vector<Tensor> rows;
  rows.reserve(qr.size());
  for (size_t r = 0; r < qr.size(); ++r) {
    const std::vector<int64_t>& lengths = segment_lengths[r];
    int64_t total = 0;
    for (int64_t n : lengths) total += n;
    TORCH_CHECK(total == q.size(2), "SegmentedCausalAttention: row ", r,
                "'s segment lengths sum to ", total, ", not T = ", q.size(2));
    if (lengths.size() == 1) {
      rows.push_back(causal(qr[r].unsqueeze(0), kr[r].unsqueeze(0), vr[r].unsqueeze(0)).squeeze(0));
      continue;
    }
    const std::vector<Tensor> qs = qr[r].split_with_sizes(lengths, 1);  // (H, len, D) each
    const std::vector<Tensor> ks = kr[r].split_with_sizes(lengths, 1);
    const std::vector<Tensor> vs = vr[r].split_with_sizes(lengths, 1);
    std::vector<Tensor> out;
    out.reserve(lengths.size());
    for (size_t i = 0; i < lengths.size(); ++i) {
      out.push_back(causal(qs[i].unsqueeze(0), ks[i].unsqueeze(0), vs[i].unsqueeze(0)).squeeze(0));
    }
    rows.push_back(torch::cat(out, 1));  // (Hq, T, D)
  }
  return torch::stack(rows, 0);  // (B, Hq, T, D)
}

Tensor WindowedCausalAttention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window,
                               double dropout, std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && window > 0,
              "WindowedCausalAttention: q, k, v must be (B, H, T, D) and the window positive");
  const int64_t t = q.size(2);
  const bool gqa = q.size(1) != k.size(1);
  if (t <= window) {
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, dropout,
                                            /*is_causal=*/true, scale, gqa);
  }
  const auto opts = torch::TensorOptions(torch::kInt64).device(q.device());
  std::vector<Tensor> out;
  for (int64_t s = 0; s < t; s += window) {
    const int64_t e = std::min(t, s + window);
    const int64_t from = std::max<int64_t>(0, s - window + 1);  // the first key block s sees
    const Tensor qi = torch::arange(s, e, opts).view({e - s, 1});
    const Tensor kj = torch::arange(from, e, opts).view({1, e - from});
    const Tensor d = qi - kj;
    const Tensor mask = ((d >= 0) & (d < window)).view({1, 1, e - s, e - from});
    out.push_back(at::scaled_dot_product_attention(
        q.narrow(2, s, e - s), k.narrow(2, from, e - from), v.narrow(2, from, e - from), mask,
        dropout, /*is_causal=*/false, scale, gqa));  // (B, Hq, e - s, D)
  }
  return torch::cat(out, 2);  // (B, Hq, T, D)
}

Tensor Attention::forward(const Tensor& x, const Tensor& cos, const Tensor& sin,
                          const AttentionLayout& layout, LayerKvCache* cache) {
  const int64_t b = x.size(0);
  const int64_t t = x.size(1);
  std::vector<Tensor> qkv;
  if (qkv_proj) {
    // Phi3: one product, split into views (rows q, then k, then v).
    const Tensor all = qkv_proj->forward(x);  // (B, T, Hq·D + 2·Hk·D)
    const int64_t qs = num_heads_ * head_dim_, kvs = num_kv_heads_ * head_dim_;
    qkv = {all.narrow(-1, 0, qs), all.narrow(-1, qs, kvs), all.narrow(-1, qs + kvs, kvs)};
  } else {
    qkv = ForwardShared({q_proj.get(), k_proj.get(), v_proj.get()}, x);
  }
  Tensor q = qkv[0].view({b, t, num_heads_, head_dim_});     // (B, T, Hq, D)
  Tensor k = qkv[1].view({b, t, num_kv_heads_, head_dim_});  // (B, T, Hk, D)
  if (q_norm) q = q_norm->forward(q);  // Qwen3: each head normalised over D, before RoPE
  if (k_norm) k = k_norm->forward(k);
  q = q.transpose(1, 2);                                                     // (B, Hq, T, D)
  k = k.transpose(1, 2);                                                     // (B, Hk, T, D)
  Tensor v = qkv[2].view({b, t, num_kv_heads_, head_dim_}).transpose(1, 2);  // (B, Hk, T, D)
  qkv.clear();
  if (rotary_dim_ == head_dim_) {
    std::tie(q, k) = kernels::ApplyRope(q, k, cos, sin);
  } else {
    // Partial rotary (Phi-4-mini): the first rotary_dim dimensions turn, the
    // rest pass through.
    auto [q_rot, k_rot] =
        kernels::ApplyRope(q.narrow(-1, 0, rotary_dim_), k.narrow(-1, 0, rotary_dim_), cos, sin);
    q = torch::cat({q_rot, q.narrow(-1, rotary_dim_, head_dim_ - rotary_dim_)}, -1);
    k = torch::cat({k_rot, k.narrow(-1, rotary_dim_, head_dim_ - rotary_dim_)}, -1);
  }
  const double dropout = is_training() ? dropout_ : 0.0;
  const bool gqa = num_kv_heads_ != num_heads_;
  if (cache != nullptr) {
    // Decoding: this call's keys and values join the cache's; the caller's
    // mask says which of the S slots each query sees (causal, padding, window).
    TORCH_CHECK(layout.mask.defined(), "Attention: a cached call needs layout.mask");
    if (cache->k.defined()) {
      k = torch::cat({cache->k, k}, 2);  // (B, Hk, S, D)
      v = torch::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
    Tensor attn = at::scaled_dot_product_attention(q, k, v, layout.mask, 0.0, /*is_causal=*/false,
                                                   scale_, gqa);  // (B, Hq, T, D)
    attn = attn.transpose(1, 2).reshape({b, t, num_heads_ * head_dim_});
    return o_proj->forward(attn);  // (B, T, C)
  }
  // GQA through enable_gqa: no repeated k/v is materialised or saved for
  // backward. Packed rows run causal attention per segment
  // (SegmentedCausalAttention): a boolean block-diagonal mask rules out the
  // flash kernel, and on an H100 (torch 2.11, B 4, T 2048, 32/8 heads, D 64,
  // bf16) the masked call took 2.06 ms forward+backward against 0.93 ms
  // causal. Only a layout no runs can express takes the mask.
  Tensor attn;            // (B, Hq, T, D)
  bool windowed = false;  // a row or run longer than the sliding window
  if (window_ > 0) {
    if (layout.segment_lengths.empty()) {
      windowed = t > window_;
    } else {
      for (const auto& row : layout.segment_lengths) {
        for (int64_t len : row) windowed = windowed || len > window_;
      }
    }
  }
  if (windowed && layout.mask.defined()) {
    // A layout only a mask expresses: the full (T, T) mask, limited to the window.
    attn = at::scaled_dot_product_attention(q, k, v,
                                            SlidingWindowMask(b, t, layout, window_, x.device()),
                                            dropout, /*is_causal=*/false, scale_, gqa);
  } else if (windowed && layout.segment_lengths.empty()) {
    attn = WindowedCausalAttention(q, k, v, window_, dropout, scale_);
  } else if (windowed) {
    // Packed runs: those longer than the window attend through it, in blocks.
    attn = SegmentedCausalAttention(q, k, v, layout.segment_lengths, dropout, scale_, window_);
  } else if (!layout.segment_lengths.empty()) {
    attn = SegmentedCausalAttention(q, k, v, layout.segment_lengths, dropout, scale_);
  } else if (layout.mask.defined()) {
    attn = at::scaled_dot_product_attention(q, k, v, layout.mask, dropout, /*is_causal=*/false,
                                            scale_, gqa);
  } else {
    attn = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, dropout, /*is_causal=*/true,
                                            scale_, gqa);
  }
  attn = attn.transpose(1, 2).reshape({b, t, num_heads_ * head_dim_});  // (B, T, Hq·D)
  return o_proj->forward(attn);                                         // (B, T, C)
}

Tensor SlidingWindowMask(int64_t batch, int64_t length, const AttentionLayout& layout,
                         int64_t window, const torch::Device& device) {
  const Tensor i = torch::arange(length, torch::TensorOptions(torch::kInt64).device(device));
  const Tensor d = i.unsqueeze(1) - i.unsqueeze(0);  // (T, T): query - key
  const Tensor band = (d >= 0).logical_and(d < window);
  if (layout.mask.defined()) return layout.mask.logical_and(band);
  if (layout.segment_lengths.empty())
    return band.view({1, 1, length, length}).expand({batch, 1, length, length});
  // Runs: the same run id for query and key, within the band.
  Tensor ids = torch::empty({batch, length}, torch::kInt64);
  for (int64_t r = 0; r < batch; ++r) {
    int64_t at = 0, run = 0;
    for (int64_t len : layout.segment_lengths[static_cast<size_t>(r)]) {
      ids[r].narrow(0, at, len).fill_(run++);
      at += len;
    }
  }
  ids = ids.to(device);
  const Tensor same = ids.unsqueeze(2).eq(ids.unsqueeze(1));  // (B, T, T)
  return same.logical_and(band).unsqueeze(1);
}

}  // namespace fjord::model
