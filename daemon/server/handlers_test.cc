// The handlers and the job runner without the loop: a real store and
// storage root in a temporary directory, a fake clock and a fake Workers
// that launches nothing (it records what would have run).
#include "daemon/server/handlers.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
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
  std::string EndpointFor(const std::string& job_id) const override {
    return "ipc:///fake/" + job_id;
  }
  absl::Status Launch(const std::string& job_id, const WorkerSpec& spec,
                      const LaunchOptions&) override {
    launched.push_back({job_id, spec});
    running.insert(job_id);
    return absl::OkStatus();
  }
  void Stop(const std::string& job_id) override { stopped.push_back(job_id); }
  void Kill(const std::string& job_id) override { killed.push_back(job_id); }
  bool Running(const std::string& job_id) const override { return running.count(job_id) > 0; }
  size_t size() const override { return running.size(); }
  // As a cluster's workers (the Slurm executor) when cluster_id is set.
  std::string ClusterJobId(const std::string& job_id) const override {
    return running.count(job_id) ? cluster_id : "";
  }
  std::optional<std::string> ReportKeysFor(const std::string&) const override {
    if (cluster_id.empty()) return std::nullopt;
    return std::string("secret_key=for-this-job-only\n");
  }
  absl::Status CheckFits(const std::string&, const WorkerSpec&, int ranks) override {
    fits_asked.push_back(ranks);
    return fits;
  }

  std::string cluster_id;
  absl::Status fits;
  std::vector<int> fits_asked;
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
    jobs_ = std::make_unique<JobLifecycle>(
        store_.get(), &clock_, &metrics_,
        [this](const Job& job, const std::vector<protocol::JobEvent>& events) {
          tenants_->AppendJobEvents(job, events);
        });
    TenantAreas::Options to;
    to.node_name = "n";
    to.quota_files = config_.limits.max_tenant_files;
    tenants_ = std::make_unique<TenantAreas>(
        storage_.get(), &clock_, to, [this](const std::string& t) { return uploads_.InFlight(t); });
    router_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::router);
    sessions_ = std::make_unique<Sessions>(router_.get(), &clock_, &config_.limits, store_.get(),
                                           jobs_.get());
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
  EXPECT_THAT(workers_.launched[0].second.args,
              ::testing::ElementsAre("validate", "--config", jdir + "/job.yaml"));
  EXPECT_EQ(workers_.launched[0].second.stdout_path, jdir + "/validation.json");
}

TEST_F(HandlersTest, BadJobsAreRefusedNamingTheField) {
  absl::Status unknown =
      HandleJobCreate(ctx_, As("acme", {{"model", "huge"}, {"training_file", "data/train.jsonl"}}))
          .status();
  EXPECT_EQ(protocol::ParamOf(unknown), "model");
  EXPECT_THAT(unknown.message(), HasSubstr("unknown model 'huge' (this node has: tiny)"));
  absl::Status missing =
      HandleJobCreate(ctx_, As("acme", {{"model", "tiny"}, {"training_file", "data/none.jsonl"}}))
          .status();
  EXPECT_EQ(protocol::ParamOf(missing), "training_file");
  absl::Status other =
      HandleJobCreate(
          ctx_, As("acme",
                   {{"model", "tiny"}, {"training_file", "data/train.jsonl"}, {"tenant", "zeta"}}))
          .status();
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  // Nothing was made for them.
  EXPECT_TRUE(jobs_->live().empty());
}

// Every handler acting on one job refuses another tenant's exactly as an
// unknown id.
TEST_F(HandlersTest, AnotherTenantsJobIsNotFound) {
  const Job job = Create();
  for (const auto& handler :
       {HandleJobGet, HandleJobEvents, HandleJobCheckpoints, HandleJobCancel, HandleAdapterFiles}) {
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

// executor slurm: a job is handed to Slurm and follows Slurm's states
// (pending with its reason, running on its nodes, requeued by Slurm, ended
// outside fjord); its ranks get their report keys in the job's directory.
TEST_F(HandlersTest, UnderSlurmAJobFollowsSlurmsStates) {
  config_.worker.validate = false;
  config_.executor.kind = "slurm";
  workers_.cluster_id = "4711";
  const Job job = Create({{"gpus", 2}});
  EXPECT_THAT(workers_.fits_asked, ::testing::ElementsAre(2));
  runner_->Reconcile(false, true);
  ASSERT_EQ(workers_.launched.size(), 1u);
  const std::vector<std::string>& args = workers_.launched[0].second.args;
  EXPECT_THAT(args, ::testing::Not(::testing::Contains("--nproc-per-node")));  // srun's job
  const std::string keys = storage_->JobDir("acme", job.id) + "/report.keys";
  EXPECT_THAT(args, ::testing::Contains(keys));
  EXPECT_EQ(fs::status(keys).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  Job j = *jobs_->Load(job.id);
  EXPECT_EQ(j.status, JobStatus::kQueued);  // it waits in Slurm's queue now
  EXPECT_EQ(j.slurm_job_id, "4711");
  auto update = [&](WorkerUpdate::Kind kind, const std::string& detail, bool final = false) {
    WorkerUpdate u;
    u.kind = kind;
    u.job_id = job.id;
    u.detail = detail;
    u.final = final;
    if (kind == WorkerUpdate::Kind::kExited) {
      u.exit = WorkerExit{-1, 9};
      workers_.running.erase(job.id);
    }
    runner_->OnUpdates({u}, false);
    return *jobs_->Load(job.id);
  };
  j = update(WorkerUpdate::Kind::kPending, "Slurm job 4711 pending: Resources");
  EXPECT_EQ(j.status, JobStatus::kQueued);
  EXPECT_EQ(j.queue_detail, "Slurm job 4711 pending: Resources");
  runner_->Reconcile(false, true);
  EXPECT_EQ(workers_.launched.size(), 1u);  // submitted once
  j = update(WorkerUpdate::Kind::kStarted, "c[1-2]");
  EXPECT_EQ(j.status, JobStatus::kRunning);
  EXPECT_EQ(j.node, "c[1-2]");
  EXPECT_EQ(j.queue_detail, "");
  j = update(WorkerUpdate::Kind::kPending, "Slurm job 4711 pending: BeginTime");
  EXPECT_EQ(j.status, JobStatus::kRequeued);  // Slurm requeued it (a node failed)
  EXPECT_EQ(j.restarts, 1);
  ASSERT_TRUE(j.error.has_value());
  EXPECT_THAT(j.error->message, HasSubstr("requeued by Slurm"));
  runner_->Reconcile(false, true);
  EXPECT_EQ(workers_.launched.size(), 1u);  // still Slurm's: not submitted again
  j = update(WorkerUpdate::Kind::kStarted, "c3");
  EXPECT_EQ(j.status, JobStatus::kRunning);
  EXPECT_EQ(j.node, "c3");
  j = update(WorkerUpdate::Kind::kExited,
             "Slurm job 4711 was cancelled outside fjord (scancel or an operator)", true);
  EXPECT_EQ(j.status, JobStatus::kFailed);  // not resumed: restarts were left
  ASSERT_TRUE(j.error.has_value());
  EXPECT_THAT(j.error->message, HasSubstr("cancelled outside fjord"));
  EXPECT_EQ(j.slurm_job_id, "4711");  // kept on the ended job
}

// Under Slurm a job pausing while it waits in Slurm's queue loses its Slurm
// job at once; resuming submits a new one. A job Slurm would refuse is
// refused at job.create with Slurm's reason, nothing stored.
TEST_F(HandlersTest, UnderSlurmPauseResumeAndRefusal) {
  config_.worker.validate = false;
  config_.executor.kind = "slurm";
  workers_.cluster_id = "12";
  const Job job = Create();
  runner_->Reconcile(false, true);
  ASSERT_TRUE(HandleJobPause(ctx_, As("acme", {{"job_id", job.id}})).ok());
  EXPECT_THAT(workers_.killed, ::testing::ElementsAre(job.id));
  Job j = *jobs_->Load(job.id);
  EXPECT_EQ(j.status, JobStatus::kPaused);
  EXPECT_EQ(j.slurm_job_id, "");
  WorkerUpdate u;  // the scancelled job's end: nothing more happens to the paused job
  u.kind = WorkerUpdate::Kind::kExited;
  u.job_id = job.id;
  u.exit = WorkerExit{-1, 9};
  workers_.running.erase(job.id);
  runner_->OnUpdates({u}, false);
  EXPECT_EQ(jobs_->Load(job.id)->status, JobStatus::kPaused);
  ASSERT_TRUE(HandleJobResume(ctx_, As("acme", {{"job_id", job.id}})).ok());
  workers_.cluster_id = "13";
  runner_->Reconcile(false, true);
  EXPECT_EQ(workers_.launched.size(), 2u);
  EXPECT_EQ(jobs_->Load(job.id)->slurm_job_id, "13");

  workers_.fits = absl::FailedPreconditionError(
      "Slurm would refuse the job (2 node(s) x 8 rank(s)): Requested node configuration is not "
      "available");
  absl::StatusOr<Reply> refused = HandleJobCreate(
      ctx_, As("acme", {{"model", "tiny"}, {"training_file", "data/train.jsonl"}, {"gpus", 16}}));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("Requested node configuration"));
  EXPECT_EQ(jobs_->live().size(), 1u);
}

// heldout_file is resolved like validation_file (a path in the tenant's
// area or an uploaded file's id) and reaches fjord-train as eval.heldout;
// one that does not exist is refused naming it, and nothing is made for it.
TEST_F(HandlersTest, HeldoutFileIsResolvedLikeTheValidationFile) {
  std::ofstream(dir_ + "/storage/acme/data/heldout.jsonl")
      << "{\"prompt\": \"a?\", \"answer\": \"b\"}\n";
  const Job job = Create({{"heldout_file", "data/heldout.jsonl"}});
  EXPECT_EQ(job.spec.heldout_file, "data/heldout.jsonl");
  std::ifstream yaml(dir_ + "/storage/acme/jobs/" + job.id + "/job.yaml");
  std::string text((std::istreambuf_iterator<char>(yaml)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("heldout: " + dir_ + "/storage/acme/data/heldout.jsonl"));
  for (const auto& [name, message] :
       {std::pair{"data/none.jsonl", "heldout_file 'data/none.jsonl' does not exist"},
        std::pair{"file-0000000000000000", "heldout_file: no uploaded file"},
        std::pair{"../zeta/h.jsonl", "'..'"}}) {
    absl::Status missing = HandleJobCreate(ctx_, As("acme", {{"model", "tiny"},
                                                             {"training_file", "data/train.jsonl"},
                                                             {"heldout_file", name}}))
                               .status();
    EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument) << missing;
    EXPECT_EQ(protocol::ParamOf(missing), "heldout_file");
    EXPECT_THAT(missing.message(), HasSubstr(message));
  }
  EXPECT_EQ(jobs_->live().size(), 1u);
}

// Llama-3.1-8B's config.json (the fields that size it): 8,030,261,248
// parameters, 16.1 GB in bf16, 5.7 GB in nf4.
constexpr char kLlama8BConfig[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";

std::string ReadJobYaml(const std::string& dir, const Job& job) {
  std::ifstream yaml(dir + "/storage/acme/jobs/" + job.id + "/job.yaml");
  return std::string((std::istreambuf_iterator<char>(yaml)), std::istreambuf_iterator<char>());
}

// On a GPU node that knows its GPUs' memory, job.create refuses a job whose
// frozen base cannot fit on one GPU, showing the arithmetic and what nf4
// would need; with quantization: nf4 the same job is accepted, and the
// trainer's config says nf4.
TEST_F(HandlersTest, TheFrozenBaseMustFitOnOneGpu) {
  fs::create_directories(dir_ + "/llama-8b");
  std::ofstream(dir_ + "/llama-8b/config.json") << kLlama8BConfig;
  config_.models["llama-3.1-8b"] = dir_ + "/llama-8b";
  config_.scheduler.gpus = {0, 1};
  config_.scheduler.gpu_memory_gb = 16;
  const json bf16 = {{"model", "llama-3.1-8b"}, {"training_file", "data/train.jsonl"}};
  absl::Status refused = HandleJobCreate(ctx_, As("acme", bf16)).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(refused), "quantization");
  EXPECT_EQ(refused.message(),
            "model 'llama-3.1-8b' (8.0 B parameters) needs 16.1 GB for its frozen base in bf16 "
            "alone (2 B x 8,030,261,248); this node's GPUs have 16 GB each (14.4 GB usable after "
            "10% for the CUDA context, activations and the adapter); with quantization: nf4 it "
            "needs 5.7 GB; with shard_base over 2 GPUs (gpus: 2) it needs 9.0 GB on each");
  json both_gpus = bf16;
  both_gpus["gpus"] = 2;  // each GPU holds the whole base: two do not help unless sharded
  EXPECT_THAT(HandleJobCreate(ctx_, As("acme", both_gpus)).status().message(),
              HasSubstr("each of the job's 2 GPUs holds the whole base (data parallel); with "
                        "quantization: nf4 it needs 5.7 GB; with shard_base over the job's 2 "
                        "GPUs it needs 9.0 GB on each"));
  EXPECT_TRUE(jobs_->live().empty());

  const Job nf4 = Create({{"model", "llama-3.1-8b"}, {"quantization", "nf4"}});
  EXPECT_EQ(nf4.spec.quantization, "nf4");
  EXPECT_THAT(ReadJobYaml(dir_, nf4), HasSubstr("quantization: nf4"));
  absl::StatusOr<Reply> got = HandleJobGet(ctx_, As("acme", {{"job_id", nf4.id}}));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got->body)["quantization"], "nf4");

  config_.scheduler.gpu_memory_gb = 80;  // 72 GB usable: bf16 fits
  const Job full = Create({{"model", "llama-3.1-8b"}});
  EXPECT_EQ(full.spec.quantization, "none");
  EXPECT_THAT(ReadJobYaml(dir_, full), HasSubstr("quantization: none"));
  got = HandleJobGet(ctx_, As("acme", {{"job_id", full.id}}));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->body->contains("quantization"));
  EXPECT_EQ(jobs_->live().size(), 2u);
}

// Llama-3.3-70B's config.json: 70,553,706,496 parameters, 141.1 GB in bf16;
// sharded over 8 GPUs 17.6 GB each + 3.8 GB gathered at once.
constexpr char kLlama70BConfig[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 8192, "intermediate_size": 28672,
  "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";

// On a node of eight 80 GB GPUs, a 70B's bf16 base does not fit on one GPU:
// a job of 8 GPUs is refused, and the message says what shard_base over them
// would need; with shard_base the job is accepted, the trainer's config says
// so and the job object keeps it. shard_base with nf4 is accepted too.
TEST_F(HandlersTest, AShardedBaseIsCheckedOverTheJobsGpus) {
  fs::create_directories(dir_ + "/llama-70b");
  std::ofstream(dir_ + "/llama-70b/config.json") << kLlama70BConfig;
  config_.models["llama-3.3-70b"] = dir_ + "/llama-70b";
  config_.scheduler.gpus = {0, 1, 2, 3, 4, 5, 6, 7};
  config_.scheduler.gpu_memory_gb = 80;
  const json bf16 = {
      {"model", "llama-3.3-70b"}, {"training_file", "data/train.jsonl"}, {"gpus", 8}};
  absl::Status refused = HandleJobCreate(ctx_, As("acme", bf16)).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(refused), "quantization");  // nf4 (39.5 GB) would fit too
  EXPECT_THAT(refused.message(),
              HasSubstr("needs 141.1 GB for its frozen base in bf16 alone (2 B x "
                        "70,553,706,496)"));
  EXPECT_THAT(refused.message(),
              HasSubstr("; with shard_base over the job's 8 GPUs it needs 19.6 GB on each"));
  EXPECT_TRUE(jobs_->live().empty());

  const Job sharded = Create({{"model", "llama-3.3-70b"}, {"gpus", 8}, {"shard_base", true}});
  EXPECT_TRUE(sharded.spec.shard_base);
  EXPECT_THAT(ReadJobYaml(dir_, sharded), HasSubstr("shard_base: true"));
  absl::StatusOr<Reply> got = HandleJobGet(ctx_, As("acme", {{"job_id", sharded.id}}));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got->body)["shard_base"], true);
  const Job whole = Create({{"model", "tiny"}});
  EXPECT_FALSE(whole.spec.shard_base);
  EXPECT_THAT(ReadJobYaml(dir_, whole), HasSubstr("shard_base: false"));
  got = HandleJobGet(ctx_, As("acme", {{"job_id", whole.id}}));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->body->contains("shard_base"));
  const Job both = Create(
      {{"model", "llama-3.3-70b"}, {"gpus", 8}, {"shard_base", true}, {"quantization", "nf4"}});
  EXPECT_THAT(ReadJobYaml(dir_, both), HasSubstr("shard_base: true"));
  EXPECT_THAT(ReadJobYaml(dir_, both), HasSubstr("quantization: nf4"));
  EXPECT_EQ(jobs_->live().size(), 3u);
}

// A checkpoint stored in bitsandbytes 4-bit whose rows do not end on a block
// of 64 cannot be sharded: shard_base over more than one GPU is refused at
// job.create even when the GPUs' memory is unknown; with one GPU it has no
// effect and is accepted. (Rows that end on blocks are sharded as stored:
// base_memory_test.)
TEST_F(HandlersTest, ACheckpointStoredIn4BitWithOddRowsIsNotSharded) {
  fs::create_directories(dir_ + "/llama-8b-bnb");
  std::ofstream(dir_ + "/llama-8b-bnb/config.json") << R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14340,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true,
                            "bnb_4bit_quant_type": "nf4"}})";
  config_.models["llama-3.1-8b-bnb"] = dir_ + "/llama-8b-bnb";
  config_.scheduler.gpus = {0, 1};
  absl::Status s = HandleJobCreate(ctx_, As("acme", {{"model", "llama-3.1-8b-bnb"},
                                                     {"training_file", "data/train.jsonl"},
                                                     {"gpus", 2},
                                                     {"shard_base", true}}))
                       .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(s), "shard_base");
  EXPECT_THAT(s.message(), HasSubstr("is stored in bitsandbytes 4-bit (nf4) with rows that do "
                                     "not end on a block of 64 weights"));
  Create({{"model", "llama-3.1-8b-bnb"}, {"shard_base", true}});
  Create({{"model", "llama-3.1-8b-bnb"}, {"gpus", 2}});
  EXPECT_EQ(jobs_->live().size(), 2u);
}

// The check runs only where it can: not when the GPUs' memory is unknown,
// not on a CPU node, not when the model's config.json cannot be read (the
// trainer reports that).
TEST_F(HandlersTest, TheMemoryCheckSkipsWhatItCannotKnow) {
  fs::create_directories(dir_ + "/llama-8b");
  std::ofstream(dir_ + "/llama-8b/config.json") << kLlama8BConfig;
  config_.models["llama-3.1-8b"] = dir_ + "/llama-8b";
  config_.scheduler.gpus = {0};
  Create({{"model", "llama-3.1-8b"}});  // gpu_memory_gb 0: unknown
  config_.scheduler.gpu_memory_gb = 16;
  Create({{"model", "tiny"}});  // no config.json in its directory
  std::ofstream(dir_ + "/llama-8b/config.json") << "{\"vocab_size\": ";
  Create({{"model", "llama-3.1-8b"}});  // malformed
  std::ofstream(dir_ + "/llama-8b/config.json") << kLlama8BConfig;
  config_.scheduler.gpus.clear();
  config_.scheduler.cpu_slots = 1;
  Create({{"model", "llama-3.1-8b"}});  // a CPU node
  EXPECT_EQ(jobs_->live().size(), 4u);
  // A value other than none or nf4 never gets that far.
  absl::Status bad = HandleJobCreate(ctx_, As("acme", {{"model", "tiny"},
                                                       {"training_file", "data/train.jsonl"},
                                                       {"quantization", "int4"}}))
                         .status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(bad), "quantization");
  EXPECT_THAT(bad.message(), HasSubstr("quantization must be none or nf4, got 'int4'"));
}

// The held-out answer accuracy of an eval event (the base model's, at step
// 0) becomes the job's metric; the done event's (after training) replaces
// it. The events keep both.
TEST_F(HandlersTest, HeldoutAccuracyBeforeAndAfterTrainingReachTheJob) {
  config_.worker.validate = false;
  config_.scheduler.cpu_slots = 2;  // both jobs run
  const Job job = Create();
  runner_->Reconcile(false, true);
  auto report = [&](const std::string& text) {
    WorkerUpdate u;
    u.kind = WorkerUpdate::Kind::kEvent;
    u.job_id = job.id;
    u.json = text;
    u.message = protocol::DecodeWorkerMessage(text);
    ASSERT_TRUE(u.message.ok()) << u.message.status();
    runner_->OnUpdates({u}, /*stopping=*/false);
  };
  auto metric = [&](const char* name) { return jobs_->Load(job.id)->metrics.value(name, -2.0); };
  report(
      R"({"eval_loss":3.2,"eval_token_accuracy":0.5,"heldout_accuracy":0.05,"step":0,"total_steps":8,"type":"eval"})");
  EXPECT_DOUBLE_EQ(metric("heldout_accuracy"), 0.05);
  EXPECT_DOUBLE_EQ(metric("eval_loss"), 3.2);
  report(R"({"eval_loss":1.5,"eval_token_accuracy":0.8,"step":4,"total_steps":8,"type":"eval"})");
  EXPECT_DOUBLE_EQ(metric("heldout_accuracy"), 0.05);  // not measured then: kept
  EXPECT_DOUBLE_EQ(metric("eval_loss"), 1.5);
  report(
      R"({"adapter":"/a","eval_loss":0.5,"heldout_accuracy":0.9,"step":8,"total_steps":8,"type":"done"})");
  EXPECT_DOUBLE_EQ(metric("heldout_accuracy"), 0.9);
  // A job without validation data: the step-0 eval has only the held-out accuracy.
  const Job other = Create();
  runner_->Reconcile(false, true);
  WorkerUpdate u;
  u.kind = WorkerUpdate::Kind::kEvent;
  u.job_id = other.id;
  u.message = protocol::DecodeWorkerMessage(
      R"({"heldout_accuracy":0.0,"step":0,"total_steps":8,"type":"eval"})");
  runner_->OnUpdates({u}, false);
  EXPECT_DOUBLE_EQ(jobs_->Load(other.id)->metrics.value("heldout_accuracy", -2.0), 0.0);
  EXPECT_FALSE(jobs_->Load(other.id)->metrics.contains("eval_loss"));

  jobs_->FlushDirty();
  absl::StatusOr<std::vector<protocol::JobEvent>> events = store_->ListEvents(job.id, 0, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<double> heldout;
  for (const protocol::JobEvent& e : *events) {
    if (e.data.contains("heldout_accuracy"))
      heldout.push_back(e.data["heldout_accuracy"].get<double>());
  }
  EXPECT_THAT(heldout, ::testing::ElementsAre(0.05, 0.9));
}

// A live job's held-out file cannot be deleted, like its training and
// validation files.
TEST_F(HandlersTest, FileDeleteSparesALiveJobsHeldoutFile) {
  fs::create_directories(dir_ + "/storage/acme/files");
  std::ofstream(dir_ + "/storage/acme/files/file-h") << "{\"prompt\": \"a?\", \"answer\": \"b\"}\n";
  ASSERT_TRUE(store_
                  ->AddFile("acme",
                            protocol::FileInfo{"file-h", "h.jsonl", 33, "ab", 1, "files/file-h"},
                            "upl-h")
                  .ok());
  for (const std::string ref : {"file-h", "files/file-h"}) {
    const Job job = Create({{"heldout_file", ref}});
    absl::Status busy = HandleFileDelete(ctx_, As("acme", {{"file_id", "file-h"}})).status();
    EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition) << busy;
    EXPECT_EQ(protocol::ParamOf(busy), "file_id");
    EXPECT_THAT(busy.message(), HasSubstr("file file-h is the heldout_file of job " + job.id +
                                          ", which is validating"));
    ASSERT_TRUE(HandleJobCancel(ctx_, As("acme", {{"job_id", job.id}})).ok());
  }
  EXPECT_TRUE(HandleFileDelete(ctx_, As("acme", {{"file_id", "file-h"}})).ok());
}

// An evaluation job: its candidates, datasets and judge resolved (errors
// naming the field), its job file written, what it needs kept while it is
// live, its report verified before it succeeds and served by report.files.
TEST_F(HandlersTest, EvaluationJobsCompareSucceededFineTunes) {
  config_.worker.validate = false;
  std::ofstream(dir_ + "/storage/acme/data/qa.jsonl")
      << "{\"prompt\": \"a?\", \"answer\": \"b\"}\n";
  auto exit_with = [&](const std::string& id, int code) {
    workers_.running.erase(id);
    WorkerUpdate exited;
    exited.kind = WorkerUpdate::Kind::kExited;
    exited.job_id = id;
    exited.exit = WorkerExit{code, 0};
    runner_->OnUpdates({exited}, /*stopping=*/false);
  };
  // A fine-tune that succeeds with a (minimal, valid) PEFT adapter.
  const Job ft = Create();
  runner_->Reconcile(false, true);
  const std::string ft_dir = storage_->JobDir("acme", ft.id);
  json eval_body = {{"type", "evaluation"},
                    {"model", "tiny"},
                    {"candidates", {{{"name", "base"}}, {{"name", "ft"}, {"job", ft.id}}}},
                    {"datasets", {"data/qa.jsonl"}},
                    {"evaluation", {{"samples", 2}, {"judge", "tiny"}}}};
  absl::Status running = HandleJobCreate(ctx_, As("acme", eval_body)).status();
  EXPECT_EQ(running.code(), absl::StatusCode::kFailedPrecondition) << running;
  EXPECT_EQ(protocol::ParamOf(running), "candidates[1].job");
  EXPECT_THAT(running.message(), HasSubstr("only a succeeded job has an adapter"));
  fs::create_directories(ft_dir + "/adapter");
  std::ofstream(ft_dir + "/adapter/adapter_config.json") << R"({"peft_type": "LORA"})";
  std::ofstream(ft_dir + "/adapter/adapter_model.safetensors", std::ios::binary)
      << std::string("\x02\0\0\0\0\0\0\0{}", 10);
  exit_with(ft.id, 0);
  ASSERT_EQ(jobs_->Load(ft.id)->status, JobStatus::kSucceeded);

  // Refused, naming the field.
  for (const auto& [patch, param] : std::vector<std::pair<json, std::string>>{
           {{{"candidates", {{{"name", "x"}, {"job", "job-nope"}}}}}, "candidates[0].job"},
           {{{"datasets", {"data/missing.jsonl"}}}, "datasets[0]"},
           {{{"evaluation", {{"judge", "huge"}}}}, "evaluation.judge"},
           {{{"candidates", {{{"name", "x"}, {"model", "huge"}}}}}, "candidates[0].model"},
           {{{"training_file", "data/train.jsonl"}}, "training_file"},
           {{{"gpus", 2}}, "gpus"},
           {{{"candidates", {{{"name", "a"}}, {{"name", "a"}}}}}, "candidates[1].name"},
           {{{"candidates", {{{"name", "u"}, {"adapter_config", "data/qa.jsonl"}}}}},
            "candidates[0].adapter_model"},
           {{{"evaluation", {{"metrics", {"bleu"}}}}}, "evaluation.metrics"}}) {
    json body = eval_body;
    body.update(patch);
    absl::Status s = HandleJobCreate(ctx_, As("acme", body)).status();
    EXPECT_FALSE(s.ok()) << patch;
    EXPECT_EQ(protocol::ParamOf(s), param) << s;
  }

  absl::StatusOr<Reply> created = HandleJobCreate(ctx_, As("acme", eval_body));
  ASSERT_TRUE(created.ok()) << created.status();
  const json& obj = *created->body;
  EXPECT_EQ(obj["type"], "evaluation");
  EXPECT_EQ(obj["training_file"], nullptr);
  EXPECT_FALSE(obj.contains("hyperparameters"));
  EXPECT_EQ(obj["evaluation"]["samples"], 2);
  EXPECT_EQ(obj["evaluation"]["max_new_tokens"], 64);  // defaults filled in
  const std::string id = obj["id"];
  const std::string dir = storage_->JobDir("acme", id);
  std::ifstream in(dir + "/job.yaml");
  const std::string yaml((std::istreambuf_iterator<char>(in)), {});
  EXPECT_THAT(yaml, HasSubstr("evaluation:"));
  EXPECT_THAT(yaml, HasSubstr(ft_dir + "/adapter"));
  EXPECT_THAT(yaml, HasSubstr(dir_ + "/storage/acme/data/qa.jsonl"));
  EXPECT_THAT(yaml, HasSubstr("judge: \"" + dir_ + "/model\""));

  // What it needs stays while it is live.
  absl::Status del = HandleJobDelete(ctx_, As("acme", {{"job_id", ft.id}})).status();
  EXPECT_EQ(del.code(), absl::StatusCode::kFailedPrecondition) << del;
  EXPECT_THAT(del.message(), HasSubstr("candidate 'ft' of evaluation " + id));
  // Results are typed: an adapter for a fine-tune, a report for an evaluation.
  EXPECT_EQ(HandleReportFiles(ctx_, As("acme", {{"job_id", ft.id}})).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(HandleAdapterFiles(ctx_, As("acme", {{"job_id", id}})).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Exit 0 without a report: requeued; with one: succeeded, served.
  runner_->Reconcile(false, true);
  ASSERT_EQ(jobs_->Load(id)->status, JobStatus::kRunning);
  exit_with(id, 0);
  EXPECT_EQ(jobs_->Load(id)->status, JobStatus::kRequeued);
  EXPECT_THAT(jobs_->Load(id)->error->message, HasSubstr("its report is unusable"));
  runner_->Reconcile(false, true);
  ASSERT_EQ(jobs_->Load(id)->status, JobStatus::kRunning);
  fs::create_directories(dir + "/report");
  std::ofstream(dir + "/report/report.json")
      << R"({"schema": "fjord.evaluation/1", "datasets": []})";
  exit_with(id, 0);
  const Job done = *jobs_->Load(id);
  EXPECT_EQ(done.status, JobStatus::kSucceeded);
  EXPECT_EQ(protocol::JobToJson(done)["result_report"]["path"], dir + "/report");
  absl::StatusOr<Reply> files = HandleReportFiles(ctx_, As("acme", {{"job_id", id}}));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ((*files->body)["files"][0]["name"], "report.json");
  EXPECT_TRUE(HandleJobDelete(ctx_, As("acme", {{"job_id", ft.id}})).ok());
}

// A preference-tuning job: method and settings reach fjord-train's config,
// what does not go with them is refused by name, and the worker's TRL-named
// metrics reach the job.
TEST_F(HandlersTest, PreferenceJobsCarryTheirMethodToTheTrainer) {
  config_.worker.validate = false;
  const Job job =
      Create({{"method", "dpo"}, {"preference", {{"beta", 0.2}, {"loss_type", "ipo"}}}});
  const json obj = protocol::JobToJson(job);
  EXPECT_EQ(obj["method"], "dpo");
  EXPECT_EQ(obj["preference"]["beta"], 0.2);
  EXPECT_EQ(obj["preference"]["simpo_gamma"], 0.5);  // defaults filled in
  std::ifstream in(storage_->JobDir("acme", job.id) + "/job.yaml");
  const std::string yaml((std::istreambuf_iterator<char>(in)), {});
  EXPECT_THAT(yaml, HasSubstr("method: dpo"));
  EXPECT_THAT(yaml, HasSubstr("loss_type: ipo"));
  EXPECT_FALSE(protocol::JobToJson(Create()).contains("method"));  // sft: as before
  for (const auto& [patch, param] : std::vector<std::pair<json, std::string>>{
           {{{"method", "ppo"}}, "method"},
           {{{"preference", {{"beta", 0.1}}}}, "preference"},
           {{{"method", "dpo"}, {"preference", {{"beta", 0}}}}, "preference.beta"},
           {{{"method", "dpo"}, {"preference", {{"loss_type", "exo"}}}}, "preference.loss_type"},
           {{{"method", "dpo"}, {"preference", {{"label_smoothing", 0.5}}}},
            "preference.label_smoothing"},
           {{{"method", "orpo"}, {"heldout_file", "data/train.jsonl"}}, "heldout_file"}}) {
    json body = {{"model", "tiny"}, {"training_file", "data/train.jsonl"}};
    body.update(patch);
    absl::Status s = HandleJobCreate(ctx_, As("acme", body)).status();
    EXPECT_FALSE(s.ok()) << patch;
    EXPECT_EQ(protocol::ParamOf(s), param) << s;
  }
  runner_->Reconcile(false, true);
  WorkerUpdate u;
  u.kind = WorkerUpdate::Kind::kEvent;
  u.job_id = job.id;
  u.message = protocol::DecodeWorkerMessage(
      R"({"loss":0.61,"rewards/accuracies":0.75,"rewards/margins":0.3,"logps/chosen":-12.5,)"
      R"("base_gather_bytes":230500000,"step":3,"total_steps":8,"type":"step","unrelated":1})");
  ASSERT_TRUE(u.message.ok());
  runner_->OnUpdates({u}, false);
  u.message = protocol::DecodeWorkerMessage(
      R"({"eval_loss":0.58,"eval_rewards/accuracies":0.8,"step":3,"total_steps":8,"type":"eval"})");
  runner_->OnUpdates({u}, false);
  const json metrics = jobs_->Load(job.id)->metrics;
  EXPECT_DOUBLE_EQ(metrics.value("rewards/accuracies", -1.0), 0.75);
  EXPECT_DOUBLE_EQ(metrics.value("logps/chosen", 0.0), -12.5);
  EXPECT_DOUBLE_EQ(metrics.value("eval_rewards/accuracies", -1.0), 0.8);
  EXPECT_DOUBLE_EQ(metrics.value("base_gather_bytes", -1.0), 230500000.0);  // a sharded base's
  EXPECT_FALSE(metrics.contains("unrelated"));
}

// file.list pages newest first and says what the area holds.
TEST_F(HandlersTest, FileListPages) {
  for (int i = 0; i < 3; ++i) {
    protocol::FileInfo f{"file-" + std::to_string(i),      "t.jsonl", 5, "ab", i,
                         "files/file-" + std::to_string(i)};
    ASSERT_TRUE(store_->AddFile("acme", f, "upl-" + std::to_string(i)).ok());
  }
  absl::StatusOr<Reply> first = HandleFileList(ctx_, As("acme", {{"limit", 2}}));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first->body)["files"].size(), 2u);
  EXPECT_EQ((*first->body)["files"][0]["id"], "file-2");
  EXPECT_TRUE((*first->body)["has_more"].get<bool>());
  absl::StatusOr<Reply> next =
      HandleFileList(ctx_, As("acme", {{"limit", 2}, {"after", "file-1"}}));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next->body)["files"].size(), 1u);
  EXPECT_FALSE((*next->body)["has_more"].get<bool>());
  EXPECT_EQ((*next->body)["quota_files"], config_.limits.max_tenant_files);
  EXPECT_EQ(protocol::ParamOf(HandleFileList(ctx_, As("acme", {{"limit", 0}})).status()), "limit");
}

// Every command of docs/protocol.md §5 has a handler.
TEST_F(HandlersTest, TheCommandTableServesEveryCommand) {
  for (const char* c : {"ping",
                        "model.list",
                        "job.create",
                        "job.get",
                        "job.list",
                        "job.cancel",
                        "job.pause",
                        "job.resume",
                        "job.events",
                        "job.subscribe",
                        "job.checkpoints",
                        "job.delete",
                        "file.upload.begin",
                        "file.upload.chunk",
                        "file.upload.finish",
                        "file.list",
                        "file.delete",
                        "adapter.files",
                        "adapter.download",
                        "report.files",
                        "report.download"}) {
    EXPECT_TRUE(CommandTable().count(c)) << c;
  }
  EXPECT_EQ(CommandTable().size(), 21u);
}

}  // namespace
}  // namespace fjord::daemon
