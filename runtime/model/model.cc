// The decoder (Llama, Qwen2/3, Mistral, Phi3, Gemma 3): embeddings, blocks
// (RMSNorm -> attention with RoPE -> residual, RMSNorm -> gated MLP ->
// residual; Gemma's norms on both sides), final RMSNorm, lm_head; decoding
// on a KV cache. Attention itself: attention.cc; gradient checkpointing of a
// block: layer_checkpoint.cc; loading from a Hugging Face checkpoint:
// model_load.cc.
//
// Shape legend: B batch, T tokens, C hidden, Hq query heads, Hk key/value
// heads, D head dim, I intermediate, V vocab.
#include "runtime/model/model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/utils.h>

#include <cmath>
#include <functional>
#include <unordered_set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/kernels/ops.h"
#include "runtime/model/head_loss.h"
#include "runtime/model/layer_checkpoint.h"
#include "runtime/util/status_macros.h"

namespace fjord::model {

using torch::Tensor;

// ---- Modules ----

RmsNormModule::RmsNormModule(Tensor weight, double eps, bool gemma) : eps_(eps), gemma_(gemma) {
  weight_ = register_parameter("weight", std::move(weight), /*requires_grad=*/false);
}

Tensor RmsNormModule::forward(const Tensor& x) {
  return gemma_ ? kernels::GemmaRmsNorm(x, weight_, eps_) : kernels::RmsNorm(x, weight_, eps_);
}

Mlp::Mlp(std::shared_ptr<LinearBase> gate, std::shared_ptr<LinearBase> up,
         std::shared_ptr<LinearBase> down, bool gelu)
    : gate_proj(std::move(gate)), up_proj(std::move(up)), down_proj(std::move(down)), gelu_(gelu) {
  register_module("gate_proj", gate_proj);
  register_module("up_proj", up_proj);
  register_module("down_proj", down_proj);
}

Mlp::Mlp(std::shared_ptr<LinearBase> gate_up, std::shared_ptr<LinearBase> down)
    : down_proj(std::move(down)), gate_up_proj(std::move(gate_up)) {
  register_module("gate_up_proj", gate_up_proj);
  register_module("down_proj", down_proj);
}

Tensor Mlp::forward(const Tensor& x) {
  std::vector<Tensor> gate_up;
  if (gate_up_proj) {
    const Tensor both = gate_up_proj->forward(x);  // (B, T, 2·I): gate, then up
    const int64_t i = both.size(-1) / 2;
    gate_up = {both.narrow(-1, 0, i), both.narrow(-1, i, i)};
  } else {
    gate_up = ForwardShared({gate_proj.get(), up_proj.get()}, x);
  }
  Tensor h = gelu_ ? kernels::GeGlu(gate_up[0], gate_up[1])    // (B, T, I)
                   : kernels::SwiGlu(gate_up[0], gate_up[1]);  // (B, T, I)
  gate_up.clear();
  return down_proj->forward(h);  // (B, T, C)
}

DecoderLayer::DecoderLayer(std::shared_ptr<RmsNormModule> input_ln, std::shared_ptr<Attention> attn,
                           std::shared_ptr<RmsNormModule> post_ln, std::shared_ptr<Mlp> mlp_in,
                           std::shared_ptr<RmsNormModule> pre_ff_ln,
                           std::shared_ptr<RmsNormModule> post_ff_ln)
    : input_layernorm(std::move(input_ln)),
      self_attn(std::move(attn)),
      post_attention_layernorm(std::move(post_ln)),
      mlp(std::move(mlp_in)),
      pre_feedforward_layernorm(std::move(pre_ff_ln)),
      post_feedforward_layernorm(std::move(post_ff_ln)) {
  TORCH_CHECK((pre_feedforward_layernorm == nullptr) == (post_feedforward_layernorm == nullptr),
              "DecoderLayer: pre- and post-feedforward norms come together");
  // Registration order follows HF's named_parameters().
  register_module("self_attn", self_attn);
  register_module("mlp", mlp);
  register_module("input_layernorm", input_layernorm);
  register_module("post_attention_layernorm", post_attention_layernorm);
  if (pre_feedforward_layernorm) {
    register_module("pre_feedforward_layernorm", pre_feedforward_layernorm);
    register_module("post_feedforward_layernorm", post_feedforward_layernorm);
  }
}

Tensor DecoderLayer::forward(const Tensor& x, const Tensor& cos, const Tensor& sin,
                             const AttentionLayout& layout, LayerKvCache* cache) {
  if (pre_feedforward_layernorm) {  // Gemma 3: norms on both sides of each block
    Tensor h = x + post_attention_layernorm->forward(
                       self_attn->forward(input_layernorm->forward(x), cos, sin, layout, cache));
    return h + post_feedforward_layernorm->forward(
                   mlp->forward(pre_feedforward_layernorm->forward(h)));  // (B, T, C)
  }
  Tensor h =
      x + self_attn->forward(input_layernorm->forward(x), cos, sin, layout, cache);  // (B, T, C)
  return h + mlp->forward(post_attention_layernorm->forward(h));                     // (B, T, C)
}

DecoderStack::DecoderStack(Tensor embed, std::vector<std::shared_ptr<DecoderLayer>> layers_in,
                           std::shared_ptr<RmsNormModule> norm_in)
    : layers(std::move(layers_in)), norm(std::move(norm_in)) {
  auto embed_tokens = std::make_shared<torch::nn::Module>("Embedding");
  embed_weight = embed_tokens->register_parameter("weight", std::move(embed), false);
  register_module("embed_tokens", embed_tokens);
  torch::nn::ModuleList list;
  for (const auto& layer : layers) list->push_back(layer);
  register_module("layers", list);
  register_module("norm", norm);
}

// ---- CausalLM ----

CausalLM::CausalLM(
    ModelConfig config, torch::Dtype dtype, torch::Device device,
    const std::function<Tensor(const std::string&, const std::vector<int64_t>&)>& weight,
    const LinearMaker& make_linear, std::string quantization,
    std::shared_ptr<ShardGroup> shard_group)
    : config_(std::move(config)),
      dtype_(dtype),
      device_(device),
      quantization_(std::move(quantization)),
      shard_group_(std::move(shard_group)) {
  const ModelConfig& c = config_;
  auto linear = [&](const std::string& prefix, int64_t out, int64_t in, bool bias) {
    if (make_linear) return make_linear(prefix, out, in, bias);
    Tensor w = weight(prefix + ".weight", {out, in});
    Tensor b = bias ? weight(prefix + ".bias", {out}) : Tensor();
    return std::static_pointer_cast<LinearBase>(std::make_shared<DenseLinear>(w, b));
  };
  Tensor embed = weight("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  std::vector<std::shared_ptr<DecoderLayer>> layers;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i);
    std::shared_ptr<Attention> attn;
    std::shared_ptr<Mlp> mlp;
    if (c.fused_projections) {
      attn = std::make_shared<Attention>(
          c,
          linear(p + ".self_attn.qkv_proj", c.q_size() + 2 * c.kv_size(), c.hidden_size,
                 c.qkv_bias),
          linear(p + ".self_attn.o_proj", c.hidden_size, c.q_size(), c.o_proj_bias));
      mlp = std::make_shared<Mlp>(
          linear(p + ".mlp.gate_up_proj", 2 * c.intermediate_size, c.hidden_size, c.mlp_bias),
          linear(p + ".mlp.down_proj", c.hidden_size, c.intermediate_size, c.mlp_bias));
    }
    const bool g = c.gemma_norms;
    auto norm = [&](const std::string& name, int64_t size) {
      return std::make_shared<RmsNormModule>(weight(name, {size}), c.rms_norm_eps, g);
    };
    if (!attn) {
      attn = std::make_shared<Attention>(
          c, linear(p + ".self_attn.q_proj", c.q_size(), c.hidden_size, c.qkv_bias),
          linear(p + ".self_attn.k_proj", c.kv_size(), c.hidden_size, c.qkv_bias),
          linear(p + ".self_attn.v_proj", c.kv_size(), c.hidden_size, c.qkv_bias),
          linear(p + ".self_attn.o_proj", c.hidden_size, c.q_size(), c.o_proj_bias),
          c.qk_norm ? norm(p + ".self_attn.q_norm.weight", c.head_dim) : nullptr,
          c.qk_norm ? norm(p + ".self_attn.k_norm.weight", c.head_dim) : nullptr);
    }
    attn->SetSlidingWindow(c.IsSlidingLayer(i) ? c.sliding_window : 0);
    if (!mlp) {
      mlp = std::make_shared<Mlp>(
          linear(p + ".mlp.gate_proj", c.intermediate_size, c.hidden_size, c.mlp_bias),
          linear(p + ".mlp.up_proj", c.intermediate_size, c.hidden_size, c.mlp_bias),
          linear(p + ".mlp.down_proj", c.hidden_size, c.intermediate_size, c.mlp_bias), c.gelu_mlp);
    }
    auto ln1 = norm(p + ".input_layernorm.weight", c.hidden_size);
    auto ln2 = norm(p + ".post_attention_layernorm.weight", c.hidden_size);
    std::shared_ptr<RmsNormModule> ln3, ln4;
    if (g) {  // Gemma 3: around the MLP too
      ln3 = norm(p + ".pre_feedforward_layernorm.weight", c.hidden_size);
      ln4 = norm(p + ".post_feedforward_layernorm.weight", c.hidden_size);
    }
    layers.push_back(std::make_shared<DecoderLayer>(ln1, attn, ln2, mlp, ln3, ln4));
  }
  auto norm = std::make_shared<RmsNormModule>(weight("model.norm.weight", {c.hidden_size}),
                                              c.rms_norm_eps, c.gemma_norms);
  model = register_module("model", std::make_shared<DecoderStack>(embed, std::move(layers), norm));
  if (c.tie_word_embeddings && shard_group_ != nullptr) {
    lm_head =
        std::make_shared<ShardedLinear>(model->embed_weight, c.vocab_size, Tensor(), shard_group_,
                                        LargeMatrixPieces(shard_group_->size()));
  } else if (c.tie_word_embeddings) {
    lm_head = std::make_shared<DenseLinear>(model->embed_weight, Tensor());
  } else {
    lm_head = linear("lm_head", c.vocab_size, c.hidden_size, false);
  }
  register_module("lm_head", lm_head);
  inv_freq_ = RopeInvFreq(c);
  inv_freq_device_ = inv_freq_.to(device_);
  if (c.rope_scaling.type == RopeType::kLongRope) {
    inv_freq_long_ = RopeInvFreq(c, /*long_factors=*/true).to(device_);
  }
  if (c.local_rope_theta > 0) {  // Gemma 3's sliding layers: their own base, no scaling
    ModelConfig local = c;
    local.rope_theta = c.local_rope_theta;
    local.rope_scaling = RopeScaling();
    inv_freq_local_ = RopeInvFreq(local).to(device_);
  }
  device_ = inv_freq_device_.device();  // "cuda" -> "cuda:<current>"
}

std::shared_ptr<CausalLM> CausalLM::RandomInit(const ModelConfig& config, torch::Dtype dtype,
                                               torch::Device device, uint64_t seed) {
  const absl::Status valid = config.Validate();
  TORCH_CHECK(valid.ok(), "CausalLM::RandomInit: ", valid.ToString());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto weight = [&](const std::string& name, const std::vector<int64_t>& shape) {
    const bool is_norm = absl::EndsWith(name, "norm.weight");
    Tensor w = is_norm ? torch::ones(shape)
                       : at::normal(0.0, 0.02, shape, gen, torch::TensorOptions(torch::kFloat32));
    return w.to(device, dtype);
  };
  return std::make_shared<CausalLM>(config, dtype, device, weight);
}

int64_t CausalLM::BaseBytes() {
  int64_t total = 0;
  std::unordered_set<const void*> seen;  // tied embeddings count once
  auto add = [&](const Tensor& t) {
    if (!t.defined() || !seen.insert(t.data_ptr()).second) return;
    total += t.numel() * static_cast<int64_t>(t.element_size());
  };
  for (const auto& p : named_parameters()) {
    if (!p.value().requires_grad()) add(p.value());
  }
  for (const auto& b : named_buffers()) add(b.value());  // 4-bit weights
  return total;
}

CausalLM::Rotary CausalLM::RotaryTables(const Tensor& position_ids) {
  // Rotary tables in fp32, gathered per position (packed rows restart).
  // (A model moved with to() after construction gets a fresh copy per call.)
  Tensor inv_freq =
      inv_freq_device_.device() == device_ ? inv_freq_device_ : inv_freq_.to(device_);  // (D/2)
  const RopeScaling& rope = config_.rope_scaling;
  if (rope.type == RopeType::kLongRope && position_ids.numel() > 0 &&
      position_ids.max().item<int64_t>() + 1 > rope.original_max_position_embeddings) {
    // As transformers: the long factors for the whole forward once any
    // position lies beyond the pre-training length.
    inv_freq = inv_freq_long_.to(device_);
  }
  const Tensor pos = position_ids.to(device_).to(torch::kFloat32);  // (B, T)
  auto tables = [&](const Tensor& inv, double scale) {
    Tensor freqs = pos.unsqueeze(-1) * inv.view({1, 1, -1});  // (B, T, D/2)
    Tensor emb = torch::cat({freqs, freqs}, -1);              // (B, T, D)
    if (scale == 1.0) return std::pair<Tensor, Tensor>(emb.cos(), emb.sin());
    return std::pair<Tensor, Tensor>(emb.cos() * scale, emb.sin() * scale);
  };
  Rotary r;
  std::tie(r.cos, r.sin) =
      tables(inv_freq, rope.type == RopeType::kLongRope ? rope.attention_factor : 1.0);
  // Gemma 3's sliding layers rotate with their own base.
  if (inv_freq_local_.defined()) {
    std::tie(r.cos_local, r.sin_local) = tables(inv_freq_local_.to(device_), 1.0);
  }
  return r;
}

Tensor CausalLM::Embed(const Tensor& ids) {
  if (ids.numel() > 0) {
    const bool in_range = ((ids >= 0) & (ids < config_.vocab_size)).all().item<bool>();
    TORCH_CHECK_INDEX(in_range, "CausalLM: token ids must be in [0, ", config_.vocab_size, ")");
  }
  Tensor x;  // (B, T, C)
  if (shard_group_ != nullptr) {
    // Each rank embeds its own batch (data parallel: the ranks' ids differ),
    // so the table is gathered piece by piece for the lookup (never whole).
    x = ShardedEmbedding(model->embed_weight, config_.vocab_size, ids, *shard_group_,
                         LargeMatrixPieces(shard_group_->size()));
  } else {
    x = torch::embedding(model->embed_weight, ids);
  }
  if (config_.embedding_scale > 0) {
    // Gemma: times sqrt(hidden_size), the factor rounded to the model's dtype
    // first as transformers does.
    x = x * torch::scalar_tensor(config_.embedding_scale, x.options());
  }
  return x;
}

Tensor CausalLM::HiddenWithCache(const Tensor& input_ids, const Tensor& position_ids,
                                 KvCache& cache, const Tensor& new_valid) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(input_ids.defined() && input_ids.dim() == 2 &&
                  input_ids.scalar_type() == torch::kInt64 && input_ids.size(1) > 0,
              "CausalLM::HiddenWithCache: input_ids must be (B, T) int64 with T > 0");
  TORCH_CHECK(position_ids.defined() && position_ids.sizes() == input_ids.sizes() &&
                  position_ids.scalar_type() == torch::kInt64,
              "CausalLM::HiddenWithCache: position_ids must be int64 of shape ", input_ids.sizes());
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const int64_t before = cache.length();
  TORCH_CHECK(before == 0 || cache.key_valid.size(0) == b,
              "CausalLM::HiddenWithCache: the cache holds a batch of ", cache.key_valid.size(0),
              " rows, not ", b);
  Tensor valid = new_valid.defined()
                     ? new_valid.to(device_).to(torch::kBool)
                     : torch::ones({b, t}, torch::TensorOptions(torch::kBool).device(device_));
  TORCH_CHECK(valid.sizes() == input_ids.sizes(),
              "CausalLM::HiddenWithCache: new_valid must be (B, T) like input_ids");
  cache.key_valid = before == 0 ? valid : torch::cat({cache.key_valid, valid}, 1);  // (B, S)
  const int64_t s = before + t;
  if (cache.layers.empty()) cache.layers.resize(model->layers.size());

  // Query i (slot before + i) sees slot j when j <= before + i and j holds a
  // token; a padding query sees itself (so that no row is empty).
  const auto opts = torch::TensorOptions(torch::kInt64).device(device_);
  const Tensor qi = torch::arange(before, s, opts).view({t, 1});  // (T, 1)
  const Tensor kj = torch::arange(s, opts).view({1, s});          // (1, S)
  const Tensor causal = (kj <= qi).view({1, 1, t, s});
  const Tensor self = (kj == qi).view({1, 1, t, s});
  const Tensor keys = cache.key_valid.view({b, 1, 1, s});
  AttentionLayout full, windowed;
  full.mask = (causal & keys) | self;  // (B, 1, T, S)
  if (config_.sliding_window > 0) {
    windowed.mask = full.mask & ((qi - kj) < config_.sliding_window).view({1, 1, t, s});
  }

  const Rotary rotary = RotaryTables(position_ids);
  Tensor x = Embed(input_ids.to(device_));  // (B, T, C)
  for (size_t i = 0; i < model->layers.size(); ++i) {
    const bool local = rotary.Local(config_, i);
    const AttentionLayout& layout =
        config_.IsSlidingLayer(static_cast<int64_t>(i)) ? windowed : full;
    x = model->layers[i]->forward(x, local ? rotary.cos_local : rotary.cos,
                                  local ? rotary.sin_local : rotary.sin, layout, &cache.layers[i]);
  }
  return model->norm->forward(x);  // (B, T, C)
}

Tensor CausalLM::Hidden(const Tensor& input_ids, const Tensor& position_ids,
                        const Tensor& segment_ids) {
  TORCH_CHECK(input_ids.defined() && input_ids.dim() == 2,
              "CausalLM::Hidden: input_ids must be (B, T), got ",
              input_ids.defined() ? input_ids.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(input_ids.scalar_type() == torch::kInt64,
              "CausalLM::Hidden: input_ids must be int64, got ", input_ids.scalar_type());
  TORCH_CHECK(position_ids.defined() && position_ids.sizes() == input_ids.sizes() &&
                  position_ids.scalar_type() == torch::kInt64,
              "CausalLM::Hidden: position_ids must be int64 of shape ", input_ids.sizes());
  if (segment_ids.defined()) {
    TORCH_CHECK(
        segment_ids.sizes() == input_ids.sizes() && (segment_ids.scalar_type() == torch::kInt64 ||
                                                     segment_ids.scalar_type() == torch::kInt32),
        "CausalLM::Hidden: segment_ids must be int32/int64 of shape ", input_ids.sizes());
  }
  const Tensor ids = input_ids.to(device_);  // (B, T)
  const Rotary rotary = RotaryTables(position_ids);
  const AttentionLayout layout = AttentionLayout::FromSegments(segment_ids, device_);
  Tensor x = Embed(ids);  // (B, T, C)
  const bool checkpoint = gradient_checkpointing_ && torch::GradMode::is_enabled();
  // A sharded base: the next layer's weights are gathered while this one
  // computes (its own were started during the layer before; the first
  // layer's gather waits).
  auto prefetch = [&](size_t i) {
    if (shard_group_ == nullptr || !prefetch_ || i >= model->layers.size()) return;
    ForEachShardedLinear(i, [](ShardedLinear& s) { s.Prefetch(); });
  };
  // And in backward (PrefetchBackward), from a hook on each layer's output:
  // which layers' inputs and outputs need a gradient decides which gathers
  // backward will make.
  const bool backward_prefetch =
      shard_group_ != nullptr && prefetch_ && torch::GradMode::is_enabled();
  auto needs_grad = std::make_shared<std::vector<LayerGrads>>();
  size_t index = 0;
  for (const auto& layer : model->layers) {
    const bool local = rotary.Local(config_, index);
    const Tensor& layer_cos = local ? rotary.cos_local : rotary.cos;
    const Tensor& layer_sin = local ? rotary.sin_local : rotary.sin;
    const size_t i = index;
    prefetch(++index);
    const bool input_grad = x.requires_grad();
    auto hook = [&] {
      needs_grad->push_back({input_grad, x.requires_grad()});
      if (!backward_prefetch || !x.requires_grad()) return;
      x.register_hook([this, i, needs_grad, checkpoint](const Tensor&) {
        PrefetchBackward(i, *needs_grad, checkpoint);
      });
    };
    x = checkpoint ? CheckpointedLayer(layer, x, layer_cos, layer_sin, layout)
                   : layer->forward(x, layer_cos, layer_sin, layout);
    hook();
  }
  return model->norm->forward(x);  // (B, T, C)
}

void CausalLM::ForEachShardedLinear(size_t layer, const std::function<void(ShardedLinear&)>& fn) {
  const DecoderLayer& l = *model->layers[layer];
  for (const auto* linear : {&l.self_attn->q_proj, &l.self_attn->k_proj, &l.self_attn->v_proj,
                             &l.self_attn->qkv_proj, &l.self_attn->o_proj, &l.mlp->gate_proj,
                             &l.mlp->up_proj, &l.mlp->gate_up_proj, &l.mlp->down_proj}) {
    if (*linear == nullptr) continue;  // the fused or the separate projections
    if (auto* s = dynamic_cast<ShardedLinear*>((*linear)->frozen_base())) fn(*s);
  }
}

void CausalLM::PrefetchBackward(size_t i, const std::vector<LayerGrads>& needs_grad,
                                bool checkpoint) {
  // The gradient has reached layer i's output: its backward is next, then
  // layer i-1's. Every rank's backward reaches the same layers in the same
  // order, so the gathers started here are in the same order everywhere.
  if (checkpoint) {
    // Layer i's recompute (whose weights then serve its backward: see
    // CheckpointedLayer), and layer i-1's recompute, where it has one.
    ForEachShardedLinear(i, [](ShardedLinear& s) { s.Prefetch(); });
    if (i > 0 && needs_grad[i - 1].output) {
      ForEachShardedLinear(i - 1, [](ShardedLinear& s) { s.Prefetch(); });
    }
    return;
  }
  // Layers' input gradients: only for a layer whose input needs one (else
  // backward does not reach its linear layers' inputs: layer 0's).
  for (size_t j : {i, i - 1}) {
    if (j > i || !needs_grad[j].input) continue;  // j = i - 1 wrapped below 0
    ForEachShardedLinear(j, [](ShardedLinear& s) { s.PrefetchForBackward(); });
  }
}

Tensor CausalLM::Logits(const Tensor& hidden) {
  Tensor logits = lm_head->forward(hidden).to(torch::kFloat32);  // (..., V)
  const double cap = config_.final_logit_softcapping;
  if (cap > 0) logits = torch::tanh(logits / cap) * cap;
  return logits;
}

namespace {

// hidden (B, T, C) and targets (B, T) int64 as (N, C) and (N), checked.
std::pair<Tensor, Tensor> LossRows(const char* what, const Tensor& hidden, const Tensor& targets) {
  TORCH_CHECK(hidden.defined() && hidden.dim() == 3, what, ": hidden must be (B, T, C)");
  TORCH_CHECK(targets.defined() && targets.dim() == 2 && targets.size(0) == hidden.size(0) &&
                  targets.size(1) == hidden.size(1) && targets.scalar_type() == torch::kInt64,
              what, ": targets must be int64 of shape (B, T) = (", hidden.size(0), ", ",
              hidden.size(1), ")");
  return {hidden.reshape({-1, hidden.size(2)}), targets.to(hidden.device()).reshape({-1})};
}

}  // namespace

int64_t CausalLM::LossChunkRows(const Tensor& h) const {
  // On CPU, rows of logits per chunk such that one (rows, V) fp32 buffer is
  // ~64 MiB (524 rows for V = 32000): the loss's transient memory stays flat
  // while the GEMMs stay large enough to run at full speed. The fused CUDA
  // kernel keeps its default.
  return h.is_cuda()
             ? 4096
             : std::max<int64_t>(64, (int64_t{1} << 24) / std::max<int64_t>(1, config_.vocab_size));
}

ShardedLinear* CausalLM::ShardedHead() const {
  auto* sharded = dynamic_cast<ShardedLinear*>(lm_head.get());
  return sharded != nullptr && !sharded->base_bias().defined() ? sharded : nullptr;
}

Tensor CausalLM::TokenLosses(const Tensor& hidden, const Tensor& targets) {
  auto [h, y] = LossRows("CausalLM::TokenLosses", hidden, targets);
  if (ShardedLinear* sharded = ShardedHead(); sharded != nullptr) {
    return ShardedLinearCrossEntropy(h, *sharded, y, LossChunkRows(h) * sharded->pieces().count,
                                     config_.final_logit_softcapping);
  }
  return torch::nn::functional::cross_entropy(
      Logits(h), y,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone));
}

Tensor CausalLM::LossSum(const Tensor& hidden, const Tensor& targets) {
  auto [h, y] = LossRows("CausalLM::LossSum", hidden, targets);
  const int64_t chunk = LossChunkRows(h);
  if (ShardedLinear* sharded = ShardedHead(); sharded != nullptr) {
    // A sharded lm_head is never gathered whole: the loss runs over its
    // pieces (ShardedLinearCrossEntropySum), soft-capped or not. Each piece
    // has ~V/pieces columns, so the same chunk of rows keeps ~64 MiB.
    return ShardedLinearCrossEntropySum(h, *sharded, y, chunk * sharded->pieces().count,
                                        config_.final_logit_softcapping);
  }
  const std::optional<LinearParts> parts = lm_head->Parts();
  const double cap = config_.final_logit_softcapping;
  if (parts.has_value() && !parts->bias.defined() && !parts->a.defined() && cap == 0) {
    return kernels::LinearCrossEntropySum(h, parts->weight, y, chunk);  // fused on CUDA
  }
  if (parts.has_value() && !parts->weight.requires_grad() &&
      !(parts->bias.defined() && parts->bias.requires_grad())) {
    // Adapted (lm_head among the LoRA targets), biased or soft-capped: chunk
    // by chunk all the same (plain LibTorch ops on every device).
    return HeadCrossEntropySum(h, *parts, y, chunk, cap);
  }
  // A head that is not a frozen matrix (a researcher's LinearBase): plain
  // logits, all of them at once.
  Tensor logits = Logits(h);  // (N, V)
  return torch::nn::functional::cross_entropy(
      logits, y,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

std::vector<LinearSlot> CausalLM::LinearSlots() {
  std::vector<LinearSlot> slots;
  for (size_t i = 0; i < model->layers.size(); ++i) {
    DecoderLayer& layer = *model->layers[i];
    const std::string p = absl::StrCat("model.layers.", i);
    const int index = static_cast<int>(i);
    Attention* attn = layer.self_attn.get();
    Mlp* mlp = layer.mlp.get();
    if (attn->qkv_proj) {
      slots.push_back({p + ".self_attn.qkv_proj", index, "qkv_proj", attn, &attn->qkv_proj});
      slots.push_back({p + ".self_attn.o_proj", index, "o_proj", attn, &attn->o_proj});
      slots.push_back({p + ".mlp.gate_up_proj", index, "gate_up_proj", mlp, &mlp->gate_up_proj});
      slots.push_back({p + ".mlp.down_proj", index, "down_proj", mlp, &mlp->down_proj});
      continue;
    }
    slots.push_back({p + ".self_attn.q_proj", index, "q_proj", attn, &attn->q_proj});
    slots.push_back({p + ".self_attn.k_proj", index, "k_proj", attn, &attn->k_proj});
    slots.push_back({p + ".self_attn.v_proj", index, "v_proj", attn, &attn->v_proj});
    slots.push_back({p + ".self_attn.o_proj", index, "o_proj", attn, &attn->o_proj});
    slots.push_back({p + ".mlp.gate_proj", index, "gate_proj", mlp, &mlp->gate_proj});
    slots.push_back({p + ".mlp.up_proj", index, "up_proj", mlp, &mlp->up_proj});
    slots.push_back({p + ".mlp.down_proj", index, "down_proj", mlp, &mlp->down_proj});
  }
  slots.push_back({"lm_head", -1, "lm_head", this, &lm_head});
  return slots;
}

Tensor RopeInvFreq(const ModelConfig& c, bool long_factors) {
  // Same operation order as transformers' rope init functions, all fp32.
  const int64_t dim = c.rotary_dim();
  Tensor exponent =
      torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  Tensor inv_freq = 1.0 / torch::pow(c.rope_theta, exponent);  // (D/2)
  const RopeScaling& s = c.rope_scaling;
  switch (s.type) {
    case RopeType::kDefault:
      return inv_freq;
    case RopeType::kLinear:
      return inv_freq / s.factor;
    case RopeType::kLlama3: {
      const double old_len = static_cast<double>(s.original_max_position_embeddings);
      const double low_freq_wavelen = old_len / s.low_freq_factor;
      const double high_freq_wavelen = old_len / s.high_freq_factor;
      Tensor wavelen = 2 * M_PI / inv_freq;
      Tensor llama = torch::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
      Tensor smooth =
          (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      Tensor smoothed = (1 - smooth) * llama / s.factor + smooth * llama;
      Tensor medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen);
      return torch::where(medium, smoothed, llama);
    }
    case RopeType::kLongRope: {
      const std::vector<double>& f = long_factors ? s.long_factor : s.short_factor;
      Tensor ext = torch::tensor(f, torch::kFloat64).to(torch::kFloat32);  // (D/2)
      return 1.0 / (ext * torch::pow(c.rope_theta, exponent));
    }
  }
  return inv_freq;
}

Tensor PositionsFromSegments(const Tensor& segment_ids) {
  TORCH_CHECK(segment_ids.dim() == 2, "PositionsFromSegments: want (B, T), got ",
              segment_ids.sizes());
  Tensor seg = segment_ids.to(torch::kCPU).to(torch::kInt64).contiguous();
  Tensor pos = torch::zeros_like(seg);
  auto s = seg.accessor<int64_t, 2>();
  auto p = pos.accessor<int64_t, 2>();
  for (int64_t i = 0; i < seg.size(0); ++i) {
    for (int64_t j = 1; j < seg.size(1); ++j) {
      p[i][j] = s[i][j] == s[i][j - 1] ? p[i][j - 1] + 1 : 0;
    }
  }
  return pos.to(segment_ids.device());
}

}  // namespace fjord::model
