// Misused requests to a real fjordd (loopback, CURVE, the fake worker): each
// gets the specific error code, the param at fault and a message saying
// what is wrong (docs/bad-inputs.md), and the daemon keeps serving.
#include <filesystem>

#include "absl/strings/match.h"
#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace fjord::testing {
namespace {

using nlohmann::json;
using protocol::Job;
using protocol::JobStatus;
using ::testing::HasSubstr;

struct Expect {
  absl::StatusCode code;
  std::string param;
  std::string message;
};

void ExpectError(const absl::Status& s, const Expect& e) {
  EXPECT_EQ(s.code(), e.code) << s;
  EXPECT_EQ(protocol::ParamOf(s), e.param) << s;
  EXPECT_THAT(s.message(), HasSubstr(e.message));
}

// Chunked uploads used out of order, past their size, without data, with a
// bad checksum format, finished early, or named by another tenant.
TEST(BadRequestsTest, UploadMisuse) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto begin = [&](int64_t bytes) {
    absl::StatusOr<protocol::ServerMessage> b = acme->Call(
        "file.upload.begin",
        json{{"filename", "t.jsonl"}, {"bytes", bytes}, {"sha256", std::string(64, 'a')}});
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? b->body["upload_id"].get<std::string>() : std::string();
  };
  const std::string id = begin(10);
  ExpectError(
      acme->Call("file.upload.chunk", json{{"upload_id", id}, {"offset", 5}}, std::string("abc"))
          .status(),
      {absl::StatusCode::kInvalidArgument, "offset", "offset is 5, expected 0"});
  ExpectError(
      acme->Call("file.upload.chunk", json{{"upload_id", id}, {"offset", 0}}, std::string(11, 'x'))
          .status(),
      {absl::StatusCode::kInvalidArgument, "offset", "goes past the announced size of 10 bytes"});
  ExpectError(acme->Call("file.upload.chunk", json{{"upload_id", id}, {"offset", 0}}).status(),
              {absl::StatusCode::kInvalidArgument, "data", "needs the chunk in frame 6"});
  ASSERT_TRUE(
      acme->Call("file.upload.chunk", json{{"upload_id", id}, {"offset", 0}}, std::string("abc"))
          .ok());
  ExpectError(acme->Call("file.upload.finish", json{{"upload_id", id}}).status(),
              {absl::StatusCode::kFailedPrecondition, "upload_id", "received 3 of 10 bytes"});
  ExpectError(h.Zeta()->Call("file.upload.finish", json{{"upload_id", id}}).status(),
              {absl::StatusCode::kNotFound, "upload_id", "no upload '" + id + "' in progress"});
  ExpectError(acme->Call("file.upload.chunk", json{{"upload_id", "upl-nope"}, {"offset", 0}},
                         std::string("a"))
                  .status(),
              {absl::StatusCode::kNotFound, "upload_id", "no upload 'upl-nope' in progress"});
  ExpectError(acme->Call("file.upload.begin",
                         json{{"filename", "t.jsonl"}, {"bytes", 3}, {"sha256", "ABC"}})
                  .status(),
              {absl::StatusCode::kInvalidArgument, "sha256", "64 lower-case hex digits"});
  ExpectError(
      acme->Call("file.upload.begin",
                 json{{"filename", "t.jsonl"}, {"bytes", -1}, {"sha256", std::string(64, 'a')}})
          .status(),
      {absl::StatusCode::kInvalidArgument, "bytes", "bytes"});
  ExpectError(acme->Call("file.upload.begin",
                         json{{"filename", "a\nb"}, {"bytes", 3}, {"sha256", std::string(64, 'a')}})
                  .status(),
              {absl::StatusCode::kInvalidArgument, "filename", "control characters"});
  EXPECT_TRUE(acme->ListFiles()->empty());
  EXPECT_TRUE(acme->Ping().ok());
}

// Adapters asked for before a job succeeded, by a name the adapter does not
// have (a path included), and job commands with bad fields.
TEST(BadRequestsTest, AdapterAndJobCommandMisuse) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec slow = SpecWithData(*acme, FakeData(R"({"steps": 400, "step_ms": 20})"));
  ASSERT_OK_AND_ASSIGN(running, acme->CreateJob(slow));
  ASSERT_TRUE(h.WaitForStatus(*acme, running.id, JobStatus::kRunning).ok());
  ExpectError(
      acme->ListAdapterFiles(running.id).status(),
      {absl::StatusCode::kFailedPrecondition, "job_id", "only a succeeded job has an adapter"});
  protocol::JobSpec quick = SpecWithData(*acme, FakeData(R"({"steps": 2, "step_ms": 5})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(quick));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  ASSERT_EQ(done.status, JobStatus::kSucceeded);
  for (const char* name :
       {"model.safetensors", "../job.yaml", "../../../../keys/server.key", "/etc/passwd"}) {
    ExpectError(acme->Call("adapter.download", json{{"job_id", job.id}, {"name", name}}).status(),
                {absl::StatusCode::kNotFound, "name", "the adapter has no file"});
  }
  ExpectError(acme->Call("adapter.download", json{{"job_id", job.id}, {"name", ""}}).status(),
              {absl::StatusCode::kInvalidArgument, "name", "name must not be empty"});
  ExpectError(acme->Call("job.list", json{{"status", json::array({"runing"})}}).status(),
              {absl::StatusCode::kInvalidArgument, "status", "unknown job status 'runing'"});
  ExpectError(acme->Call("job.events", json{{"job_id", job.id}, {"after_seq", -1}}).status(),
              {absl::StatusCode::kInvalidArgument, "after_seq", "after_seq"});
  ExpectError(acme->PauseJob(job.id).status(),
              {absl::StatusCode::kFailedPrecondition, "", "cannot pause a job that is succeeded"});
  ASSERT_OK_AND_ASSIGN(resumed, acme->ResumeJob(running.id));  // resuming a running job is a no-op
  EXPECT_EQ(resumed.status, JobStatus::kRunning);
  ExpectError(acme->Call("job.get", json{{"job_id", std::string(65, 'j')}}).status(),
              {absl::StatusCode::kInvalidArgument, "job_id", "job_id"});
  ASSERT_TRUE(acme->CancelJob(running.id).ok());
  EXPECT_TRUE(acme->Ping().ok());
}

}  // namespace
}  // namespace fjord::testing
