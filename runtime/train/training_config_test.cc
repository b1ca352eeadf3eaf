#include "runtime/train/training_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::train {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"(
model:
  path: /models/llama
data:
  train: /data/train.jsonl
output:
  dir: /out
)";

TEST(TrainingConfigTest, MinimalConfigGetsDefaults) {
  absl::StatusOr<TrainingConfig> c = ParseTrainingConfig(kMinimal, "train.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.path, "/models/llama");
  EXPECT_EQ(c->training.lr_scheduler, "cosine");
  EXPECT_EQ(c->training.threads, 0);
  EXPECT_TRUE(c->data.packing);
  EXPECT_TRUE(c->Validate().ok());
}

// The runtime's config knows no adapter method: a `lora:` section is not its.
TEST(TrainingConfigTest, LoraSectionIsUnknown) {
  absl::StatusOr<TrainingConfig> c =
      ParseTrainingConfig(std::string(kMinimal) + "lora:\n  r: 8\n", "train.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("train.yaml:8: field 'lora': unknown section; "
                                              "expected one of model, data, training, "
                                              "preference, eval, checkpoint, output"));
  EXPECT_THAT(
      ParseTrainingConfig("- a\n", "train.yaml").status().message(),
      HasSubstr(
          "train.yaml: the training config must be a mapping of sections (model, data, training, "
          "preference, eval, checkpoint, output)"));
}

TEST(TrainingConfigTest, PreferenceMethodAndOptions) {
  absl::StatusOr<TrainingConfig> c = ParseTrainingConfig(
      std::string(kMinimal) +
          "preference:\n  beta: 0.2\n  loss_type: ipo\n  precompute_ref: true\n",
      "train.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("field 'preference.loss_type': ipo is a dpo loss; training.method is sft"));
  TrainingConfig d = *ParseTrainingConfig(kMinimal, "train.yaml");
  EXPECT_EQ(d.training.method, "sft");
  EXPECT_EQ(d.preference.beta, 0.1);
  EXPECT_EQ(d.preference.loss_type, "sigmoid");
  EXPECT_EQ(d.preference.simpo_gamma, 0.5);
  d.training.method = "dpo";
  d.preference.loss_type = "ipo";
  EXPECT_TRUE(d.Validate().ok()) << d.Validate();
  d.training.method = "kto";
  EXPECT_THAT(d.Validate().message(), HasSubstr("field 'training.method'"));
  d.training.method = "orpo";
  d.preference.loss_type = "sigmoid";
  d.preference.label_smoothing = 0.5;
  EXPECT_THAT(d.Validate().message(), HasSubstr("field 'preference.label_smoothing'"));
}

TEST(TrainingConfigTest, ToYamlRoundTrips) {
  TrainingConfig c = *ParseTrainingConfig(kMinimal, "train.yaml");
  c.training.learning_rate = 3e-4;
  c.training.seed = 7;
  c.data.chat_template = "chatml";
  absl::StatusOr<TrainingConfig> back = ParseTrainingConfig(c.ToYaml(), "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << c.ToYaml();
  EXPECT_EQ(back->ToYaml(), c.ToYaml());
  EXPECT_DOUBLE_EQ(back->training.learning_rate, 3e-4);
  EXPECT_EQ(back->training.seed, 7u);
}

// A config built in code gets the checks a YAML file gets.
TEST(TrainingConfigTest, ValidateChecksWhatTheParserChecks) {
  TrainingConfig c;
  EXPECT_THAT(c.Validate().message(), HasSubstr("training config: field 'model.path' is required"));
  c.model.path = "/m";
  c.data.train = "/t.jsonl";
  EXPECT_THAT(c.Validate().message(), HasSubstr("training config: field 'output.dir' is required"));
  c.output.dir = "/o";
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();

  TrainingConfig bad = c;
  bad.training.micro_batch_size = 0;
  EXPECT_EQ(bad.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      bad.Validate().message(),
      HasSubstr(
          "training config: field 'training.micro_batch_size': 0 is out of range [1, 65536]"));
  bad = c;
  bad.training.device = "tpu";
  EXPECT_THAT(bad.Validate().message(),
              HasSubstr("field 'training.device': 'tpu' is not one of auto, cpu, cuda"));
  bad = c;
  bad.training.learning_rate = -1;
  EXPECT_THAT(bad.Validate().message(),
              HasSubstr("field 'training.learning_rate': -1 is out of range"));
}

TEST(TrainingConfigTest, LoadNamesMissingFile) {
  absl::StatusOr<TrainingConfig> c = LoadTrainingConfig("/nonexistent/train.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(),
              HasSubstr("cannot open training config /nonexistent/train.yaml"));
}

}  // namespace
}  // namespace fjord::train
