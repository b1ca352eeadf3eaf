// Target matching, patterns and validation against PEFT's rules (the
// expected module sets were checked with peft 0.21's get_peft_model).
#include "lora/lora_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "lora/peft_format.h"

namespace fjord::lora {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A 3-layer Llama: hidden 32, q 32, kv 16, intermediate 48, vocab 64.
std::vector<ModuleInfo> Model() { return DecoderModules(3, 32, 32, 16, 48, 64); }

std::vector<std::string> Paths(const std::vector<AdaptedModule>& adapted) {
  std::vector<std::string> out;
  for (const AdaptedModule& a : adapted) out.push_back(a.path);
  return out;
}

TEST(ResolveTargetsTest, AllLinearIsEveryLinearButTheHead) {
  LoraConfig c;
  c.target_modules = TargetModules::AllLinear();
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->size(), 21u);
  EXPECT_EQ((*a)[0].path, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ((*a)[20].path, "model.layers.2.mlp.down_proj");
  EXPECT_EQ((*a)[6].in_features, 48);  // down_proj: (in 48, out 32)
  EXPECT_EQ((*a)[6].out_features, 32);
  EXPECT_THAT(LeafNames(*a), ElementsAre("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                         "up_proj", "v_proj"));
}

TEST(ResolveTargetsTest, NamesMatchBySuffixAfterADot) {
  LoraConfig c;
  c.target_modules = TargetModules::Names({"q_proj", "mlp.up_proj", "proj"});
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  // "proj" matches nothing: a suffix counts only after a '.'.
  EXPECT_THAT(Paths(*a),
              ElementsAre("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj",
                          "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj",
                          "model.layers.2.self_attn.q_proj", "model.layers.2.mlp.up_proj"));
}

TEST(ResolveTargetsTest, LayersToTransformFiltersSuffixMatches) {
  LoraConfig c;
  c.target_modules = TargetModules::Names({"q_proj", "v_proj"});
  c.layers_to_transform = {0, 2};
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Paths(*a),
              ElementsAre("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                          "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj"));
}

TEST(ResolveTargetsTest, AnExactPathIgnoresLayersToTransformAsInPeft) {
  LoraConfig c;
  c.target_modules = TargetModules::Names({"model.layers.0.self_attn.q_proj"});
  c.layers_to_transform = {1};
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Paths(*a), ElementsAre("model.layers.0.self_attn.q_proj"));
}

TEST(ResolveTargetsTest, LayersPatternNamesTheLayerList) {
  LoraConfig c;
  c.target_modules = TargetModules::Names({"o_proj"});
  c.layers_to_transform = {1};
  c.layers_pattern = {"layers"};
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Paths(*a), ElementsAre("model.layers.1.self_attn.o_proj"));
  c.layers_pattern = {"blocks"};  // no such list: nothing matches
  EXPECT_THAT(ResolveTargets(c, Model()).status().message(), HasSubstr("matched no linear layer"));
}

TEST(ResolveTargetsTest, AllLinearWithLayers) {
  LoraConfig c;
  c.layers_to_transform = {2};
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->size(), 7u);
  EXPECT_EQ((*a)[0].path, "model.layers.2.self_attn.q_proj");
}

TEST(ResolveTargetsTest, RegexMustMatchTheWholePath) {
  LoraConfig c;
  c.target_modules = TargetModules::Regex(R"(.*\.(q|v)_proj)");
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->size(), 6u);
  c.target_modules = TargetModules::Regex(R"(layers\.1\..*q_proj)");  // a prefix is missing
  absl::StatusOr<std::vector<AdaptedModule>> none = ResolveTargets(c, Model());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(),
              HasSubstr("regex 'layers\\.1\\..*q_proj' matched no linear layer"));
  c.target_modules = TargetModules::Regex(R"(model\.layers\.1\..*q_proj)");
  a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Paths(*a), ElementsAre("model.layers.1.self_attn.q_proj"));
  c.target_modules = TargetModules::Regex("lm_head");  // a regex may name the head
  a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Paths(*a), ElementsAre("lm_head"));
}

TEST(ResolveTargetsTest, RegexWithLayersIsRefusedAsInPeft) {
  LoraConfig c;
  c.target_modules = TargetModules::Regex(".*q_proj");
  c.layers_to_transform = {0};
  EXPECT_THAT(ResolveTargets(c, Model()).status().message(),
              HasSubstr("layers_to_transform': cannot be used when target_modules is a regex"));
}

TEST(ResolveTargetsTest, BadRegexIsNamed) {
  LoraConfig c;
  c.target_modules = TargetModules::Regex("(q_proj");
  absl::Status s = ResolveTargets(c, Model()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("field 'target_modules': regex '(q_proj' does not compile"));
}

TEST(ResolveTargetsTest, ExcludeModules) {
  LoraConfig c;
  c.exclude_modules = TargetModules::Names({"mlp.down_proj", "k_proj"});
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->size(), 15u);
  for (const AdaptedModule& m : *a) {
    EXPECT_THAT(m.path, ::testing::Not(HasSubstr("down_proj")));
    EXPECT_THAT(m.path, ::testing::Not(HasSubstr("k_proj")));
  }
  c.exclude_modules = TargetModules::Regex(R"(.*layers\.[01]\..*)");
  a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->size(), 7u);
}

TEST(ResolveTargetsTest, RankAndAlphaPatternsAsPeft) {
  // The peft 0.21 probe: rank_pattern {"q_proj": 2}, alpha_pattern
  // {"layers.1.self_attn.q_proj": 3}, r 4, alpha 8.
  LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.target_modules = TargetModules::Names({"q_proj", "v_proj"});
  c.rank_pattern = {{"q_proj", 2}};
  c.alpha_pattern = {{"layers.1.self_attn.q_proj", 3}};
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->size(), 6u);
  EXPECT_EQ((*a)[0].r, 2);  // layers.0 q
  EXPECT_DOUBLE_EQ((*a)[0].scale, 4.0);
  EXPECT_EQ((*a)[1].r, 4);  // layers.0 v
  EXPECT_DOUBLE_EQ((*a)[1].scale, 2.0);
  EXPECT_EQ((*a)[2].r, 2);  // layers.1 q: alpha 3
  EXPECT_DOUBLE_EQ((*a)[2].alpha, 3.0);
  EXPECT_DOUBLE_EQ((*a)[2].scale, 1.5);
}

TEST(ResolveTargetsTest, FirstMatchingPatternWins) {
  LoraConfig c;
  c.target_modules = TargetModules::Names({"q_proj"});
  c.rank_pattern = {{R"(layers\.0\.self_attn\.q_proj)", 3}, {"q_proj", 5}};
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)[0].r, 3);
  EXPECT_EQ((*a)[1].r, 5);
  // A key matches only at a '.' boundary: "_proj" does not match "q_proj".
  c.rank_pattern = {{"_proj", 7}};
  a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)[0].r, 8);
}

TEST(ResolveTargetsTest, RsLoraScale) {
  LoraConfig c;
  c.r = 16;
  c.alpha = 32;
  c.use_rslora = true;
  absl::StatusOr<std::vector<AdaptedModule>> a = ResolveTargets(c, Model());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_DOUBLE_EQ((*a)[0].scale, 8.0);
  EXPECT_DOUBLE_EQ(LoraScale(32, 16, false), 2.0);
}

TEST(LoraConfigTest, ValidateNamesTheField) {
  LoraConfig c;
  c.r = 0;
  EXPECT_THAT(c.Validate().message(), HasSubstr("field 'r': 0 must be >= 1"));
  c.r = 4;
  c.dropout = 1.0;
  EXPECT_THAT(c.Validate().message(), HasSubstr("field 'lora_dropout'"));
  c.dropout = 0;
  c.alpha = std::nan("");
  EXPECT_THAT(c.Validate().message(), HasSubstr("field 'lora_alpha'"));
  c.alpha = 8;
  c.rank_pattern = {{"q_proj", 0}};
  EXPECT_THAT(c.Validate().message(), HasSubstr("field 'rank_pattern': 'q_proj': rank 0"));
  c.rank_pattern = {{"q_(proj", 2}};
  EXPECT_THAT(c.Validate().message(), HasSubstr("does not compile"));
  c.rank_pattern.clear();
  c.layers_to_transform = {-1};
  EXPECT_THAT(c.Validate().message(), HasSubstr("layer index -1 is negative"));
  c.layers_to_transform.clear();
  c.target_modules = TargetModules::Names({});
  EXPECT_THAT(c.Validate().message(), HasSubstr("the list of module names is empty"));
  c.target_modules = TargetModules::None();
  EXPECT_THAT(c.Validate().message(), HasSubstr("no target modules"));
}

TEST(RegexTest, FullMatchOnly) {
  EXPECT_TRUE(*RegexFullMatch("a.c", "abc"));
  EXPECT_FALSE(*RegexFullMatch("a.c", "abcd"));
  EXPECT_FALSE(*RegexFullMatch("b", "abc"));
  EXPECT_EQ(RegexFullMatch("[", "x").status().code(), absl::StatusCode::kInvalidArgument);
  // A pattern with catastrophic backtracking ends (match limit), either way.
  absl::StatusOr<bool> slow = RegexFullMatch("(a|aa)+(a|aa)+(a|aa)+b", std::string(40, 'a'));
  if (slow.ok()) {
    EXPECT_FALSE(*slow);
  }
}

}  // namespace
}  // namespace fjord::lora
