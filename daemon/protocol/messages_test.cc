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
      {"unknown nested",
       {{"hyperparameters", {{"epoch", 3}}}},
       "hyperparameters.epoch",
       "unknown field"},
      {"wrong type",
       {{"hyperparameters", {{"epochs", "three"}}}},
       "hyperparameters.epochs",
       "must be an integer"},
      {"fractional int", {{"lora", {{"r", 2.5}}}}, "lora.r", "must be an integer"},
      {"range",
       {{"hyperparameters", {{"learning_rate", -1}}}},
       "hyperparameters.learning_rate",
       "must be in (0"},
      {"scheduler",
       {{"hyperparameters", {{"lr_scheduler", "step"}}}},
       "hyperparameters.lr_scheduler",
       "cosine, linear or constant"},
      {"dropout 1", {{"lora", {{"dropout", 1.0}}}}, "lora.dropout", "must be in [0, 1)"},
      {"empty modules",
       {{"lora", {{"target_modules", json::array()}}}},
       "lora.target_modules",
       "must not be empty"},
      {"model type", {{"model", 7}}, "model", "must be a string"},
      {"model empty", {{"model", ""}}, "model", "must not be empty"},
      {"priority", {{"priority", 11}}, "priority", "[-10, 10]"},
      {"gpus", {{"gpus", 0}}, "gpus", "[1, 64]"},
      {"quantization",
       {{"quantization", "int4"}},
       "quantization",
       "quantization must be none or nf4, got 'int4'"},
      {"quantization case", {{"quantization", "NF4"}}, "quantization", "none or nf4, got 'NF4'"},
      {"quantization empty", {{"quantization", ""}}, "quantization", "none or nf4, got ''"},
      {"quantization type", {{"quantization", 4}}, "quantization", "must be a string"},
      {"shard_base type",
       {{"shard_base", "yes"}},
       "shard_base",
       "shard_base must be true or false, got string"},
      {"shard_base number", {{"shard_base", 1}}, "shard_base", "must be true or false"},
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
  body["heldout_file"] = nullptr;
  body["hyperparameters"] = nullptr;
  EXPECT_TRUE(JobSpecFromJson(body).ok());
}

// heldout_file: optional like validation_file, in the body and the
// fingerprint only when given (so the fingerprints of jobs without it are
// the ones they had before the field existed), in the job object always.
TEST(JobSpecTest, HeldoutFile) {
  json body = MinimalSpec();
  absl::StatusOr<JobSpec> without = JobSpecFromJson(body);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(without->heldout_file, "");
  EXPECT_FALSE(JobSpecToJson(*without).contains("heldout_file"));
  EXPECT_EQ(JobSpecFingerprint(*without).find("heldout_file"), std::string::npos);
  body["heldout_file"] = "files/heldout.jsonl";
  absl::StatusOr<JobSpec> with = JobSpecFromJson(body);
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(with->heldout_file, "files/heldout.jsonl");
  EXPECT_EQ(JobSpecToJson(*with)["heldout_file"], "files/heldout.jsonl");
  EXPECT_NE(JobSpecFingerprint(*with), JobSpecFingerprint(*without));
  body["heldout_file"] = 3;
  EXPECT_EQ(ParamOf(JobSpecFromJson(body).status()), "heldout_file");
  body["heldout_file"] = std::string(1025, 'a');
  EXPECT_EQ(ParamOf(JobSpecFromJson(body).status()), "heldout_file");

  Job job;
  job.id = "job-1";
  job.spec = *without;
  EXPECT_EQ(JobToJson(job)["heldout_file"], nullptr);
  job.spec = *with;
  EXPECT_EQ(JobToJson(job)["heldout_file"], "files/heldout.jsonl");
  absl::StatusOr<Job> back = JobFromJson(JobToJson(job));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->spec.heldout_file, "files/heldout.jsonl");
  // A job stored before the field existed reads as having none.
  json old = JobToJson(job);
  old.erase("heldout_file");
  back = JobFromJson(old);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->spec.heldout_file, "");
}

// quantization: "none" unless asked; in the body, the fingerprint and the
// job object only when it is not "none", so the encodings of jobs without
// it (and the shared test vectors) are the ones they had before the field
// existed; a stored job without it reads as "none".
TEST(JobSpecTest, Quantization) {
  json body = MinimalSpec();
  absl::StatusOr<JobSpec> plain = JobSpecFromJson(body);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->quantization, "none");
  EXPECT_FALSE(JobSpecToJson(*plain).contains("quantization"));
  EXPECT_EQ(JobSpecFingerprint(*plain).find("quantization"), std::string::npos);
  body["quantization"] = "none";
  absl::StatusOr<JobSpec> none = JobSpecFromJson(body);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->quantization, "none");
  EXPECT_EQ(JobSpecFingerprint(*none), JobSpecFingerprint(*plain));
  body["quantization"] = nullptr;  // null means absent
  ASSERT_TRUE(JobSpecFromJson(body).ok());
  EXPECT_EQ(JobSpecFromJson(body)->quantization, "none");
  body["quantization"] = "nf4";
  absl::StatusOr<JobSpec> nf4 = JobSpecFromJson(body);
  ASSERT_TRUE(nf4.ok()) << nf4.status();
  EXPECT_EQ(nf4->quantization, "nf4");
  EXPECT_EQ(JobSpecToJson(*nf4)["quantization"], "nf4");
  EXPECT_NE(JobSpecFingerprint(*nf4), JobSpecFingerprint(*plain));
  absl::StatusOr<JobSpec> again = JobSpecFromJson(JobSpecToJson(*nf4));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->quantization, "nf4");

  Job job;
  job.id = "job-1";
  job.status = JobStatus::kQueued;
  job.spec = *plain;
  EXPECT_FALSE(JobToJson(job).contains("quantization"));
  absl::StatusOr<Job> back = JobFromJson(JobToJson(job));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->spec.quantization, "none");
  job.spec = *nf4;
  EXPECT_EQ(JobToJson(job)["quantization"], "nf4");
  back = JobFromJson(JobToJson(job));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->spec.quantization, "nf4");
  EXPECT_EQ(JobToJson(*back), JobToJson(job));
  json null_field = JobToJson(job);
  null_field["quantization"] = nullptr;
  EXPECT_EQ(JobFromJson(null_field)->spec.quantization, "none");
  json wrong = JobToJson(job);
  wrong["quantization"] = 4;
  EXPECT_THAT(JobFromJson(wrong).status().message(),
              HasSubstr("malformed reply: job.quantization is number"));
}

// shard_base: false unless asked; in the body, the fingerprint and the job
// object only when true (so the encodings of other jobs and the shared test
// vectors stay as they were); accepted with one GPU (where it has no effect)
// and with quantization none, never with nf4; a stored job without it reads
// as false.
TEST(JobSpecTest, ShardBase) {
  json body = MinimalSpec();
  absl::StatusOr<JobSpec> plain = JobSpecFromJson(body);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->shard_base);
  EXPECT_FALSE(JobSpecToJson(*plain).contains("shard_base"));
  EXPECT_EQ(JobSpecFingerprint(*plain).find("shard_base"), std::string::npos);
  body["shard_base"] = false;
  absl::StatusOr<JobSpec> off = JobSpecFromJson(body);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->shard_base);
  EXPECT_EQ(JobSpecFingerprint(*off), JobSpecFingerprint(*plain));
  body["shard_base"] = nullptr;  // null means absent
  ASSERT_TRUE(JobSpecFromJson(body).ok());
  EXPECT_FALSE(JobSpecFromJson(body)->shard_base);
  body["shard_base"] = true;  // gpus 1: accepted, no effect
  absl::StatusOr<JobSpec> on = JobSpecFromJson(body);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->shard_base);
  EXPECT_EQ(JobSpecToJson(*on)["shard_base"], true);
  EXPECT_NE(JobSpecFingerprint(*on), JobSpecFingerprint(*plain));
  absl::StatusOr<JobSpec> again = JobSpecFromJson(JobSpecToJson(*on));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->shard_base);
  body["gpus"] = 8;
  body["quantization"] = "none";
  ASSERT_TRUE(JobSpecFromJson(body).ok());
  body["quantization"] = "nf4";  // both: sharded in 4 bits
  absl::StatusOr<JobSpec> both = JobSpecFromJson(body);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_TRUE(both->shard_base);
  EXPECT_EQ(both->quantization, "nf4");
  body["method"] = "dpo";  // preference tuning on a sharded base
  absl::StatusOr<JobSpec> dpo = JobSpecFromJson(body);
  ASSERT_TRUE(dpo.ok()) << dpo.status();
  EXPECT_EQ(dpo->method, "dpo");
  EXPECT_TRUE(dpo->shard_base);
  body.erase("method");
  body["shard_base"] = false;  // nf4 alone
  ASSERT_TRUE(JobSpecFromJson(body).ok());

  Job job;
  job.id = "job-1";
  job.status = JobStatus::kQueued;
  job.spec = *plain;
  EXPECT_FALSE(JobToJson(job).contains("shard_base"));
  absl::StatusOr<Job> back = JobFromJson(JobToJson(job));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->spec.shard_base);
  job.spec = *on;
  EXPECT_EQ(JobToJson(job)["shard_base"], true);
  back = JobFromJson(JobToJson(job));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->spec.shard_base);
  EXPECT_EQ(JobToJson(*back), JobToJson(job));
  json null_field = JobToJson(job);
  null_field["shard_base"] = nullptr;
  EXPECT_FALSE(JobFromJson(null_field)->spec.shard_base);
  json wrong = JobToJson(job);
  wrong["shard_base"] = "true";
  EXPECT_THAT(JobFromJson(wrong).status().message(),
              HasSubstr("malformed reply: job.shard_base is string"));
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

namespace fjord::protocol {
namespace {

// A number that does not fit the field (the protocol fuzzer's find: a float
// of 1.7e22 was cast to int64_t, undefined behaviour) is a malformed reply.
TEST(JobFromJsonTest, NumbersOutsideTheFieldsRangeAreMalformed) {
  for (const char* bad : {R"({"id": "job-1", "status": "queued", "created_at_ms": 1.7e22})",
                          R"({"id": "job-1", "status": "queued", "gpus": 1e12})",
                          R"({"id": "job-1", "status": "queued", "step": 18446744073709551615})",
                          R"({"id": "job-1", "status": "queued", "started_at_ms": -1e300})"}) {
    absl::StatusOr<Job> job = JobFromJson(nlohmann::json::parse(bad));
    EXPECT_EQ(job.status().code(), absl::StatusCode::kInternal) << bad;
  }
  absl::StatusOr<Job> ok = JobFromJson(
      nlohmann::json::parse(R"({"id": "job-1", "status": "queued", "created_at_ms": 1.7e12})"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->created_at_ms, 1700000000000);
}

}  // namespace
}  // namespace fjord::protocol
