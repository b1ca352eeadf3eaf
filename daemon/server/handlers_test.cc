// The handlers and the job runner without the loop: a real store and
// storage root in a temporary directory, a fake clock and a fake Workers
// that launches nothing (it records what would have run).
#include "daemon/server/handlers.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <zmq.hpp>

#include "daemon/protocol/errors.h"
#include "daemon/server/commands.h"
#include "daemon/server/job_runner.h"
#include "daemon/server/sessions.h"
#include "daemon/server/uploads.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using nlohmann::json;
using protocol::Job;
using protocol::JobStatus;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class FakeWorkers : public Workers {
 public:
  std::string EndpointFor(const std::string& job_id) const override { return "ipc:///fake/" + job_id; }
  absl::Status Launch(const std::string& job_id, const WorkerSpec& spec, const LaunchOptions&) override {
    launched.push_back({job_id, spec});
    running.insert(job_id);
    return absl::OkStatus();
  }
  void Stop(const std::string& job_id) override { stopped.push_back(job_id); }
  void Kill(const std::string& job_id) override { killed.push_back(job_id); }
  bool Running(const std::string& job_id) const override { return running.count(job_id) > 0; }
  size_t size() const override { return running.size(); }

  std::vector<std::pair<std::string, WorkerSpec>> launched;
  std::set<std::string> running;
  std::vector<std::string> stopped, killed;
};

class HandlersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fjhnd-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    fs::create_directories(dir_ + "/storage/acme/data");
    fs::create_directories(dir_ + "/model");
    std::ofstream(dir_ + "/storage/acme/data/train.jsonl") << "{\"text\": \"x\"}\n";
    config_.node_name = "n";
    config_.storage_root = dir_ + "/storage";
    config_.models = {{"tiny", dir_ + "/model"}};
    config_.worker.program = "/bin/true";
    config_.scheduler.cpu_slots = 1;
    store_ = *JobStore::Open(dir_ + "/fjordd.db");
    storage_ = std::make_unique<Storage>(config_.storage_root);
    jobs_ = std::make_unique<JobLifecycle>(store_.get(), &clock_, &metrics_,
                                           [this](const Job& job, const std::vector<protocol::JobEvent>& events) {
                                             tenants_->AppendJobEvents(job, events);
                                           });
    TenantAreas::Options to;
    to.node_name = "n";
    to.quota_files = config_.limits.max_tenant_files;
    tenants_ = std::make_unique<TenantAreas>(storage_.get(), &clock_, to,
                                             [this](const std::string& t) { return uploads_.InFlight(t); });
    router_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::router);
    sessions_ = std::make_unique<Sessions>(router_.get(), &clock_, &config_.limits, store_.get(), jobs_.get());
    ctx_.config = &config_;
    ctx_.clock = &clock_;
    ctx_.store = store_.get();
    ctx_.storage = storage_.get();
    ctx_.tenants = tenants_.get();
    ctx_.jobs = jobs_.get();
    ctx_.workers = &workers_;
    ctx_.metrics = &metrics_;
    ctx_.uploads = &uploads_;
    ctx_.sessions = sessions_.get();
    ctx_.adapter_cache = &adapter_cache_;
    ctx_.storage_available = [] { return absl::OkStatus(); };
    runner_ = std::make_unique<JobRunner>(&ctx_, nullptr);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Request As(const std::string& tenant, const json& body) {
    body_ = body;
    Request rq;
    rq.identity = "peer";
    rq.request_id = "r1";
    rq.principal = Principal{tenant + "-key", tenant, false};
    rq.body = &body_;
    rq.data = &data_;
    return rq;
  }
  Job Create(const json& extra = json::object()) {
    json body = {{"model", "tiny"}, {"training_file", "data/train.jsonl"}};
    body.update(extra);
    absl::StatusOr<Reply> r = HandleJobCreate(ctx_, As("acme", body));
    EXPECT_TRUE(r.ok()) << r.status();
    return *jobs_->Load(r.ok() ? (*r->body)["id"].get<std::string>() : "");
  }

  std::string dir_;
  DaemonConfig config_;
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<JobLifecycle> jobs_;
  std::unique_ptr<TenantAreas> tenants_;
  Uploads uploads_;
  zmq::context_t zmq_;
  std::unique_ptr<zmq::socket_t> router_;
  std::unique_ptr<Sessions> sessions_;
  std::map<std::string, std::vector<protocol::AdapterFile>> adapter_cache_;
  FakeWorkers workers_;
  DaemonContext ctx_;
  std::unique_ptr<JobRunner> runner_;
  json body_;
  std::optional<std::string> data_;
};

// job.create writes the job's directory (job.yaml for fjord-train,
// events.jsonl with the first event) and the job waits for its validator,
// which the runner starts with the job's config.
TEST_F(HandlersTest, CreatedJobsAreValidatedWithTheirConfig) {
  const Job job = Create({{"hyperparameters", {{"batch_size", 2}}}});
  EXPECT_EQ(job.status, JobStatus::kValidating);
  const std::string jdir = dir_ + "/storage/acme/jobs/" + job.id;
  std::ifstream yaml(jdir + "/job.yaml");
  std::string text((std::istreambuf_iterator<char>(yaml)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("micro_batch_size: 2"));
  EXPECT_TRUE(fs::exists(jdir + "/events.jsonl"));
  runner_->Reconcile(/*stopping=*/false, /*storage_ok=*/true);
  ASSERT_EQ(workers_.launched.size(), 1u);
  EXPECT_EQ(workers_.launched[0].first, job.id);
  EXPECT_THAT(workers_.launched[0].second.args, ::testing::ElementsAre("validate", "--config", jdir + "/job.yaml"));
  EXPECT_EQ(workers_.launched[0].second.stdout_path, jdir + "/validation.json");
}

TEST_F(HandlersTest, BadJobsAreRefusedNamingTheField) {
  absl::Status unknown = HandleJobCreate(ctx_, As("acme", {{"model", "huge"}, {"training_file", "data/train.jsonl"}})).status();
  EXPECT_EQ(protocol::ParamOf(unknown), "model");
  EXPECT_THAT(unknown.message(), HasSubstr("unknown model 'huge' (this node has: tiny)"));
  absl::Status missing = HandleJobCreate(ctx_, As("acme", {{"model", "tiny"}, {"training_file", "data/none.jsonl"}})).status();
  EXPECT_EQ(protocol::ParamOf(missing), "training_file");
  absl::Status other = HandleJobCreate(ctx_, As("acme", {{"model", "tiny"}, {"training_file", "data/train.jsonl"},
                                                         {"tenant", "zeta"}}))
                           .status();
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  // Nothing was made for them.
  EXPECT_TRUE(jobs_->live().empty());
}

// Every handler acting on one job refuses another tenant's exactly as an
// unknown id.
TEST_F(HandlersTest, AnotherTenantsJobIsNotFound) {
  const Job job = Create();
  for (const auto& handler : {HandleJobGet, HandleJobEvents, HandleJobCheckpoints, HandleJobCancel, HandleAdapterFiles}) {
    absl::Status zeta = handler(ctx_, As("zeta", {{"job_id", job.id}})).status();
    EXPECT_EQ(zeta.code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(protocol::ParamOf(zeta), "job_id");
    absl::Status none = handler(ctx_, As("acme", {{"job_id", "job-0000000000000000"}})).status();
    EXPECT_EQ(none.code(), absl::StatusCode::kNotFound);
  }
}

// Cancelling a job whose validator runs kills it; pausing a running one
// stops its worker (SIGTERM).
TEST_F(HandlersTest, ControlReachesTheWorkers) {
  config_.worker.validate = false;
  const Job job = Create();
  EXPECT_EQ(job.status, JobStatus::kQueued);
  runner_->Reconcile(false, true);
  ASSERT_EQ(workers_.launched.size(), 1u);
  EXPECT_EQ(workers_.launched[0].second.args[0], "--config");
  EXPECT_EQ(jobs_->Load(job.id)->status, JobStatus::kRunning);
  ASSERT_TRUE(HandleJobPause(ctx_, As("acme", {{"job_id", job.id}})).ok());
  EXPECT_THAT(workers_.stopped, ::testing::ElementsAre(job.id));
  EXPECT_EQ(jobs_->Load(job.id)->status, JobStatus::kPausing);
  config_.worker.validate = true;
  const Job validating = Create();
  runner_->Reconcile(false, true);
  ASSERT_TRUE(HandleJobCancel(ctx_, As("acme", {{"job_id", validating.id}})).ok());
  EXPECT_THAT(workers_.killed, ::testing::ElementsAre(validating.id));
  EXPECT_EQ(jobs_->Load(validating.id)->status, JobStatus::kCancelled);
}

// A trainer that exits 0 without a usable adapter is not a success: the
// job is requeued with the reason (and resumes from its checkpoint).
TEST_F(HandlersTest, ExitZeroWithoutAnAdapterIsRequeued) {
  config_.worker.validate = false;
  const Job job = Create();
  runner_->Reconcile(false, true);
  workers_.running.clear();
  WorkerUpdate exited;
  exited.kind = WorkerUpdate::Kind::kExited;
  exited.job_id = job.id;
  exited.exit = WorkerExit{0, 0};
  runner_->OnUpdates({exited}, /*stopping=*/false);
  const Job after = *jobs_->Load(job.id);
  EXPECT_EQ(after.status, JobStatus::kRequeued);
  ASSERT_TRUE(after.error.has_value());
  EXPECT_THAT(after.error->message, HasSubstr("the worker exited 0 but its adapter is unusable"));
  EXPECT_EQ(after.restarts, 1);
}

// file.list pages newest first and says what the area holds.
TEST_F(HandlersTest, FileListPages) {
  for (int i = 0; i < 3; ++i) {
    protocol::FileInfo f{"file-" + std::to_string(i), "t.jsonl", 5, "ab", i, "files/file-" + std::to_string(i)};
    ASSERT_TRUE(store_->AddFile("acme", f, "upl-" + std::to_string(i)).ok());
  }
  absl::StatusOr<Reply> first = HandleFileList(ctx_, As("acme", {{"limit", 2}}));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first->body)["files"].size(), 2u);
  EXPECT_EQ((*first->body)["files"][0]["id"], "file-2");
  EXPECT_TRUE((*first->body)["has_more"].get<bool>());
  absl::StatusOr<Reply> next = HandleFileList(ctx_, As("acme", {{"limit", 2}, {"after", "file-1"}}));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next->body)["files"].size(), 1u);
  EXPECT_FALSE((*next->body)["has_more"].get<bool>());
  EXPECT_EQ((*next->body)["quota_files"], config_.limits.max_tenant_files);
  EXPECT_EQ(protocol::ParamOf(HandleFileList(ctx_, As("acme", {{"limit", 0}})).status()), "limit");
}

// Every command of docs/protocol.md §5 has a handler.
TEST_F(HandlersTest, TheCommandTableServesEveryCommand) {
  for (const char* c : {"ping", "model.list", "job.create", "job.get", "job.list", "job.cancel", "job.pause",
                        "job.resume", "job.events", "job.subscribe", "job.checkpoints", "job.delete",
                        "file.upload.begin", "file.upload.chunk", "file.upload.finish", "file.list", "file.delete",
                        "adapter.files", "adapter.download"}) {
    EXPECT_TRUE(CommandTable().count(c)) << c;
  }
  EXPECT_EQ(CommandTable().size(), 19u);
}

}  // namespace
}  // namespace fjord::daemon
