#include "lora/job_config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::lora {
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

TEST(JobConfigTest, MinimalConfigGetsDefaults) {
  absl::StatusOr<JobConfig> c = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.path, "/models/llama");
  EXPECT_EQ(c->lora.r, 16);
  EXPECT_EQ(c->lora.target_modules, std::vector<std::string>{"all-linear"});
  EXPECT_EQ(c->training.lr_scheduler, "cosine");
  EXPECT_TRUE(c->data.packing);
}

TEST(JobConfigTest, ReadsEverySection) {
  absl::StatusOr<JobConfig> c = ParseJobConfig(R"(
model: {path: /m, dtype: bfloat16}
data: {train: /t.jsonl, validation: /v.jsonl, chat_template: chatml, max_length: 512, packing: false}
lora: {r: 8, alpha: 16, dropout: 0.1, target_modules: [q_proj, v_proj], use_rslora: true, layers_to_transform: [0, 2]}
training: {epochs: 3, micro_batch_size: 2, gradient_accumulation_steps: 4, learning_rate: 1e-4, lr_scheduler: linear, warmup_ratio: 0.1, seed: 7}
eval: {every_steps: 10}
checkpoint: {every_steps: 20, keep_last: 2}
output: {dir: /o}
)",
                                               "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.dtype, "bfloat16");
  EXPECT_EQ(c->data.chat_template, "chatml");
  EXPECT_EQ(c->data.max_length, 512);
  EXPECT_FALSE(c->data.packing);
  EXPECT_EQ(c->lora.r, 8);
  EXPECT_DOUBLE_EQ(c->lora.alpha, 16);
  EXPECT_EQ(c->lora.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_TRUE(c->lora.use_rslora);
  EXPECT_EQ(c->lora.layers_to_transform, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(c->training.gradient_accumulation_steps, 4);
  EXPECT_DOUBLE_EQ(c->training.learning_rate, 1e-4);
  EXPECT_EQ(c->training.seed, 7u);
  EXPECT_EQ(c->checkpoint.keep_last, 2);
}

TEST(JobConfigTest, UnknownKeyNamesLineAndAllowedKeys) {
  absl::StatusOr<JobConfig> c = ParseJobConfig(R"(model:
  path: /m
lora:
  rank: 8
)",
                                               "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("job.yaml:4"));
  EXPECT_THAT(c.status().message(), HasSubstr("lora.rank"));
  EXPECT_THAT(c.status().message(), HasSubstr("accepts r, alpha"));
}

TEST(JobConfigTest, UnknownSection) {
  absl::StatusOr<JobConfig> c = ParseJobConfig("optimiser:\n  lr: 1\n", "j.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("unknown section"));
}

TEST(JobConfigTest, WrongTypeNamesFieldAndLine) {
  absl::StatusOr<JobConfig> c =
      ParseJobConfig(std::string(kMinimal) + "lora:\n  r: sixteen\n", "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              HasSubstr("job.yaml:9: field 'lora.r': expected an integer, got 'sixteen'"));
}

// Found by the job_config fuzzer: a path with invalid UTF-8 and carriage
// returns parsed, but did not survive ToYaml (the emitter replaced the
// bytes). Text must be valid UTF-8 without control characters.
TEST(JobConfigTest, TextMustBeValidUtf8WithoutControlCharacters) {
  struct Case {
    std::string yaml, error;
  };
  const Case cases[] = {
      {"model:\n  path: /models/llam\xff\xff\ndata:\n  train: /t\noutput:\n  dir: /o\n",
       "j.yaml:2: field 'model.path': invalid UTF-8 at byte 12 (0xff)"},
      {"model:\n  path: \"/m\\r\"\ndata:\n  train: /t\noutput:\n  dir: /o\n",
       "field 'model.path': control character 0x0d at byte 2"},
      {"model:\n  path: /m\ndata:\n  train: \"/t\\x1c\"\noutput:\n  dir: /o\n",
       "field 'data.train': control character 0x1c at byte 2"},
      {"model:\n  path: /m\ndata:\n  train: /t\noutput:\n  dir: /o\nlora:\n  target_modules: "
       "[\"q\xc0\xafx\"]\n",
       "invalid UTF-8 at byte 1 (0xc0)"},  // an overlong '/'
      {"model:\n  path: /m\ndata:\n  train: /t\noutput:\n  dir: /o\nlora:\n  rank_pattern: "
       "{\"\xed\xa0\x80\": 4}\n",
       "key: invalid UTF-8 at byte 0 (0xed)"},  // a surrogate
  };
  for (const Case& c : cases) {
    absl::StatusOr<JobConfig> j = ParseJobConfig(c.yaml, "j.yaml");
    ASSERT_FALSE(j.ok()) << c.error;
    EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(j.status().message()), HasSubstr(c.error));
  }
  // Tabs, newlines and any valid UTF-8 stay allowed.
  absl::StatusOr<JobConfig> ok = ParseJobConfig(
      "model:\n  path: \"/m\\tö/模型/😀\"\ndata:\n  train: /t\noutput:\n  dir: /o\n", "j.yaml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->model.path, "/m\tö/模型/😀");
}

TEST(JobConfigTest, OutOfRange) {
  absl::StatusOr<JobConfig> c =
      ParseJobConfig(std::string(kMinimal) + "training:\n  learning_rate: -1\n", "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("training.learning_rate"));
  EXPECT_THAT(c.status().message(), HasSubstr("out of range"));
}

TEST(JobConfigTest, EnumValueChecked) {
  absl::StatusOr<JobConfig> c = ParseJobConfig(
      std::string(kMinimal) + "training:\n  lr_scheduler: exponential\n", "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              HasSubstr("'exponential' is not one of cosine, linear, constant"));
}

TEST(JobConfigTest, QuantizationIsNoneOrNf4) {
  absl::StatusOr<JobConfig> c = ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.quantization, "none");
  c = ParseJobConfig(
      "model:\n  path: /m\n  quantization: nf4\ndata:\n  train: t.jsonl\n"
      "output:\n  dir: /o\n",
      "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.quantization, "nf4");
  EXPECT_THAT(c->ToYaml(), HasSubstr("quantization: nf4"));
  c = ParseJobConfig(
      "model:\n  path: /m\n  quantization: int4\ndata:\n  train: t.jsonl\n"
      "output:\n  dir: /o\n",
      "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("job.yaml:3: field 'model.quantization'"));
  EXPECT_THAT(c.status().message(), HasSubstr("'int4' is not one of none, nf4"));
}

TEST(JobConfigTest, MissingRequiredField) {
  absl::StatusOr<JobConfig> c =
      ParseJobConfig("model:\n  path: /m\noutput:\n  dir: /o\n", "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("'data.train' is required"));
}

TEST(JobConfigTest, MalformedYamlNamesPosition) {
  absl::StatusOr<JobConfig> c = ParseJobConfig("model: [unclosed\n", "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("job.yaml:"));
  EXPECT_THAT(c.status().message(), HasSubstr("not valid YAML"));
}

TEST(JobConfigTest, NotAMapping) {
  absl::StatusOr<JobConfig> c = ParseJobConfig("- a\n- b\n", "job.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("must be a mapping"));
}

TEST(JobConfigTest, OverridesApplyAndValidate) {
  JobConfig c = *ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(ApplyOverride(c, "lora.r=4").ok());
  EXPECT_EQ(c.lora.r, 4);
  ASSERT_TRUE(ApplyOverride(c, "lora.target_modules=[q_proj,k_proj]").ok());
  EXPECT_EQ(c.lora.target_modules, (std::vector<std::string>{"q_proj", "k_proj"}));
  ASSERT_TRUE(ApplyOverride(c, "output.dir=/elsewhere").ok());
  EXPECT_EQ(c.output.dir, "/elsewhere");
  EXPECT_THAT(ApplyOverride(c, "lora.rank=4").message(), HasSubstr("unknown field 'lora.rank'"));
  EXPECT_THAT(ApplyOverride(c, "lora.r").message(), HasSubstr("expected section.field=value"));
  EXPECT_THAT(ApplyOverride(c, "lora.r=0").message(), HasSubstr("out of range"));
}

TEST(JobConfigTest, ToYamlRoundTrips) {
  JobConfig c = *ParseJobConfig(kMinimal, "job.yaml");
  c.lora.layers_to_transform = {1, 3};
  c.training.learning_rate = 3e-4;
  absl::StatusOr<JobConfig> back = ParseJobConfig(c.ToYaml(), "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << c.ToYaml();
  EXPECT_EQ(back->ToYaml(), c.ToYaml());
  EXPECT_EQ(back->lora.layers_to_transform, c.lora.layers_to_transform);
}

TEST(JobConfigTest, LoraTargetFormsAndPatterns) {
  absl::StatusOr<JobConfig> c = ParseJobConfig(std::string(kMinimal) + R"(lora:
  target_modules: '.*\.(q|v)_proj'
  rank_pattern: {down_proj: 32, 'layers\.0\..*': 4}
  alpha_pattern: {down_proj: 64}
)",
                                               "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->lora.target_modules_regex);
  EXPECT_EQ(c->lora.target_modules, std::vector<std::string>{".*\\.(q|v)_proj"});
  ASSERT_EQ(c->lora.rank_pattern.size(), 2u);
  EXPECT_EQ(c->lora.rank_pattern[0], (std::pair<std::string, int64_t>{"down_proj", 32}));
  EXPECT_EQ(c->lora.rank_pattern[1].first, "layers\\.0\\..*");  // file order kept
  EXPECT_DOUBLE_EQ(c->lora.alpha_pattern[0].second, 64);
  absl::StatusOr<JobConfig> back = ParseJobConfig(c->ToYaml(), "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->lora.target_modules_regex);
  EXPECT_EQ(back->lora.rank_pattern, c->lora.rank_pattern);
  EXPECT_EQ(back->ToYaml(), c->ToYaml());

  // "all-linear" and lists are not regexes.
  JobConfig d = *ParseJobConfig(kMinimal, "job.yaml");
  ASSERT_TRUE(ApplyOverride(d, "lora.target_modules=all-linear").ok());
  EXPECT_FALSE(d.lora.target_modules_regex);
  ASSERT_TRUE(ApplyOverride(d, "lora.target_modules=[q_proj]").ok());
  EXPECT_FALSE(d.lora.target_modules_regex);

  EXPECT_THAT(
      ParseJobConfig(std::string(kMinimal) + "lora:\n  rank_pattern: {q_proj: 0}\n", "job.yaml")
          .status()
          .message(),
      HasSubstr("job.yaml:9: field 'lora.rank_pattern'[q_proj]: rank must be in [1, 4096]"));
  EXPECT_THAT(
      ParseJobConfig(std::string(kMinimal) + "lora:\n  rank_pattern: {q_proj: 2, q_proj: 3}\n",
                     "job.yaml")
          .status()
          .message(),
      HasSubstr("pattern 'q_proj' appears twice"));
  EXPECT_THAT(ParseJobConfig(std::string(kMinimal) + "lora:\n  alpha_pattern: [1]\n", "job.yaml")
                  .status()
                  .message(),
              HasSubstr("expected a mapping of module pattern: alpha"));
}

// The job config is the runtime's TrainingConfig plus `lora:`: the same
// sections in the same order, and RunTraining takes it as a TrainingConfig.
TEST(JobConfigTest, IsATrainingConfigPlusALoraSection) {
  JobConfig c = *ParseJobConfig(kMinimal, "job.yaml");
  const train::TrainingConfig& t = c;
  EXPECT_EQ(t.model.path, "/models/llama");
  EXPECT_THAT(
      ParseJobConfig("optimiser:\n  lr: 1\n", "j.yaml").status().message(),
      HasSubstr("j.yaml:1: field 'optimiser': unknown section; expected one of model, data, lora, "
                "training, preference, eval, checkpoint, output"));
  EXPECT_THAT(ParseJobConfig("- a\n", "j.yaml").status().message(),
              HasSubstr("j.yaml: the job config must be a mapping of sections (model, data, lora, "
                        "training, preference, eval, "
                        "checkpoint, output)"));
  // The base's YAML has no lora section; the job's has it after data.
  EXPECT_EQ(t.ToYaml().find("lora:"), std::string::npos);
  const std::string y = c.ToYaml();
  EXPECT_LT(y.find("data:"), y.find("lora:"));
  EXPECT_LT(y.find("lora:"), y.find("training:"));
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  c.lora.r = 0;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.Validate().message(),
              HasSubstr("job config: field 'lora.r': 0 is out of range [1, 4096]"));
  EXPECT_TRUE(t.Validate().ok()) << "the runtime's part is still valid";
}

// Every example under configs/ parses, and starts with the command that runs it.
TEST(JobConfigTest, ExampleConfigsParse) {
  // Bazel runs the test in its runfiles (TEST_SRCDIR); CTest in the source tree.
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  const std::filesystem::path dir =
      srcdir ? std::filesystem::path(srcdir) / (workspace ? workspace : "fjord") / "configs"
             : "configs";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir << " is not a directory";
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    // fjordd.yaml is the daemon's (daemon/server/config_test.cc parses it).
    if (entry.path().extension() != ".yaml" || entry.path().filename() == "fjordd.yaml") continue;
    ++n;
    absl::StatusOr<JobConfig> c = LoadJobConfig(entry.path().string());
    EXPECT_TRUE(c.ok()) << entry.path() << ": " << c.status();
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_THAT(text, HasSubstr("fjord-train --config configs/" + entry.path().filename().string()))
        << entry.path() << " should start with the command that runs it";
  }
  EXPECT_GE(n, 3);
}

}  // namespace
}  // namespace fjord::lora
