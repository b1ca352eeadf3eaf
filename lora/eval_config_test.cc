#include "lora/eval_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::lora {
namespace {

using ::testing::HasSubstr;

TEST(EvaluationConfigTest, RoundTripsThroughItsYaml) {
  EvaluationConfig c;
  c.model = "/models/tiny";
  c.candidates = {{"base", "", "", "", "", ""},
                  {"ft", "/jobs/a/adapter", "", "", "", ""},
                  {"up", "", "/files/f-1", "/files/f-2", "", ""},
                  {"other", "", "", "", "/models/other", "other-1b"}};
  c.datasets = {{"file-1", "/files/file-1"}, {"", "/data/qa.jsonl"}};
  c.metrics = {"loss", "contains"};
  c.max_new_tokens = 32;
  c.samples = 0;
  c.seed = 9;
  c.judge = "/models/judge";
  c.output_dir = "/jobs/e";
  c.job_id = "job-1";
  c.model_name = "tiny";
  const std::string yaml = EvaluationConfigToYaml(c);
  EXPECT_TRUE(IsEvaluationYaml(yaml));
  EXPECT_FALSE(IsEvaluationYaml("model: {path: x}\ndata: {train: y}\n"));
  absl::StatusOr<EvaluationConfig> back = ParseEvaluationConfig(yaml, "job.yaml");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(EvaluationConfigToYaml(*back), yaml);
  ASSERT_EQ(back->candidates.size(), 4u);
  EXPECT_EQ(back->candidates[3].model, "/models/other");
  EXPECT_EQ(back->candidates[3].model_name, "other-1b");
  EXPECT_EQ(back->candidates[1].adapter, "/jobs/a/adapter");
  EXPECT_EQ(back->candidates[2].adapter_model, "/files/f-2");
  EXPECT_EQ(back->datasets[1].path, "/data/qa.jsonl");
  EXPECT_EQ(back->metrics, (std::vector<std::string>{"loss", "contains"}));
  EXPECT_EQ(back->seed, 9u);
  EXPECT_EQ(back->model_name, "tiny");
}

TEST(EvaluationConfigTest, BadFilesAreRefusedNamingTheLineAndField) {
  const std::string head =
      "evaluation:\n  model: /m\n  candidates:\n    - name: base\n  datasets:\n    - path: /d\n";
  for (const auto& [extra, want] : std::vector<std::pair<std::string, std::string>>{
           {"  colour: red\n", "job.yaml:7: field 'evaluation.colour': unknown key"},
           {"  samples: 1000\n", "field 'evaluation.samples': 1000 is out of range [0, 100]"},
           {"  metrics: [loss, bleu]\n", "unknown metric 'bleu'"},
           {"  device: tpu\n", "'tpu' is not one of auto, cpu, cuda"},
           {"  seed: x\n", "field 'evaluation.seed': expected an integer"}}) {
    absl::StatusOr<EvaluationConfig> c = ParseEvaluationConfig(head + extra, "job.yaml");
    ASSERT_FALSE(c.ok()) << extra;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(want)) << c.status();
  }
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"evaluation:\n  model: /m\n  datasets:\n    - path: /d\n",
            "field 'evaluation.candidates' is required"},
           {"evaluation:\n  model: /m\n  candidates:\n    - name: a\n    - name: a\n  datasets:\n"
            "    - path: /d\n",
            "candidate name 'a' appears twice"},
           {"evaluation:\n  model: /m\n  candidates:\n    - name: a\n      adapter_config: /c\n"
            "  datasets:\n    - path: /d\n",
            "its two files (adapter_config and adapter_model)"},
           {"evaluation:\n  model: /m\n  candidates:\n    - adapter: /x\n  datasets:\n    - path: "
            "/d\n",
            "'name' is required"},
           {"model: /m\n", "an evaluation job file is one mapping 'evaluation:'"},
           {"evaluation: [1\n", "not valid YAML"}}) {
    absl::StatusOr<EvaluationConfig> c = ParseEvaluationConfig(text, "job.yaml");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_THAT(c.status().message(), HasSubstr(want)) << c.status();
  }
}

}  // namespace
}  // namespace fjord::lora
