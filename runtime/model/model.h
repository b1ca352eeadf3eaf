// The Llama / Qwen2 decoder-only causal language model.
//
//   FJORD_ASSIGN_OR_RETURN(std::shared_ptr<model::CausalLM> lm,
//                          model::CausalLM::FromPretrained(dir, torch::kBFloat16, torch::kCUDA));
//   torch::Tensor h = lm->Hidden(ids, positions, segments);   // (B, T, C)
//   torch::Tensor loss = lm->LossSum(h, targets);             // () fp32
//
// Parameter names equal Hugging Face's state-dict names
// (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...,
// model.norm.weight, lm_head.weight) as listed by named_parameters(). Every
// base weight is frozen (requires_grad false); adapters (lora/) swap linear
// layers through LinearSlots().
//
// The hot operations (RMSNorm, RoPE, SwiGLU, linear + cross-entropy) go
// through runtime/kernels/ops.h, which picks a fused CUDA kernel or the
// LibTorch reference at run time.
//
// Thread-safety: a CausalLM is a torch::nn::Module; concurrent Hidden /
// Logits calls on one instance are safe only under no_grad with no one
// mutating the model (swapping slots, changing modes or weights).
//
// Shape legend: B batch, T tokens, C hidden, Hq query heads, Hk key/value
// heads, D head dim, I intermediate, V vocab.
#ifndef FJORD_RUNTIME_MODEL_MODEL_H_
#define FJORD_RUNTIME_MODEL_MODEL_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/config.h"
#include "runtime/model/linear.h"
#include "runtime/model/shard.h"
#include "runtime/util/env.h"

namespace fjord::model {

// RMSNorm's learned scale, registered as "weight". `gemma`: Gemma's form,
// scaling by (1 + weight) in fp32 (kernels::GemmaRmsNorm).
class RmsNormModule : public torch::nn::Module {
 public:
  RmsNormModule(torch::Tensor weight, double eps, bool gemma = false);
  torch::Tensor forward(const torch::Tensor& x);  // (..., C) -> (..., C)
  const torch::Tensor& weight() const { return weight_; }

 private:
  torch::Tensor weight_;  // (C)
  double eps_;
  bool gemma_;
};

// How the tokens of a (B, T) batch attend to each other.
//  - Neither set: causal over the whole row.
//  - segment_lengths (one list per row, summing to T): causal within each
//    run of the row, nothing across runs (packed sequences). Attention runs
//    once per run, each a plain causal call, so on CUDA every run takes the
//    flash kernel and the work is the sum of len² instead of T².
//  - mask (B, 1, T, T) bool, true = attend: anything else (a segment id that
//    comes back after another one), at T² cost and without flash.
struct AttentionLayout {
  std::vector<std::vector<int64_t>> segment_lengths;
  torch::Tensor mask;

  // From segment ids (B, T) int32/int64 on any device (copied to the host;
  // pass host ids to avoid a device sync): the runs of equal ids when no id
  // comes back later in its row, else the mask (on `device`). An undefined
  // tensor gives causal rows.
  static AttentionLayout FromSegments(const torch::Tensor& segment_ids,
                                      const torch::Device& device);
};

// Decoding with a key/value cache (CausalLM::HiddenWithCache): one layer's
// keys (after RoPE) and values so far, grown by each call.
struct LayerKvCache {
  torch::Tensor k, v;  // (B, Hk, S, D); undefined before the first call
};

// Every layer's cache, and which of the S slots hold a token (false: the
// left padding of a shorter prompt in a batch). Made empty; filled by
// CausalLM::HiddenWithCache. Belongs to one model and one batch.
struct KvCache {
  std::vector<LayerKvCache> layers;
  torch::Tensor key_valid;  // (B, S) bool on the model's device
  int64_t length() const { return key_valid.defined() ? key_valid.size(1) : 0; }
};

// The (B, 1, T, T) bool mask, true = attend, of causal attention within
// equal segment ids: token i sees token j <= i of its row when their ids are
// equal. segment_ids: (B, T) int32/int64; the mask is made on `device`.
torch::Tensor BlockDiagonalCausalMask(const torch::Tensor& segment_ids,
                                      const torch::Device& device);

// Causal attention within each run of each row: q (B, Hq, T, D), k and v
// (B, Hk, T, D) with Hq a multiple of Hk (GQA without repeating k/v),
// segment_lengths as in AttentionLayout. Returns (B, Hq, T, D); the same as
// one masked call with the block-diagonal causal mask, differentiable.
// With window > 0, a run longer than the window attends through
// WindowedCausalAttention.
torch::Tensor SegmentedCausalAttention(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v,
                                       const std::vector<std::vector<int64_t>>& segment_lengths,
                                       double dropout, std::optional<double> scale = std::nullopt,
                                       int64_t window = 0);

// Causal attention within a sliding window: token i sees j when
// 0 <= i - j < window. q (B, Hq, T, D), k and v (B, Hk, T, D). Computed in
// blocks of `window` queries, each against the (at most 2·window - 1) keys
// it can see, so the scores take O(T·window) memory and work instead of the
// full (T, T) mask's O(T²). Returns (B, Hq, T, D), equal to one call with
// SlidingWindowMask; differentiable.
torch::Tensor WindowedCausalAttention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, int64_t window, double dropout,
                                      std::optional<double> scale = std::nullopt);

// self_attn: q_proj, k_proj, v_proj, o_proj (or Phi3's fused qkv_proj, rows
// q then k then v, and o_proj); with Qwen3's q_norm and
// k_norm (RMSNorm of each head's q and k, before RoPE) when given; with
// Mistral's sliding window (config.sliding_window) when a row or a packed
// run is longer than it (shorter ones attend as before: the window cannot
// matter there). RoPE turns the first config.rotary_dim() dimensions of
// each head (all of them but for Phi3's partial rotary).
class Attention : public torch::nn::Module {
 public:
  Attention(const ModelConfig& config, std::shared_ptr<LinearBase> q, std::shared_ptr<LinearBase> k,
            std::shared_ptr<LinearBase> v, std::shared_ptr<LinearBase> o,
            std::shared_ptr<RmsNormModule> q_norm = nullptr,
            std::shared_ptr<RmsNormModule> k_norm = nullptr);
  // Phi3: one qkv_proj (out q_size + 2 kv_size) and o_proj.
  Attention(const ModelConfig& config, std::shared_ptr<LinearBase> qkv,
            std::shared_ptr<LinearBase> o);
  // The sliding window of this layer (default config.sliding_window; Gemma 3's
  // global layers have none: 0).
  void SetSlidingWindow(int64_t window) { window_ = window; }
  // x: (B, T, C); cos, sin: (B, T, rotary_dim) fp32; layout: who attends to
  // whom (default: causal rows). With `cache`: this call's keys and values
  // are appended to it and the queries attend over all S of them through
  // layout.mask (B, 1, T, S), which the caller sets. Returns (B, T, C).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionLayout& layout = {}, LayerKvCache* cache = nullptr);

  std::shared_ptr<LinearBase> q_proj, k_proj, v_proj, o_proj;  // q/k/v null when fused
  std::shared_ptr<LinearBase> qkv_proj;                        // null but for Phi3
  std::shared_ptr<RmsNormModule> q_norm, k_norm;               // null but for Qwen3

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_, rotary_dim_;
  int64_t window_;  // 0: none
  double dropout_;
  std::optional<double> scale_;  // Gemma 3: query_pre_attn_scalar^-1/2; else 1/sqrt(D)
};

// The (B, 1, T, T) bool mask, true = attend, of `layout` (causal rows, runs
// or its mask) further limited to a sliding window: token i sees token j
// only when i - j < window. On `device`.
torch::Tensor SlidingWindowMask(int64_t batch, int64_t length, const AttentionLayout& layout,
                                int64_t window, const torch::Device& device);

// mlp: gate_proj, up_proj, down_proj with SwiGLU (GeGLU for Gemma 3: `gelu`),
// or Phi3's fused gate_up_proj (gate rows first) and down_proj.
class Mlp : public torch::nn::Module {
 public:
  Mlp(std::shared_ptr<LinearBase> gate, std::shared_ptr<LinearBase> up,
      std::shared_ptr<LinearBase> down, bool gelu = false);
  // Phi3: gate_up (out 2·I) and down.
  Mlp(std::shared_ptr<LinearBase> gate_up, std::shared_ptr<LinearBase> down);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, C) -> (B, T, C)

  std::shared_ptr<LinearBase> gate_proj, up_proj, down_proj;  // gate/up null when fused
  std::shared_ptr<LinearBase> gate_up_proj;                   // null but for Phi3

 private:
  bool gelu_ = false;
};

// One pre-norm decoder block: x + attn(norm(x)), then h + mlp(norm(h)).
// With Gemma 3's pre_feedforward_layernorm and post_feedforward_layernorm:
// x + post_attention_layernorm(attn(input_layernorm(x))), then
// h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).
class DecoderLayer : public torch::nn::Module {
 public:
  DecoderLayer(std::shared_ptr<RmsNormModule> input_layernorm, std::shared_ptr<Attention> self_attn,
               std::shared_ptr<RmsNormModule> post_attention_layernorm, std::shared_ptr<Mlp> mlp,
               std::shared_ptr<RmsNormModule> pre_feedforward_layernorm = nullptr,
               std::shared_ptr<RmsNormModule> post_feedforward_layernorm = nullptr);
  // x: (B, T, C); see Attention::forward for the rest. Returns (B, T, C).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionLayout& layout = {}, LayerKvCache* cache = nullptr);

  std::shared_ptr<RmsNormModule> input_layernorm;
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<RmsNormModule> post_attention_layernorm;
  std::shared_ptr<Mlp> mlp;
  std::shared_ptr<RmsNormModule> pre_feedforward_layernorm, post_feedforward_layernorm;  // Gemma
};

// The inner "model" module: embed_tokens, layers, norm.
class DecoderStack : public torch::nn::Module {
 public:
  DecoderStack(torch::Tensor embed_weight, std::vector<std::shared_ptr<DecoderLayer>> layers,
               std::shared_ptr<RmsNormModule> norm);

  torch::Tensor embed_weight;  // (V, C), registered as embed_tokens.weight
  std::vector<std::shared_ptr<DecoderLayer>> layers;
  std::shared_ptr<RmsNormModule> norm;
};

// How CausalLM::FromPretrained loads a checkpoint.
struct LoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // float32, bfloat16 or float16
  torch::Device device = torch::kCPU;
  Env* env = nullptr;  // default Env::Default()
  // "" (full precision) or "nf4": every decoder linear weight (q/k/v/o,
  // gate/up/down) is quantized to NF4 as it is read, on `device`, and held
  // in 4 bits (runtime/quant: QLoRA's base); embeddings, norms, biases and
  // lm_head stay in `dtype`. A checkpoint saved by bitsandbytes in 4-bit
  // nf4 (ModelConfig::quantization) loads its weights as they are stored,
  // whatever this says.
  std::string quantization;
  bool double_quant = true;  // nf4: the absmax values in 8 bits (QLoRA's default)
  // When set (and of more than one rank): the frozen base sharded across
  // the group's ranks (runtime/model/shard.h): this rank reads and keeps
  // only its 1/N of the rows of every decoder linear weight, of the
  // embeddings and of lm_head; norms and biases stay whole. With nf4 the
  // decoder's linear rows are held (and gathered) in 4 bits: each rank
  // quantizes its own, or slices a checkpoint's stored 4-bit rows.
  // A decoder layer's weights are gathered whole for the layer; the
  // embeddings and lm_head only piece by piece (LargeMatrixPieces).
  std::shared_ptr<ShardGroup> shard_group;
};

class CausalLM : public torch::nn::Module {
 public:
  // Loads dir/config.json and the safetensors weights of dir (single file or
  // sharded with an index), converting them to `dtype` on `device`. Files
  // are read through env (default Env::Default()).
  // Errors (messages name dir and the tensor or field):
  //  - config.json's errors (ModelConfig::FromFile), the checkpoint's
  //    (io::ModelDirReader::Open / Get: NotFound, DataLoss, ...);
  //  - NotFound naming every missing tensor;
  //  - InvalidArgument for a tensor of unexpected shape (expected and actual
  //    shapes) and for unexpected tensors (ignored: rotary inv_freq buffers,
  //    and lm_head.weight when the embeddings are tied);
  //  - InvalidArgument for a dtype other than float32/bfloat16/float16;
  //  - ResourceExhausted when the device runs out of memory.
  static absl::StatusOr<std::shared_ptr<CausalLM>> FromPretrained(const std::string& dir,
                                                                  torch::Dtype dtype,
                                                                  torch::Device device,
                                                                  Env* env = nullptr);
  // The same with LoadOptions (4-bit bases). Also InvalidArgument for an
  // unknown options.quantization, and naming the tensor for a 4-bit weight
  // bitsandbytes serialized that cannot be read (quant::FromBitsandbytes).
  static absl::StatusOr<std::shared_ptr<CausalLM>> FromPretrained(const std::string& dir,
                                                                  const LoadOptions& options);

  // A model with weights drawn from N(0, 0.02²) (biases too) and norm
  // weights 1, from a CPU generator seeded with `seed` (same weights on every
  // device). The config must be valid (ModelConfig::Validate); a bad one
  // throws c10::Error. For tests and benchmarks.
  static std::shared_ptr<CausalLM> RandomInit(const ModelConfig& config, torch::Dtype dtype,
                                              torch::Device device, uint64_t seed);

  // The final-norm hidden states (B, T, C) in the model's dtype.
  // input_ids: (B, T) int64 in [0, V); position_ids: (B, T) int64, the
  // rotary position of each token; segment_ids: (B, T) int32/int64 or
  // undefined. With segment ids (packed sequences) a token attends only to
  // itself and earlier tokens of the same segment id (0 may mark padding,
  // which then only attends to padding), and the caller restarts
  // position_ids at each segment; undefined means one causal sequence per
  // row. Segment ids on the host spare a device sync (AttentionLayout).
  // Throws c10::Error on bad shapes, dtypes or out-of-range ids.
  torch::Tensor Hidden(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                       const torch::Tensor& segment_ids);

  // Incremental decoding, under no_grad: runs input_ids (B, T) at
  // position_ids (B, T) after the S tokens `cache` holds, appends their keys
  // and values, and returns their final-norm hidden states (B, T, C).
  // new_valid (B, T) bool marks real tokens (false: left padding, which
  // nothing attends to; its own outputs are meaningless); undefined: all
  // real. A token attends to the valid slots at or before its own (and
  // within the sliding window of a windowed layer), so prefill (T > 1) and
  // one-token steps compute what Hidden computes for the whole sequence.
  // Throws c10::Error on bad shapes or a cache of another batch.
  torch::Tensor HiddenWithCache(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                                KvCache& cache, const torch::Tensor& new_valid = {});

  // lm_head(hidden) as fp32: (..., C) -> (..., V); soft-capped
  // (cap·tanh(logits / cap)) where config.final_logit_softcapping is set.
  torch::Tensor Logits(const torch::Tensor& hidden);

  // Sum over tokens with target != -100 of the cross-entropy of
  // softmax(lm_head(hidden)) against targets, a 0-dim fp32 tensor. hidden:
  // (B, T, C); targets: (B, T) int64, already the next-token targets (no
  // shift here). Never holds all the logits at once: through
  // kernels::LinearCrossEntropySum (fused on CUDA) when lm_head is a plain
  // frozen matrix; through HeadCrossEntropySum when it also has a bias, a
  // LoRA update or soft-capped logits (head_loss.h); through
  // ShardedLinearCrossEntropySum (never holding lm_head whole either) when
  // it is a bias-free ShardedLinear. Else (a layer without LinearParts, or
  // an adapted sharded lm_head) via Logits.
  torch::Tensor LossSum(const torch::Tensor& hidden, const torch::Tensor& targets);
  // Each token's cross-entropy as LossSum sums them: (B·T) fp32, 0 where the
  // target is -100. One call costs a sharded base the same gathers whatever
  // the batch holds (ShardedLinearCrossEntropy), so ranks with different
  // batches stay in step; otherwise via Logits (all logits at once).
  torch::Tensor TokenLosses(const torch::Tensor& hidden, const torch::Tensor& targets);

  // Every linear layer with its HF module path, decoder layers in order
  // (q, k, v, o, gate, up, down; Phi3: qkv, o, gate_up, down), then lm_head
  // (layer_index -1). Pointers
  // stay valid while the model lives. With tied embeddings, replacing
  // lm_head does not untie the embedding weight.
  std::vector<LinearSlot> LinearSlots();

  // When on, and grad mode is enabled, each decoder layer keeps only its
  // input for backward and is recomputed there (with the CPU and CUDA RNG
  // states of its forward, so dropout draws the same). Default off.
  void SetGradientCheckpointing(bool enabled) { gradient_checkpointing_ = enabled; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }

  const ModelConfig& config() const { return config_; }
  torch::Dtype dtype() const { return dtype_; }
  torch::Device device() const { return device_; }

  // The rotary inverse frequencies (rotary_dim/2) fp32 on CPU, scaling
  // applied (longrope: the short factors').
  const torch::Tensor& inv_freq() const { return inv_freq_; }

  // "nf4" when the decoder's linear weights are held in 4 bits, else "".
  const std::string& quantization() const { return quantization_; }
  // The group the base is sharded over, or null (the whole base here).
  const std::shared_ptr<ShardGroup>& shard_group() const { return shard_group_; }
  // Sharded base: whether Hidden gathers the next layer's weights while a
  // layer computes (default on). Every rank must set the same.
  void SetShardPrefetch(bool enabled) { prefetch_ = enabled; }
  // Bytes held by the frozen base (every weight and bias; 4-bit weights as
  // stored), excluding what adapters added.
  int64_t BaseBytes();

  // A linear layer for module `prefix` (out, in, with a bias or not).
  using LinearMaker = std::function<std::shared_ptr<LinearBase>(
      const std::string& prefix, int64_t out, int64_t in, bool bias)>;
  // Internal: use FromPretrained or RandomInit. make_linear empty: every
  // linear layer a DenseLinear of weight(prefix + ".weight") (+ ".bias").
  CausalLM(
      ModelConfig config, torch::Dtype dtype, torch::Device device,
      const std::function<torch::Tensor(const std::string&, const std::vector<int64_t>&)>& weight,
      const LinearMaker& make_linear = {}, std::string quantization = "",
      std::shared_ptr<ShardGroup> shard_group = nullptr);

  std::shared_ptr<DecoderStack> model;
  std::shared_ptr<LinearBase> lm_head;

 private:
  ModelConfig config_;
  torch::Dtype dtype_;
  torch::Device device_;
  std::string quantization_;
  std::shared_ptr<ShardGroup> shard_group_;  // null: not sharded
  // A sharded base: whether a layer's input and output need a gradient (in
  // the forward whose backward is running).
  struct LayerGrads {
    bool input = false;
    bool output = false;
  };
  void ForEachShardedLinear(size_t layer, const std::function<void(ShardedLinear&)>& fn);
  // lm_head when it is a bias-free ShardedLinear (the loss's piecewise
  // path), else null.
  ShardedLinear* ShardedHead() const;
  // Rows of logits the loss computes at a time for rows like h.
  int64_t LossChunkRows(const torch::Tensor& h) const;
  // Called when backward reaches layer i's output: starts the gathers that
  // layer i's and layer i-1's backward will make.
  void PrefetchBackward(size_t i, const std::vector<LayerGrads>& needs_grad, bool checkpoint);
  bool prefetch_ = true;
  bool gradient_checkpointing_ = false;
  torch::Tensor inv_freq_;         // (D/2) fp32, CPU
  torch::Tensor inv_freq_device_;  // (D/2) fp32 on device_
  torch::Tensor inv_freq_long_;    // longrope's long factors: (D/2) fp32 on device_
  torch::Tensor inv_freq_local_;   // Gemma 3's sliding layers: (D/2) fp32 on device_

  // The rotary tables of position_ids (B, T): the global layers' and, for
  // Gemma 3, the local layers' (else undefined).
  struct Rotary {
    torch::Tensor cos, sin, cos_local, sin_local;  // (B, T, rotary_dim) fp32
    bool Local(const ModelConfig& c, size_t layer) const {
      return cos_local.defined() && !c.sliding_layers.empty() && c.sliding_layers[layer];
    }
  };
  Rotary RotaryTables(const torch::Tensor& position_ids);
  // Token embeddings (B, T, C) of ids on device_, scaled for Gemma.
  torch::Tensor Embed(const torch::Tensor& ids);
};

// The tensors a checkpoint for `config` must hold, with their shapes, in
// Hugging Face's order (lm_head.weight omitted when tied).
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(
    const ModelConfig& config);

// RoPE inverse frequencies (rotary_dim/2) fp32 on CPU for config's
// rotary_dim, rope_theta and rope scaling, computed as transformers does.
// longrope: the short factors', or the long ones' when `long_factors`.
torch::Tensor RopeInvFreq(const ModelConfig& config, bool long_factors = false);

// Position ids (B, T) int64 that restart at 0 at each change of segment id
// along a row. segment_ids: (B, T) int32/int64.
torch::Tensor PositionsFromSegments(const torch::Tensor& segment_ids);

}  // namespace fjord::model

namespace fjord {
// The model is used across the runtime (train/, lora/) by these names.
using model::CausalLM;
using model::ModelConfig;
}  // namespace fjord

#endif  // FJORD_RUNTIME_MODEL_MODEL_H_
