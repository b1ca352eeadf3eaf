// adapter_config.json parsing/writing and the adapter tensor checks.
#include "lora/peft_format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <tuple>

namespace fjord::lora {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// What peft 0.21.2's save_pretrained wrote for LoraConfig(r=4, lora_alpha=8,
// target_modules=[...q_proj], layers_to_transform=[1], rank_pattern, alpha_pattern).
constexpr char kPeftConfig[] = R"({
  "alora_invocation_tokens": null,
  "alpha_pattern": {"layers.1.self_attn.q_proj": 3},
  "arrow_config": null,
  "auto_mapping": {"base_model_class": "LlamaForCausalLM", "parent_library": "transformers.models.llama.modeling_llama"},
  "base_model_name_or_path": null,
  "bias": "none",
  "corda_config": null,
  "ensure_weight_tying": false,
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": [1],
  "loftq_config": {},
  "lora_alpha": 8,
  "lora_bias": false,
  "lora_dropout": 0.0,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "peft_version": "0.21.2",
  "qalora_group_size": 16,
  "r": 4,
  "rank_pattern": {"q_proj": 2},
  "revision": null,
  "target_modules": ["v_proj", "q_proj"],
  "target_parameters": null,
  "task_type": null,
  "trainable_token_indices": null,
  "use_dora": false,
  "use_qalora": false,
  "use_rslora": false
})";

std::string With(const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = nlohmann::json::parse(kPeftConfig);
  j[key] = value;
  return j.dump();
}

TEST(ParseAdapterConfigTest, ReadsWhatPeftWrites) {
  absl::StatusOr<LoraConfig> c = ParseAdapterConfig(kPeftConfig, "a/adapter_config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->r, 4);
  EXPECT_DOUBLE_EQ(c->alpha, 8);
  EXPECT_DOUBLE_EQ(c->dropout, 0);
  EXPECT_EQ(c->target_modules.kind, TargetModules::Kind::kNames);
  EXPECT_THAT(c->target_modules.names, ElementsAre("q_proj", "v_proj"));
  EXPECT_THAT(c->layers_to_transform, ElementsAre(1));
  ASSERT_EQ(c->rank_pattern.size(), 1u);
  EXPECT_EQ(c->rank_pattern[0].first, "q_proj");
  EXPECT_EQ(c->rank_pattern[0].second, 2);
  ASSERT_EQ(c->alpha_pattern.size(), 1u);
  EXPECT_DOUBLE_EQ(c->alpha_pattern[0].second, 3);
  EXPECT_FALSE(c->use_rslora);
}

TEST(ParseAdapterConfigTest, TargetForms) {
  // A regex with layers_to_transform is refused, as PEFT refuses it.
  EXPECT_THAT(
      ParseAdapterConfig(With("target_modules", R"(.*\.q_proj)"), "f").status().message(),
      HasSubstr("f: field 'layers_to_transform': cannot be used when target_modules is a regex"));
  nlohmann::json j = nlohmann::json::parse(kPeftConfig);
  j["layers_to_transform"] = nullptr;
  j["target_modules"] = R"(.*\.q_proj)";
  absl::StatusOr<LoraConfig> c = ParseAdapterConfig(j.dump(), "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->target_modules.kind, TargetModules::Kind::kRegex);
  EXPECT_EQ(c->target_modules.regex, R"(.*\.q_proj)");
  j["target_modules"] = "ALL-LINEAR";
  c = ParseAdapterConfig(j.dump(), "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->target_modules.kind, TargetModules::Kind::kAllLinear);
  j["target_modules"] = nullptr;  // PEFT's Llama/Qwen2 default
  c = ParseAdapterConfig(j.dump(), "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->target_modules.names, ElementsAre("q_proj", "v_proj"));
  c = ParseAdapterConfig(With("layers_to_transform", 2), "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->layers_to_transform, ElementsAre(2));
}

TEST(ParseAdapterConfigTest, RefusesWhatFjordDoesNotImplement) {
  const std::string f = "run/adapter/adapter_config.json";
  auto error = [&](const std::string& text) { return ParseAdapterConfig(text, f).status(); };
  struct Case {
    std::string key;
    nlohmann::json value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"use_dora", true,
       "run/adapter/adapter_config.json: field 'use_dora' is true (DoRA adapters)"},
      {"fan_in_fan_out", true, "field 'fan_in_fan_out' is true"},
      {"bias", "lora_only", "field 'bias' is \"lora_only\" (trained biases)"},
      {"lora_bias", true, "field 'lora_bias' is true"},
      {"peft_type", "LOHA", "field 'peft_type' is \"LOHA\""},
      {"task_type", "SEQ_CLS", "field 'task_type' is \"SEQ_CLS\" (expected CAUSAL_LM)"},
      {"modules_to_save", nlohmann::json::array({"lm_head"}), "field 'modules_to_save' is set"},
      {"layer_replication", nlohmann::json::array({nlohmann::json::array({0, 2})}),
       "field 'layer_replication' is set"},
      {"trainable_token_indices", nlohmann::json::array({1, 2}),
       "field 'trainable_token_indices' is set"},
      {"use_qalora", true, "field 'use_qalora' is true"},
  };
  for (const Case& c : cases) {
    absl::Status s = error(With(c.key, c.value));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.key;
    EXPECT_THAT(s.message(), HasSubstr(c.message)) << c.key;
    EXPECT_THAT(s.message(), HasSubstr("fjord loads plain LoRA adapters only")) << c.key;
  }
}

TEST(ParseAdapterConfigTest, BadValuesNameTheFileAndField) {
  const std::string f = "x/adapter_config.json";
  EXPECT_THAT(ParseAdapterConfig("{\"r\": 4,", f).status().message(),
              HasSubstr("x/adapter_config.json: not valid JSON (at byte"));
  EXPECT_THAT(ParseAdapterConfig("[1]", f).status().message(), HasSubstr("must be a JSON object"));
  EXPECT_THAT(ParseAdapterConfig(With("r", "8"), f).status().message(),
              HasSubstr("x/adapter_config.json: field 'r' is missing or not an integer"));
  EXPECT_THAT(ParseAdapterConfig(With("r", 0), f).status().message(),
              HasSubstr("x/adapter_config.json: field 'r': 0 must be >= 1"));
  EXPECT_THAT(ParseAdapterConfig(With("lora_dropout", 1.5), f).status().message(),
              HasSubstr("field 'lora_dropout'"));
  EXPECT_THAT(
      ParseAdapterConfig(With("target_modules", nlohmann::json::array({1})), f).status().message(),
      HasSubstr("field 'target_modules[0]' must be a string"));
  EXPECT_THAT(ParseAdapterConfig(With("rank_pattern", nlohmann::json{{"q_proj", "big"}}), f)
                  .status()
                  .message(),
              HasSubstr("field 'rank_pattern.q_proj' must be an integer"));
  EXPECT_THAT(ParseAdapterConfig(With("peft_type", nullptr), f).status().message(),
              HasSubstr("field 'peft_type' is missing"));
  EXPECT_THAT(ParseAdapterConfig(With("use_rslora", "yes"), f).status().message(),
              HasSubstr("field 'use_rslora' must be true or false"));
}

TEST(AdapterConfigJsonTest, RoundTripsAndWritesPeftFields) {
  LoraConfig c;
  c.r = 16;
  c.alpha = 32;
  c.dropout = 0.05;
  c.use_rslora = true;
  c.target_modules = TargetModules::Names({"v_proj", "q_proj"});
  c.layers_to_transform = {0, 1};
  c.rank_pattern = {{"v_proj", 4}};
  c.alpha_pattern = {{"q_proj", 2.5}};
  c.base_model_name_or_path = "/models/llama";
  const std::vector<ModuleInfo> modules = DecoderModules(2, 32, 32, 16, 48, 64);
  absl::StatusOr<std::vector<AdaptedModule>> adapted = ResolveTargets(c, modules);
  ASSERT_TRUE(adapted.ok()) << adapted.status();
  const std::string text = AdapterConfigJson(c, *adapted);
  nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["fan_in_fan_out"], false);
  EXPECT_EQ(j["use_dora"], false);
  EXPECT_EQ(j["lora_alpha"], 32);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer());
  EXPECT_EQ(j["target_modules"], nlohmann::json::array({"q_proj", "v_proj"}));
  EXPECT_EQ(j["base_model_name_or_path"], "/models/llama");
  absl::StatusOr<LoraConfig> back = ParseAdapterConfig(text, "f");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == c);

  // all-linear is written as the leaf names it resolved to.
  LoraConfig all;
  adapted = ResolveTargets(all, modules);
  ASSERT_TRUE(adapted.ok());
  j = nlohmann::json::parse(AdapterConfigJson(all, *adapted));
  EXPECT_EQ(j["target_modules"].size(), 7u);
  EXPECT_TRUE(j["layers_to_transform"].is_null());
  EXPECT_EQ(j["base_model_name_or_path"], nullptr);
}

// A header with the given (name, dtype, shape) entries.
io::SafetensorsHeader Header(
    const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>>& ts) {
  io::SafetensorsHeader h;
  for (const auto& [name, dtype, shape] : ts) {
    io::TensorEntry e;
    e.name = name;
    e.dtype = dtype;
    e.shape = shape;
    h.tensors.push_back(e);
  }
  return h;
}

TEST(CheckAdapterTensorsTest, AcceptsExactlyTheExpectedKeys) {
  const std::vector<AdaptedModule> adapted = {{"model.layers.0.self_attn.q_proj", 32, 24, 4, 8, 2}};
  const std::string a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
  EXPECT_EQ(LoraAKey(adapted[0].path), a);
  EXPECT_EQ(LoraBKey(adapted[0].path), b);
  EXPECT_TRUE(
      CheckAdapterTensors(Header({{a, "F32", {4, 32}}, {b, "BF16", {24, 4}}}), adapted, "f").ok());

  absl::Status s =
      CheckAdapterTensors(Header({{a, "F32", {4, 32}}}), adapted, "ad/adapter_model.safetensors");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      s.message(),
      HasSubstr("ad/adapter_model.safetensors: missing 1 tensor(s) adapter_config.json requires: " +
                b));

  s = CheckAdapterTensors(Header({{a, "F32", {8, 32}}, {b, "F32", {24, 8}}}), adapted, "f");
  EXPECT_THAT(s.message(),
              HasSubstr("f: tensor '" + a +
                        "' has shape [8, 32], expected [4, 32] (rank 4 from adapter_config.json)"));

  s = CheckAdapterTensors(Header({{a, "F32", {4, 64}}, {b, "F32", {24, 4}}}), adapted, "f");
  EXPECT_THAT(s.message(),
              HasSubstr("has shape [4, 64], expected [4, 32] ((r, in_features) of the base model's "
                        "model.layers.0.self_attn.q_proj, r = 4)"));

  s = CheckAdapterTensors(Header({{a, "F32", {4, 32}}, {b, "I64", {24, 4}}}), adapted, "f");
  EXPECT_THAT(s.message(), HasSubstr("f: tensor '" + b + "' has dtype I64, expected a float type"));

  s = CheckAdapterTensors(
      Header({{a, "F32", {4, 32}},
              {b, "F32", {24, 4}},
              {"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
               "F32",
               {24}}}),
      adapted, "f");
  EXPECT_THAT(s.message(), HasSubstr("1 unexpected tensor(s)"));
  EXPECT_THAT(s.message(), HasSubstr("DoRA"));

  s = CheckAdapterTensors(
      Header({{a, "F32", {4, 32}},
              {b, "F32", {24, 4}},
              {"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", "F32", {4, 32}}}),
      adapted, "f");
  EXPECT_THAT(s.message(),
              HasSubstr("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"));
  EXPECT_THAT(s.message(), HasSubstr("modules adapter_config.json does not target"));

  // peft's copy of an adapted layer's base weight (save_embedding_layers).
  const std::string copy = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight";
  EXPECT_EQ(BaseLayerCopyKey(adapted[0].path), copy);
  const io::SafetensorsHeader with_copy =
      Header({{a, "F32", {4, 32}}, {b, "F32", {24, 4}}, {copy, "BF16", {24, 32}}});
  EXPECT_TRUE(CheckAdapterTensors(with_copy, adapted, "f").ok());
  EXPECT_THAT(BaseLayerCopies(with_copy, adapted), ::testing::ElementsAre(0u));
  EXPECT_TRUE(BaseLayerCopies(Header({{a, "F32", {4, 32}}, {b, "F32", {24, 4}}}), adapted).empty());
  s = CheckAdapterTensors(
      Header({{a, "F32", {4, 32}}, {b, "F32", {24, 4}}, {copy, "F32", {32, 24}}}), adapted, "f");
  EXPECT_THAT(s.message(), HasSubstr("f: tensor '" + copy +
                                     "' has shape [32, 24], expected [24, 32] (the base model's "
                                     "model.layers.0.self_attn.q_proj weight, which it copies)"));
  s = CheckAdapterTensors(
      Header({{a, "F32", {4, 32}}, {b, "F32", {24, 4}}, {copy, "I8", {24, 32}}}), adapted, "f");
  EXPECT_THAT(s.message(), HasSubstr("has dtype I8, expected a float type"));
}

}  // namespace
}  // namespace fjord::lora
