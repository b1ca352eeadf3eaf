#include "runtime/model/config.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/env.h"

namespace fjord::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// config.json as transformers 5.23 writes it for LlamaForCausalLM with
// llama3 RoPE scaling (save_pretrained output, trimmed of nothing).
constexpr char kLlamaV5[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "dtype": "bfloat16",
  "eos_token_id": 2,
  "head_dim": 8,
  "hidden_act": "silu",
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 48,
  "max_position_embeddings": 256,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "pad_token_id": null,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-06,
  "rope_parameters": {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 64,
    "rope_theta": 500000.0,
    "rope_type": "llama3"
  },
  "tie_word_embeddings": false,
  "transformers_version": "5.23.0",
  "use_cache": true,
  "vocab_size": 64
})";

// Qwen2Config as transformers 5.23 writes it.
constexpr char kQwen2V5[] = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": null,
  "dtype": "float32",
  "eos_token_id": null,
  "hidden_act": "silu",
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 48,
  "layer_types": ["full_attention", "full_attention"],
  "max_position_embeddings": 32768,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "pad_token_id": null,
  "rms_norm_eps": 1e-06,
  "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
  "sliding_window": null,
  "tie_word_embeddings": true,
  "transformers_version": "5.23.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 64
})";

// A minimal v4-style Llama config: top-level rope_theta, rope_scaling,
// torch_dtype, defaults for the rest.
Json MinimalV4() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 8
  })");
}

absl::StatusOr<ModelConfig> Parse(const Json& j) {
  return ModelConfig::FromJson(j.dump(), "cfg.json");
}

void ExpectInvalid(const Json& j, const std::string& field, const std::string& detail = "") {
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_FALSE(c.ok()) << j.dump();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr("cfg.json: "));
  EXPECT_THAT(c.status().message(), HasSubstr("field '" + field + "'"));
  if (!detail.empty()) {
    EXPECT_THAT(c.status().message(), HasSubstr(detail));
  }
}

TEST(ModelConfigTest, ParsesTransformersV5Llama) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kLlamaV5, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kLlama);
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->vocab_size, 64);
  EXPECT_EQ(c->hidden_size, 32);
  EXPECT_EQ(c->intermediate_size, 48);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(c->max_position_embeddings, 256);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->dtype, "bfloat16");
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
  EXPECT_FALSE(c->pad_token_id.has_value());
  EXPECT_EQ(c->q_size(), 32);
  EXPECT_EQ(c->kv_size(), 16);
}

TEST(ModelConfigTest, ParsesTransformersV5Qwen2) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kQwen2V5, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen2);
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(c->max_position_embeddings, 32768);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->dtype, "float32");
  EXPECT_FALSE(c->bos_token_id.has_value());
  EXPECT_TRUE(c->eos_token_ids.empty());
}

// Qwen3-0.6B's config.json as published (../shared/models/qwen3-0.6b).
constexpr char kQwen3_0_6B[] = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

TEST(ModelConfigTest, ParsesQwen3) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kQwen3_0_6B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen3);
  EXPECT_EQ(c->architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(c->model_type, "qwen3");
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->head_dim, 128);  // explicit: not hidden_size / heads (64)
  EXPECT_EQ(c->q_size(), 2048);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->max_position_embeddings, 40960);
  // transformers' Qwen3ForCausalLM of this config: 596,049,920 parameters.
  EXPECT_EQ(c->CountParameters().total(), 596049920);
  // Written back, transformers reads the same architecture.
  absl::StatusOr<ModelConfig> again = ModelConfig::FromJson(c->ToJson(), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->family, ModelFamily::kQwen3);
  EXPECT_TRUE(again->qk_norm);
  EXPECT_EQ(again->head_dim, 128);
  // Its sliding window is refused, not ignored.
  Json j = Json::parse(kQwen3_0_6B);
  j["use_sliding_window"] = true;
  absl::StatusOr<ModelConfig> sliding = Parse(j);
  ASSERT_FALSE(sliding.ok());
  EXPECT_THAT(sliding.status().message(), HasSubstr("use_sliding_window"));
}

// Mistral-7B-Instruct-v0.1's config.json as published
// (../shared/models/mistral-7b-instruct-v0.1): a sliding window of 4096.
constexpr char kMistral7B[] = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0",
  "use_cache": true, "vocab_size": 32000})";

TEST(ModelConfigTest, ParsesMistralAndItsSlidingWindow) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kMistral7B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kMistral);
  EXPECT_EQ(c->architecture, "MistralForCausalLM");
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_FALSE(c->qkv_bias || c->o_proj_bias || c->mlp_bias || c->qk_norm);
  EXPECT_EQ(c->head_dim, 128);
  // 7,241,732,096 parameters (Mistral-7B).
  EXPECT_EQ(c->CountParameters().total(), 7241732096);
  absl::StatusOr<ModelConfig> again = ModelConfig::FromJson(c->ToJson(), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->sliding_window, 4096);
  Json j = Json::parse(kMistral7B);
  j["sliding_window"] = nullptr;  // v0.2 on: no window
  j["head_dim"] = 128;
  j["hidden_size"] = 5120;  // Mistral-Nemo: head_dim is not hidden / heads (160)
  absl::StatusOr<ModelConfig> nemo = Parse(j);
  ASSERT_TRUE(nemo.ok()) << nemo.status();
  EXPECT_EQ(nemo->sliding_window, 0);
  EXPECT_EQ(nemo->head_dim, 128);
  EXPECT_EQ(nemo->q_size(), 4096);
  j["sliding_window"] = 0;
  absl::StatusOr<ModelConfig> zero = Parse(j);
  ASSERT_FALSE(zero.ok());
  EXPECT_THAT(zero.status().message(), HasSubstr("field 'sliding_window'"));
}

// Phi-4-mini-instruct's config.json as published
// (../shared/models/phi-4-mini-instruct; auto_map and _name_or_path left
// out): fused projections, LongRoPE with 48 short and long factors, partial
// rotary (0.75 of 128), tied embeddings, a window longer than any row.
constexpr char kPhi4Mini[] = R"({
  "architectures": ["Phi3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 199999, "embd_pdrop": 0.0, "eos_token_id": 199999, "full_attn_mod": 1,
  "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02,
  "intermediate_size": 8192, "interpolate_factor": 1, "lm_head_bias": false,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "phi3",
  "num_attention_heads": 24, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "original_max_position_embeddings": 4096, "pad_token_id": 199999,
  "partial_rotary_factor": 0.75, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
  "rope_scaling": {"long_factor": [1, 1.118320672, 1.250641126, 1.398617824, 1.564103225,
  1.74916897, 1.956131817, 2.187582649, 2.446418898, 2.735880826, 3.059592084, 3.421605075,
  3.826451687, 4.279200023, 4.785517845, 5.351743533, 5.984965424, 6.693110555, 7.485043894,
  8.370679318, 9.36110372, 10.4687158, 11.70738129, 13.09260651, 14.64173252, 16.37415215,
  18.31155283, 20.47818807, 22.90118105, 25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23,
  32.6, 32.61, 32.64, 32.66, 32.7, 32.71, 32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77],
  "short_factor": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
  1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
  1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
  "type": "longrope"}, "rope_theta": 10000.0, "sliding_window": 262144,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0",
  "use_cache": true, "vocab_size": 200064})";

TEST(ModelConfigTest, ParsesPhi4MiniItsLongRopeAndPartialRotary) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kPhi4Mini, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kPhi3);
  EXPECT_EQ(c->architecture, "Phi3ForCausalLM");
  EXPECT_TRUE(c->fused_projections);
  EXPECT_FALSE(c->qkv_bias || c->o_proj_bias || c->mlp_bias || c->qk_norm);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->rotary_dim(), 96);
  EXPECT_EQ(c->sliding_window, 262144);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLongRope);
  EXPECT_EQ(c->rope_scaling.short_factor.size(), 48u);
  EXPECT_EQ(c->rope_scaling.long_factor.size(), 48u);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 4096);
  // transformers: sqrt(1 + ln(131072 / 4096) / ln(4096)) = 1.1902380714238083.
  EXPECT_NEAR(c->rope_scaling.attention_factor, 1.1902380714238083, 1e-15);
  // transformers' Phi3ForCausalLM of this config: 3,836,021,760 parameters.
  EXPECT_EQ(c->CountParameters().total(), 3836021760);
  // Written back (v5's rope_parameters), read the same.
  absl::StatusOr<ModelConfig> again = ModelConfig::FromJson(c->ToJson(), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rope_scaling.long_factor, c->rope_scaling.long_factor);
  EXPECT_EQ(again->rope_scaling.attention_factor, c->rope_scaling.attention_factor);
  EXPECT_EQ(again->rotary_dim(), 96);
  EXPECT_TRUE(again->fused_projections);

  // Factors that do not fit the rotary dimensions, a non-positive factor, no
  // long factors: refused naming the field.
  Json j = Json::parse(kPhi4Mini);
  j["rope_scaling"]["short_factor"] = Json::array({1.0, 2.0});
  ExpectInvalid(j, "rope_parameters.short_factor", "rotary_dim / 2 = 48 factors, got 2");
  j = Json::parse(kPhi4Mini);
  j["rope_scaling"]["long_factor"][3] = -1.0;
  ExpectInvalid(j, "rope_scaling.long_factor[3]", "must be a positive number");
  j = Json::parse(kPhi4Mini);
  j["rope_scaling"].erase("long_factor");
  ExpectInvalid(j, "rope_scaling.long_factor", "is required for rope type 'longrope'");
  // An odd number of rotating dimensions.
  j = Json::parse(kPhi4Mini);
  j["partial_rotary_factor"] = 0.7;
  ExpectInvalid(j, "partial_rotary_factor", "an even number of dimensions");
  // Phi-3-mini-4k: no scaling, full rotary, a window of 2047, 4096 positions.
  j = Json::parse(kPhi4Mini);
  j["rope_scaling"] = nullptr;
  j.erase("partial_rotary_factor");
  j["sliding_window"] = 2047;
  j.erase("max_position_embeddings");
  absl::StatusOr<ModelConfig> mini = Parse(j);
  ASSERT_TRUE(mini.ok()) << mini.status();
  EXPECT_EQ(mini->rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(mini->rotary_dim(), 128);
  EXPECT_EQ(mini->sliding_window, 2047);
  EXPECT_EQ(mini->max_position_embeddings, 4096);
  // Residual dropout, which fjord does not apply, is refused.
  j["resid_pdrop"] = 0.1;
  ExpectInvalid(j, "resid_pdrop", "dropout 0.1 is not supported");
  // Partial rotary belongs to Phi3 here.
  Json llama = MinimalV4();
  llama["partial_rotary_factor"] = 0.5;
  ExpectInvalid(llama, "partial_rotary_factor", "supported for Phi3 only");
}

// A config in Gemma-3-1B's shape with the v4 field names Gemma 3's releases
// use (rope_local_base_freq, sliding_window_pattern; no layer_types).
constexpr char kGemma3_1B[] = R"({
  "architectures": ["Gemma3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "attn_logit_softcapping": null, "bos_token_id": 2, "eos_token_id": [1, 106],
  "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912,
  "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
  "num_hidden_layers": 26, "num_key_value_heads": 1, "pad_token_id": 0,
  "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
  "rope_scaling": null, "rope_theta": 1000000, "sliding_window": 512,
  "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "use_cache": true,
  "vocab_size": 262144})";

TEST(ModelConfigTest, ParsesGemma3LocalAndGlobalLayers) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kGemma3_1B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kGemma3);
  EXPECT_EQ(c->architecture, "Gemma3ForCausalLM");
  EXPECT_EQ(c->model_type, "gemma3_text");
  EXPECT_TRUE(c->qk_norm && c->gemma_norms && c->gelu_mlp);
  EXPECT_TRUE(c->tie_word_embeddings);  // Gemma's default
  EXPECT_DOUBLE_EQ(c->embedding_scale, std::sqrt(1152.0));
  EXPECT_EQ(c->query_pre_attn_scalar, 256);
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->local_rope_theta, 1e4);
  EXPECT_EQ(c->sliding_window, 512);
  ASSERT_EQ(c->sliding_layers.size(), 26u);
  for (int64_t i = 0; i < 26; ++i) {
    EXPECT_EQ(c->IsSlidingLayer(i), (i + 1) % 6 != 0) << i;  // layers 5, 11, 17, 23 global
  }
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{1, 106}));
  // transformers' Gemma3ForCausalLM of this config: 999,885,952 parameters.
  EXPECT_EQ(c->CountParameters().total(), 999885952);
  // Written back in v5's form (layer_types, rope_parameters per layer type).
  const std::string v5 = c->ToJson();
  EXPECT_THAT(v5, HasSubstr("\"sliding_attention\""));
  absl::StatusOr<ModelConfig> again = ModelConfig::FromJson(v5, "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->sliding_layers, c->sliding_layers);
  EXPECT_EQ(again->local_rope_theta, 1e4);
  EXPECT_EQ(again->rope_theta, 1e6);
  EXPECT_EQ(again->query_pre_attn_scalar, 256);
  EXPECT_EQ(again->CountParameters().total(), 999885952);

  // The 4B+ text models' linear scaling belongs to the global layers.
  Json j = Json::parse(kGemma3_1B);
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  absl::StatusOr<ModelConfig> scaled = Parse(j);
  ASSERT_TRUE(scaled.ok()) << scaled.status();
  EXPECT_EQ(scaled->rope_scaling.type, RopeType::kLinear);
  EXPECT_EQ(scaled->rope_scaling.factor, 8.0);
  // What fjord does not do is refused by name.
  j = Json::parse(kGemma3_1B);
  j["attn_logit_softcapping"] = 50.0;
  ExpectInvalid(j, "attn_logit_softcapping", "not supported");
  j = Json::parse(kGemma3_1B);
  j["use_bidirectional_attention"] = true;
  ExpectInvalid(j, "use_bidirectional_attention", "not supported");
  j = Json::parse(kGemma3_1B);
  j["hidden_activation"] = "relu";
  ExpectInvalid(j, "hidden_activation", "'relu' is not supported for Gemma 3");
  j = Json::parse(kGemma3_1B);
  j["layer_types"] = {"sliding_attention"};
  ExpectInvalid(j, "layer_types", "one type per layer (26)");
  j = Json::parse(kGemma3_1B);
  j["rope_parameters"] = {{"sliding_attention", {{"rope_type", "linear"}, {"factor", 2.0}}}};
  ExpectInvalid(j, "rope_parameters.sliding_attention.rope_type", "must be 'default'");
  // The multimodal Gemma 3 (4B and up, with its vision tower) is not a text model.
  j = Json::parse(kGemma3_1B);
  j["architectures"] = {"Gemma3ForConditionalGeneration"};
  j["model_type"] = "gemma3";
  ExpectInvalid(j, "architectures", "Gemma3ForCausalLM (text only)");
}

TEST(ModelConfigTest, DefaultsForAbsentFields) {
  absl::StatusOr<ModelConfig> c = Parse(MinimalV4());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 8);  // = heads
  EXPECT_EQ(c->head_dim, 8);             // hidden / heads
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->dtype, "");
  EXPECT_FALSE(c->bos_token_id.has_value());
}

TEST(ModelConfigTest, ArchitectureFromModelTypeAlone) {
  Json j = MinimalV4();
  j.erase("architectures");
  j["model_type"] = "qwen2";
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen2);
  EXPECT_EQ(c->max_position_embeddings, 32768);
}

TEST(ModelConfigTest, LegacyRopeScalingLlama3WithTopLevelTheta) {
  Json j = MinimalV4();
  j["rope_theta"] = 500000.0;
  j["max_position_embeddings"] = 131072;
  j["torch_dtype"] = "float16";
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 32.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}};  // no original_max_position_embeddings
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 32.0);
  // Falls back to max_position_embeddings, as transformers does.
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 131072);
  EXPECT_EQ(c->dtype, "float16");
}

TEST(ModelConfigTest, LegacyRopeScalingTypeKeyLinear) {
  Json j = MinimalV4();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);
}

TEST(ModelConfigTest, NullRopeScalingAndDefaultType) {
  Json j = MinimalV4();
  j["rope_scaling"] = nullptr;
  ASSERT_TRUE(Parse(j).ok());
  j["rope_scaling"] = {{"rope_type", "default"}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
}

TEST(ModelConfigTest, RopeParametersThetaFallsBackToTopLevel) {
  Json j = MinimalV4();
  j["rope_theta"] = 1234.0;
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 1234.0);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLinear);
}

TEST(ModelConfigTest, TokenIdForms) {
  Json j = MinimalV4();
  j["bos_token_id"] = 128000;
  j["eos_token_id"] = {128001, 128008, 128009};
  j["pad_token_id"] = 0;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(c->pad_token_id, 0);
  j["eos_token_id"] = {1, "two"};
  ExpectInvalid(j, "eos_token_id[1]", "must be an integer");
  j["eos_token_id"] = "x";
  ExpectInvalid(j, "eos_token_id", "an integer or a list of integers");
}

TEST(ModelConfigTest, LlamaBiases) {
  Json j = MinimalV4();
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_TRUE(c->o_proj_bias);
  EXPECT_TRUE(c->mlp_bias);
}

TEST(ModelConfigTest, RefusesUnknownArchitectureNamingIt) {
  Json j = MinimalV4();
  j["architectures"] = {"MixtralForCausalLM"};
  j["model_type"] = "mixtral";
  ExpectInvalid(j, "architectures", "'MixtralForCausalLM' is not supported");
  j.erase("architectures");
  ExpectInvalid(j, "model_type", "'mixtral' is not supported");
}

TEST(ModelConfigTest, RefusesMismatchedModelType) {
  Json j = MinimalV4();
  j["model_type"] = "qwen2";
  ExpectInvalid(j, "model_type", "does not match");
}

TEST(ModelConfigTest, RefusesMissingArchitecture) {
  Json j = MinimalV4();
  j.erase("architectures");
  j.erase("model_type");
  ExpectInvalid(j, "architectures", "is required");
}

TEST(ModelConfigTest, RefusesMissingAndMistypedFields) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads"}) {
    Json j = MinimalV4();
    j.erase(field);
    ExpectInvalid(j, field, "is required");
    j[field] = nullptr;
    ExpectInvalid(j, field, "is required");
    j[field] = "64";
    ExpectInvalid(j, field, "must be an integer");
    j[field] = 1.5;
    ExpectInvalid(j, field, "must be an integer");
  }
  Json j = MinimalV4();
  j["vocab_size"] = 0;
  ExpectInvalid(j, "vocab_size", "must be positive");
  j = MinimalV4();
  j["rms_norm_eps"] = "small";
  ExpectInvalid(j, "rms_norm_eps", "must be a number");
  j = MinimalV4();
  j["rms_norm_eps"] = -1.0;
  ExpectInvalid(j, "rms_norm_eps", "must be positive");
  j = MinimalV4();
  j["tie_word_embeddings"] = 1;
  ExpectInvalid(j, "tie_word_embeddings", "true or false");
  j = MinimalV4();
  j["attention_bias"] = "yes";
  ExpectInvalid(j, "attention_bias", "true or false");
  j = MinimalV4();
  j["max_position_embeddings"] = -4;
  ExpectInvalid(j, "max_position_embeddings", "must be positive");
  j = MinimalV4();
  j["architectures"] = "LlamaForCausalLM";
  ExpectInvalid(j, "architectures", "non-empty list");
}

TEST(ModelConfigTest, AcceptsIntegralFloatsForIntegers) {
  Json j = MinimalV4();
  j["vocab_size"] = 100.0;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 100);
}

TEST(ModelConfigTest, RefusesInconsistentHeads) {
  Json j = MinimalV4();
  j["num_key_value_heads"] = 3;
  ExpectInvalid(j, "num_key_value_heads", "does not divide num_attention_heads 8");
  j = MinimalV4();
  j["num_attention_heads"] = 6;  // 64 % 6 != 0 and no head_dim
  ExpectInvalid(j, "head_dim", "not divisible");
  j["head_dim"] = 16;  // explicit head_dim: fine
  ASSERT_TRUE(Parse(j).ok());
  j["head_dim"] = 7;
  ExpectInvalid(j, "head_dim", "must be even");
}

TEST(ModelConfigTest, RefusesUnsupportedRopeTypesNamingThem) {
  Json j = MinimalV4();
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  ExpectInvalid(j, "rope_scaling.rope_type", "rope type 'dynamic' is not supported");
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  ExpectInvalid(j, "rope_scaling.type", "rope type 'yarn' is not supported");
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 10000.0}};
  ExpectInvalid(j, "rope_parameters.short_factor", "is required for rope type 'longrope'");
}

TEST(ModelConfigTest, RefusesBadRopeParameters) {
  Json j = MinimalV4();
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}};
  ExpectInvalid(j, "rope_parameters.high_freq_factor", "is required for rope type 'llama3'");
  j["rope_parameters"] = {{"rope_type", "linear"}};
  ExpectInvalid(j, "rope_parameters.factor", "is required");
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", "2"}};
  ExpectInvalid(j, "rope_parameters.factor", "must be a number");
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", -2.0}};
  ExpectInvalid(j, "rope_parameters.factor", "must be positive");
  j["rope_parameters"] = {{"rope_type", "llama3"},
                          {"factor", 8.0},
                          {"low_freq_factor", 4.0},
                          {"high_freq_factor", 4.0}};
  ExpectInvalid(j, "rope_parameters.high_freq_factor", "must exceed low_freq_factor");
  j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}};
  ExpectInvalid(j, "rope_parameters.partial_rotary_factor", "supported for Phi3 only");
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}}}};
  ExpectInvalid(j, "rope_parameters.full_attention", "per-layer-type");
  j["rope_parameters"] = 3;
  ExpectInvalid(j, "rope_parameters", "must be an object");
}

TEST(ModelConfigTest, RefusesUnsupportedFeatures) {
  Json j = MinimalV4();
  j["hidden_act"] = "gelu";
  ExpectInvalid(j, "hidden_act", "'gelu' is not supported");
  j = Json::parse(kQwen2V5);
  j["use_sliding_window"] = true;
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(j.dump(), "cfg.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("field 'use_sliding_window'"));
  j["use_sliding_window"] = false;
  j["layer_types"] = {"full_attention", "sliding_attention"};
  c = ModelConfig::FromJson(j.dump(), "cfg.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("field 'layer_types[1]'"));
}

TEST(ModelConfigTest, RefusesUnsupportedDtypeNamingTheKey) {
  Json j = MinimalV4();
  j["torch_dtype"] = "float64";
  ExpectInvalid(j, "torch_dtype", "dtype 'float64' is not supported");
  j["dtype"] = "int8";
  ExpectInvalid(j, "dtype", "'int8'");
}

TEST(ModelConfigTest, ReadsBitsandbytesNf4AndRefusesOtherQuantizationByName) {
  Json j = MinimalV4();
  j["quantization_config"] = {{"quant_method", "bitsandbytes"},
                              {"load_in_4bit", true},
                              {"bnb_4bit_quant_type", "nf4"},
                              {"bnb_4bit_use_double_quant", true},
                              {"llm_int8_skip_modules", {"lm_head"}}};
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(j.dump(), "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->quantization, "bitsandbytes-nf4");
  EXPECT_EQ(c->quantization_skip_modules, std::vector<std::string>{"lm_head"});
  EXPECT_TRUE(ModelConfig::FromJson(MinimalV4().dump(), "cfg.json")->quantization.empty());

  j["quantization_config"]["bnb_4bit_quant_type"] = "fp4";
  ExpectInvalid(j, "quantization_config.bnb_4bit_quant_type", "'fp4' is not supported");
  j["quantization_config"] = {{"quant_method", "bitsandbytes"}, {"load_in_8bit", true}};
  ExpectInvalid(j, "quantization_config.load_in_4bit", "8-bit checkpoints are not supported");
  for (const char* method : {"gptq", "awq", "fp8", "compressed-tensors"}) {
    j["quantization_config"] = {{"quant_method", method}};
    ExpectInvalid(j, "quantization_config.quant_method",
                  std::string("'") + method + "' checkpoints are not supported");
  }
  j["quantization_config"] = "nf4";
  ExpectInvalid(j, "quantization_config", "must be an object");
}

TEST(ModelConfigTest, CountsParametersAsTheCheckpointHoldsThem) {
  // Llama-3.1-8B's shape: 8,030,261,248 parameters, 6,979,321,856 of them in
  // the decoder's linear layers (32 x (2 x 4096 x 4096 + 2 x 4096 x 1024 +
  // 3 x 4096 x 14336)).
  Json j = MinimalV4();
  j["vocab_size"] = 128256;
  j["hidden_size"] = 4096;
  j["intermediate_size"] = 14336;
  j["num_hidden_layers"] = 32;
  j["num_attention_heads"] = 32;
  j["num_key_value_heads"] = 8;
  j["tie_word_embeddings"] = false;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  const ModelConfig::ParameterCount n = c->CountParameters();
  EXPECT_EQ(n.decoder_linear, 6979321856);
  EXPECT_EQ(n.total(), 8030261248);
}

TEST(ModelConfigTest, MalformedJsonNamesTheFile) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson("{\"vocab_size\": 3,", "/m/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("/m/config.json: malformed JSON"));
  c = ModelConfig::FromJson("[1, 2]", "/m/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("/m/config.json: config must be a JSON object"));
}

TEST(ModelConfigTest, FromFileReadsThroughEnvAndReportsMissingFile) {
  std::unique_ptr<Env> env = NewMemEnv();
  ASSERT_TRUE(env->CreateDirs("/m").ok());
  ASSERT_TRUE(env->WriteFileAtomic("/m/config.json", kQwen2V5).ok());
  absl::StatusOr<ModelConfig> c = ModelConfig::FromFile("/m/config.json", env.get());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen2);

  c = ModelConfig::FromFile("/nope/config.json", env.get());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("/nope/config.json"));

  ASSERT_TRUE(
      env->WriteFileAtomic("/m/bad.json", R"({"architectures": ["GPT2LMHeadModel"]})").ok());
  c = ModelConfig::FromFile("/m/bad.json", env.get());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("/m/bad.json: field 'architectures'"));
}

TEST(ModelConfigTest, ToJsonRoundTrips) {
  for (const char* text : {kLlamaV5, kQwen2V5}) {
    absl::StatusOr<ModelConfig> a = ModelConfig::FromJson(text, "a");
    ASSERT_TRUE(a.ok()) << a.status();
    a->eos_token_ids = {5, 6};
    absl::StatusOr<ModelConfig> b = ModelConfig::FromJson(a->ToJson(), "b");
    ASSERT_TRUE(b.ok()) << b.status() << "\n" << a->ToJson();
    EXPECT_EQ(b->family, a->family);
    EXPECT_EQ(b->vocab_size, a->vocab_size);
    EXPECT_EQ(b->num_key_value_heads, a->num_key_value_heads);
    EXPECT_EQ(b->head_dim, a->head_dim);
    EXPECT_DOUBLE_EQ(b->rope_theta, a->rope_theta);
    EXPECT_EQ(b->rope_scaling.type, a->rope_scaling.type);
    EXPECT_DOUBLE_EQ(b->rope_scaling.factor, a->rope_scaling.factor);
    EXPECT_EQ(b->rope_scaling.original_max_position_embeddings,
              a->rope_scaling.original_max_position_embeddings);
    EXPECT_EQ(b->tie_word_embeddings, a->tie_word_embeddings);
    EXPECT_EQ(b->qkv_bias, a->qkv_bias);
    EXPECT_EQ(b->dtype, a->dtype);
    EXPECT_EQ(b->bos_token_id, a->bos_token_id);
    EXPECT_EQ(b->eos_token_ids, a->eos_token_ids);
  }
}

TEST(ModelConfigTest, ValidateCatchesHandBuiltMistakes) {
  ModelConfig c;
  absl::Status s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("field 'vocab_size'"));
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  EXPECT_TRUE(c.Validate().ok());
  c.family = ModelFamily::kQwen2;  // Qwen2 needs its q/k/v biases
  s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("field 'attention_bias'"));
}

}  // namespace
}  // namespace fjord::model
