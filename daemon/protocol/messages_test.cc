#include "daemon/protocol/messages.h"

#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::protocol {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json MinimalSpec() { return json{{"model", "tiny"}, {"training_file", "file-1"}}; }

TEST(JobSpecTest, DefaultsFromAMinimalBody) {
  absl::StatusOr<JobSpec> s = JobSpecFromJson(MinimalSpec());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->model, "tiny");
  EXPECT_EQ(s->hyperparameters.epochs, 1);
  EXPECT_EQ(s->lora.r, 16);
  EXPECT_EQ(s->lora.target_modules, std::vector<std::string>{"all-linear"});
  EXPECT_EQ(s->gpus, 1);
  EXPECT_EQ(s->max_restarts, -1);
}

TEST(JobSpecTest, RoundTrip) {
  json body = MinimalSpec();
  body["hyperparameters"] = {{"epochs", 3}, {"learning_rate", 1e-3}, {"lr_scheduler", "linear"}};
  body["lora"] = {{"r", 8}, {"target_modules", {"q_proj", "v_proj"}}};
  body["metadata"] = {{"team", "x"}};
  body["idempotency_key"] = "k1";
  absl::StatusOr<JobSpec> s = JobSpecFromJson(body);
  ASSERT_TRUE(s.ok()) << s.status();
  absl::StatusOr<JobSpec> again = JobSpecFromJson(JobSpecToJson(*s));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(JobSpecFingerprint(*s), JobSpecFingerprint(*again));
  EXPECT_EQ(again->lora.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(again->metadata.at("team"), "x");
}

struct BadCase {
  std::string name;
  json patch;  // merged into the minimal spec
  std::string param;
  std::string message;
};

TEST(JobSpecTest, BadFieldsNameTheirParam) {
  const std::vector<BadCase> cases = {
      {"unknown top", {{"epochs", 3}}, "epochs", "unknown field 'epochs'"},
      {"unknown nested", {{"hyperparameters", {{"epoch", 3}}}}, "hyperparameters.epoch", "unknown field"},
      {"wrong type", {{"hyperparameters", {{"epochs", "three"}}}}, "hyperparameters.epochs", "must be an integer"},
      {"fractional int", {{"lora", {{"r", 2.5}}}}, "lora.r", "must be an integer"},
      {"range", {{"hyperparameters", {{"learning_rate", -1}}}}, "hyperparameters.learning_rate", "must be in (0"},
      {"scheduler", {{"hyperparameters", {{"lr_scheduler", "step"}}}}, "hyperparameters.lr_scheduler", "cosine, linear or constant"},
      {"dropout 1", {{"lora", {{"dropout", 1.0}}}}, "lora.dropout", "must be in [0, 1)"},
      {"empty modules", {{"lora", {{"target_modules", json::array()}}}}, "lora.target_modules", "must not be empty"},
      {"model type", {{"model", 7}}, "model", "must be a string"},
      {"model empty", {{"model", ""}}, "model", "must not be empty"},
      {"priority", {{"priority", 11}}, "priority", "[-10, 10]"},
      {"gpus", {{"gpus", 0}}, "gpus", "[1, 64]"},
      {"metadata value", {{"metadata", {{"a", 1}}}}, "metadata.a", "must be a string"},
      {"key", {{"idempotency_key", "a\tb"}}, "idempotency_key", "printable ASCII"},
      {"tenant", {{"tenant", "../x"}}, "tenant", "not a valid tenant name"},
      {"hp not object", {{"hyperparameters", 3}}, "hyperparameters", "must be an object"},
      {"nul", {{"training_file", std::string("a\0b", 3)}}, "training_file", "NUL"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    json body = MinimalSpec();
    body.update(c.patch);
    absl::StatusOr<JobSpec> s = JobSpecFromJson(body);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ParamOf(s.status()), c.param);
    EXPECT_THAT(s.status().message(), HasSubstr(c.message));
  }
}

TEST(JobSpecTest, MissingRequiredFields) {
  absl::StatusOr<JobSpec> s = JobSpecFromJson(json{{"model", "m"}});
  EXPECT_EQ(ParamOf(s.status()), "training_file");
  EXPECT_THAT(s.status().message(), HasSubstr("training_file is required"));
  s = JobSpecFromJson(json::array());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(JobSpecTest, NullMeansAbsent) {
  json body = MinimalSpec();
  body["validation_file"] = nullptr;
  body["hyperparameters"] = nullptr;
  EXPECT_TRUE(JobSpecFromJson(body).ok());
}

TEST(JobTest, RoundTrip) {
  Job job;
  job.id = "job-1";
  job.tenant = "acme";
  job.spec.model = "tiny";
  job.spec.training_file = "file-1";
  job.spec.max_restarts = 2;
  job.status = JobStatus::kFailed;
  job.created_at_ms = 5;
  job.started_at_ms = 6;
  job.error = JobError{"INVALID_ARGUMENT", "line 3: bad", "training_file", true};
  job.latest_checkpoint = CheckpointInfo{10, "/x/step-10"};
  job.metrics = {{"loss", 1.5}};
  job.gpu_ids = {0, 1};
  absl::StatusOr<Job> back = JobFromJson(JobToJson(job));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(JobToJson(*back), JobToJson(job));
  EXPECT_EQ(back->error->param, "training_file");
  EXPECT_TRUE(back->error->user_error);
  EXPECT_FALSE(back->finished_at_ms.has_value());
}

TEST(JobTest, MalformedReplies) {
  EXPECT_THAT(JobFromJson(json{{"id", "j"}, {"status", "dancing"}}).status().message(),
              HasSubstr("unknown job status 'dancing'"));
  EXPECT_EQ(JobFromJson(json{{"id", "j"}, {"status", "queued"}, {"step", "x"}}).status().code(),
            absl::StatusCode::kInternal);
  // Unknown fields are fine (forward compatibility).
  EXPECT_TRUE(JobFromJson(json{{"id", "j"}, {"status", "queued"}, {"new_field", 1}}).ok());
}

TEST(StatusTest, NamesAndFinality) {
  for (JobStatus s : kAllJobStatuses) EXPECT_EQ(ParseJobStatus(JobStatusName(s)), s);
  EXPECT_FALSE(ParseJobStatus("done").has_value());
  EXPECT_TRUE(IsFinal(JobStatus::kCancelled));
  EXPECT_FALSE(IsFinal(JobStatus::kPaused));
}

TEST(NamesTest, Tenants) {
  EXPECT_TRUE(ValidTenantName("acme"));
  EXPECT_TRUE(ValidTenantName("a-b_c9"));
  EXPECT_FALSE(ValidTenantName(""));
  EXPECT_FALSE(ValidTenantName("-a"));
  EXPECT_FALSE(ValidTenantName("Acme"));
  EXPECT_FALSE(ValidTenantName("a/b"));
  EXPECT_FALSE(ValidTenantName(".."));
}

}  // namespace
}  // namespace fjord::protocol
