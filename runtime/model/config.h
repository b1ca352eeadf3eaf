// The decoder's hyper-parameters, parsed from a Hugging Face config.json as
// transformers writes it (v4 field names and v5's "rope_parameters"). Plain
// C++: no LibTorch, so tools that only inspect a model stay light.
//
//   FJORD_ASSIGN_OR_RETURN(model::ModelConfig cfg, model::ModelConfig::FromFile(dir +
//   "/config.json"));
//
// Supported architectures: LlamaForCausalLM (model_type "llama"),
// Qwen2ForCausalLM ("qwen2"), Qwen3ForCausalLM ("qwen3"),
// MistralForCausalLM ("mistral", with its sliding window) and
// Phi3ForCausalLM ("phi3": Phi-3, Phi-3.5, Phi-4-mini) and
// Gemma3ForCausalLM ("gemma3_text": Gemma 3's text models). RoPE: default,
// linear, llama3 and longrope ("su") scaling, partial rotary for Phi3.
#ifndef FJORD_RUNTIME_MODEL_CONFIG_H_
#define FJORD_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/util/env.h"

namespace fjord::model {

enum class ModelFamily {
  kLlama,    // LlamaForCausalLM: q,k,v,o biases iff attention_bias; MLP biases iff mlp_bias
  kQwen2,    // Qwen2ForCausalLM: q,k,v biases always, o_proj and MLP never
  kQwen3,    // Qwen3ForCausalLM: RMSNorm of each head's q and k (q_norm, k_norm) before
             // RoPE; q,k,v,o biases iff attention_bias; no MLP biases
  kMistral,  // MistralForCausalLM: no biases; sliding-window attention when sliding_window
  kPhi3,     // Phi3ForCausalLM: fused qkv_proj and gate_up_proj, no biases, sliding window
             // when set, longrope scaling and partial rotary embeddings
  kGemma3,   // Gemma3ForCausalLM: embeddings scaled by sqrt(hidden), RMSNorm with (1 + w),
             // norms before and after attention and MLP, GeGLU (tanh GELU), q/k norms,
             // local (sliding) and global layers with their own RoPE, query_pre_attn_scalar
};

enum class RopeType {
  kDefault,   // inv_freq = 1 / theta^(2i/D)
  kLinear,    // inv_freq / factor
  kLlama3,    // Llama 3.1 frequency-dependent scaling (factor, low/high_freq_factor)
  kLongRope,  // Phi-3's LongRoPE ("su"): inv_freq / short_factor[i], or / long_factor[i] when a
              // forward's largest position + 1 exceeds original_max_position_embeddings;
              // cos and sin scaled by attention_factor
};

// RoPE scaling parameters (rope_scaling, or v5's rope_parameters).
struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;            // linear, llama3
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  // llama3, longrope: the pre-training context length; defaults to
  // max_position_embeddings when absent (as transformers does; Phi3's
  // top-level field of the same name, 4096 by default, for longrope).
  int64_t original_max_position_embeddings = 0;
  // longrope: one factor per rotary frequency (rotary_dim / 2 each).
  std::vector<double> short_factor, long_factor;
  // longrope: the cos/sin scale; when config.json has none,
  // sqrt(1 + ln(f) / ln(original_max_position_embeddings)) with f =
  // factor or max_position_embeddings / original_max_position_embeddings
  // (1 when f <= 1), as transformers computes it.
  double attention_factor = 1.0;
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kLlama;
  std::string architecture;  // "LlamaForCausalLM", "Qwen2ForCausalLM", ...
  std::string model_type;    // "llama", "qwen2", "qwen3", "mistral"

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // default: num_attention_heads
  int64_t head_dim = 0;             // default: hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;  // default: 2048 (llama), 32768 (qwen2, qwen3),
                                           // 131072 (mistral)
  bool tie_word_embeddings = false;
  double attention_dropout = 0.0;  // applied in training mode only

  // Which linear layers carry a bias (derived from the family and
  // attention_bias / mlp_bias).
  bool qkv_bias = false;
  bool o_proj_bias = false;
  bool mlp_bias = false;
  // Qwen3: self_attn.q_norm and k_norm, RMSNorm over head_dim applied to
  // every head of q and k before RoPE (weights of head_dim each).
  bool qk_norm = false;
  // Mistral, Phi3: a token attends to itself and the sliding_window - 1
  // tokens before it (transformers' rule); 0 (null in config.json): no window.
  int64_t sliding_window = 0;
  // Phi3: q, k and v in one linear layer (self_attn.qkv_proj, rows q then k
  // then v) and gate and up in another (mlp.gate_up_proj, gate rows first).
  bool fused_projections = false;
  // Phi3 (partial_rotary_factor): RoPE turns only the first
  // int(head_dim * factor) dimensions of each head; 1 elsewhere.
  double partial_rotary_factor = 1.0;

  // Gemma 3 (all derived from the family and config.json):
  //  - gemma_norms: every RMSNorm scales by (1 + weight), in fp32 before the
  //    cast back; and each layer has pre/post norms around attention and
  //    the MLP (post_attention_layernorm normalises attention's output,
  //    pre_ and post_feedforward_layernorm the MLP's input and output);
  //  - gelu_mlp: the MLP's activation is GELU with the tanh approximation
  //    (gelu_pytorch_tanh), not SiLU;
  //  - embedding_scale: embeddings times sqrt(hidden_size), rounded to the
  //    model's dtype first (0: none);
  //  - query_pre_attn_scalar: attention scores scaled by its -1/2 power (0:
  //    head_dim's);
  //  - sliding_layers: which layers attend through sliding_window (empty:
  //    every layer, when a window is set); the others are global;
  //  - local_rope_theta: the sliding layers' RoPE base (no scaling there;
  //    rope_theta and rope_scaling are the global layers');
  //  - final_logit_softcapping: logits become cap·tanh(logits / cap) (0: none).
  bool gemma_norms = false;
  bool gelu_mlp = false;
  double embedding_scale = 0.0;
  double query_pre_attn_scalar = 0.0;
  std::vector<bool> sliding_layers;
  double local_rope_theta = 0.0;
  double final_logit_softcapping = 0.0;
  // Whether layer i attends through the sliding window.
  bool IsSlidingLayer(int64_t i) const {
    return sliding_window > 0 && (sliding_layers.empty() || sliding_layers[static_cast<size_t>(i)]);
  }

  // "float32", "bfloat16", "float16" (from "dtype" or "torch_dtype"); empty
  // if the config names none.
  std::string dtype;

  // A checkpoint saved with its linear weights already quantized
  // ("quantization_config"): "bitsandbytes-nf4" (transformers +
  // bitsandbytes, load_in_4bit with bnb_4bit_quant_type nf4: QLoRA's format)
  // or empty for a full-precision checkpoint. Other methods (gptq, awq,
  // fp8, bitsandbytes 8-bit or fp4, ...) are refused by name.
  std::string quantization;
  // bitsandbytes' llm_int8_skip_modules: modules left unquantized.
  std::vector<std::string> quantization_skip_modules;

  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // "eos_token_id": int or list
  std::optional<int64_t> pad_token_id;

  // Parses config.json text. `name` (usually the path) prefixes every error
  // message. Errors: InvalidArgument naming `name` and the field for malformed
  // JSON, a missing required field (vocab_size, hidden_size,
  // intermediate_size, num_hidden_layers, num_attention_heads, and one of
  // architectures / model_type), a field of the wrong type or out of range,
  // an unsupported architecture / model_type / rope type / hidden_act, or
  // inconsistent sizes (heads not dividing, odd head_dim).
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view json, absl::string_view name);

  // Reads and parses path through env (default Env::Default()). Errors: the
  // Env's (NotFound naming the path) and FromJson's.
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path, Env* env = nullptr);

  // Checks the invariants FromJson enforces (for configs built in code, e.g.
  // RandomInit's). InvalidArgument naming the field.
  absl::Status Validate() const;

  // A config.json transformers can load (v5 form, with rope_parameters).
  std::string ToJson() const;

  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
  // The dimensions of each head RoPE turns (head_dim unless partial).
  int64_t rotary_dim() const {
    return static_cast<int64_t>(static_cast<double>(head_dim) * partial_rotary_factor);
  }

  // The model's parameters: the weights of the decoder's linear layers
  // (what a 4-bit base holds in 4 bits) and the rest (embeddings, lm_head
  // unless tied, norms, biases). For memory arithmetic (fjordd refuses a
  // job that cannot fit before it runs).
  struct ParameterCount {
    int64_t decoder_linear = 0;
    int64_t other = 0;
    int64_t total() const { return decoder_linear + other; }
  };
  ParameterCount CountParameters() const;
};

}  // namespace fjord::model

#endif  // FJORD_RUNTIME_MODEL_CONFIG_H_
