// Chaos: a real fjordd on loopback with the real fjord-train on the demo model
// (CPU, one thread, deterministic; every other job on two data-parallel
// ranks), and a bounded number of rounds in which the daemon, a worker or
// one rank of a 2-rank job is killed with SIGKILL at random moments (while a job
// is being accepted or validated, while jobs queue, while they train, while a
// checkpoint is being written), sometimes with the newest checkpoint of a job
// torn while the daemon is down, then restarted. When the rounds are over,
// every accepted job must end succeeded, exactly once (no job lost, none
// duplicated), with a final adapter byte-for-byte identical to an
// uninterrupted run of the same job, and every torn checkpoint must have been
// detected by its manifest and skipped.
//
//   FJORD_CHAOS_ROUNDS   rounds (default 20; CI runs the default)
//   FJORD_CHAOS_SEED     the seed of the random choices (default: from the
//                        clock); printed first, so a failure can be replayed
//                        (kill moments still depend on timing).
//
//   bazel test //tests/chaos:chaos_test --test_env=FJORD_CHAOS_ROUNDS=500
//       --test_timeout=7200 --test_output=streamed
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lora/job_config.h"
#include "runtime/train/checkpoint.h"
#include "tests/integration/daemon_harness.h"

namespace fjord::testing {
namespace {

using protocol::Job;
using protocol::JobStatus;
namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

constexpr int kSteps = 6;  // optimizer steps per job, a checkpoint after each

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

std::string DemoData(int n) {
  std::ifstream f("tools/demo/out/data/train.jsonl");
  std::string line, out;
  for (int i = 0; i < n && std::getline(f, line); ++i) out += line + "\n";
  return out;
}

// Pids of the processes whose parent is `parent` and whose command line
// contains `needle` (a worker of the daemon: fjord-train or `fjord-train validate`).
std::vector<pid_t> ChildrenOf(pid_t parent, const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
    const size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    const char state = stat[close + 2];
    const pid_t ppid = static_cast<pid_t>(std::atoi(stat.c_str() + close + 4));
    if (ppid != parent || state == 'Z') continue;
    std::string cmd = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
    for (char& c : cmd) c = c == '\0' ? ' ' : c;
    if (absl::StrContains(cmd, needle)) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

// The trainer processes of the daemon whose command line holds `needle`:
// its workers and their children (the ranks of a 2-rank job, which
// `fjord-train --nproc-per-node 2` starts).
std::vector<pid_t> Trainers(pid_t daemon, const std::string& needle) {
  std::vector<pid_t> out = ChildrenOf(daemon, needle);
  const size_t workers = out.size();
  for (size_t i = 0; i < workers; ++i) {
    for (pid_t rank : ChildrenOf(out[i], "--config")) out.push_back(rank);
  }
  return out;
}

bool Alive(pid_t pid) {
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

void WaitGone(const std::vector<pid_t>& pids) {
  const auto deadline = Steady::now() + std::chrono::seconds(10);
  for (pid_t p : pids) {
    while (Alive(p) && Steady::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_FALSE(Alive(p)) << "worker " << p << " outlived its daemon";
  }
}

// The writers' pids of the checkpoint temporaries (".tmp-step-NNNNNNNN-PID")
// in a job's checkpoints dir.
std::vector<pid_t> TempCheckpointWriters(const std::string& ckpt_dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(ckpt_dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, ".tmp-step-"))
      out.push_back(static_cast<pid_t>(std::atoi(name.c_str() + name.rfind('-') + 1)));
  }
  return out;
}

struct Stats {
  int daemon_kills = 0, worker_kills = 0, validator_kills = 0, create_kills = 0;
  int rank_kills = 0;            // of worker_kills: one rank of a 2-rank job (not its launcher)
  int mid_checkpoint_kills = 0;  // a .tmp-step-* directory was there right after the kill
  int torn = 0;
  std::map<std::string, int> statuses_at_kill;  // job status -> kills that found a job in it
};

class Chaos {
 public:
  Chaos(DaemonHarness& h, uint64_t seed) : h_(h), rng_(seed) {}

  std::string JobDir(const std::string& id) const { return h_.storage() + "/acme/jobs/" + id; }

  // Jobs of seed 2 train on two data-parallel ranks (two CPU slots).
  static int RanksOf(int64_t seed) { return seed == 2 ? 2 : 1; }

  protocol::JobSpec Spec(int64_t seed) {
    protocol::JobSpec spec;
    spec.model = "tiny";
    spec.training_file = file_id_;
    spec.hyperparameters.max_steps = kSteps;
    spec.hyperparameters.batch_size = 2;
    spec.hyperparameters.max_length = 128;
    spec.hyperparameters.learning_rate = 2e-3;
    spec.hyperparameters.checkpoint_every_steps = 1;
    spec.hyperparameters.seed = seed;
    spec.gpus = RanksOf(seed);
    spec.lora.r = 4;
    spec.max_restarts = 100;
    return spec;
  }

  void Upload() {
    auto c = h_.Acme();
    absl::StatusOr<protocol::FileInfo> f = c->UploadBytes(DemoData(32), "train.jsonl");
    ASSERT_TRUE(f.ok()) << f.status();
    file_id_ = f->id;
  }

  // Submits a job (seed 1 or 2); records it as accepted.
  void Submit() {
    const int64_t seed = 1 + static_cast<int64_t>(jobs_.size() % 2);
    auto c = h_.Connect(h_.acme_keys(), 20000, 2);
    protocol::JobSpec spec = Spec(seed);
    spec.idempotency_key = absl::StrCat("chaos-", jobs_.size());
    absl::StatusOr<Job> j = c->CreateJob(spec);
    ASSERT_TRUE(j.ok()) << j.status();
    Accept(spec.idempotency_key, j->id, seed);
  }

  void Accept(const std::string& key, const std::string& id, int64_t seed) {
    for (const auto& [k, known] : jobs_) {
      if (k == key) {
        ASSERT_EQ(known.first, id) << "idempotency key " << key << " gave two jobs";
        return;
      }
    }
    jobs_.emplace_back(key, std::make_pair(id, seed));
  }

  // The last known status of every job (one job.get each; a failure to get
  // one is a lost job).
  std::map<std::string, Job> Poll() {
    std::map<std::string, Job> out;
    auto c = h_.Connect(h_.acme_keys(), 10000, 2);
    for (const auto& [key, j] : jobs_) {
      absl::StatusOr<Job> got = c->GetJob(j.first);
      EXPECT_TRUE(got.ok()) << "accepted job " << j.first << " is gone: " << got.status();
      if (got.ok()) out[j.first] = *got;
    }
    return out;
  }

  void NoteStatuses() {
    for (const auto& [id, j] : Poll()) {
      if (!protocol::IsFinal(j.status))
        stats_.statuses_at_kill[std::string(protocol::JobStatusName(j.status))]++;
    }
  }

  // True when one of `pids` has a checkpoint in the making (its temporary
  // directory is there); checked right after killing them, it means the
  // kill hit the checkpoint write.
  bool WritingCheckpoint(const std::vector<pid_t>& pids) {
    for (const auto& [key, j] : jobs_) {
      for (pid_t w : TempCheckpointWriters(JobDir(j.first) + "/checkpoints")) {
        if (std::find(pids.begin(), pids.end(), w) != pids.end()) return true;
      }
    }
    return false;
  }

  // Waits up to `ms` for a trainer of the daemon to be writing a checkpoint.
  bool AwaitCheckpointWrite(int ms) {
    const auto deadline = Steady::now() + std::chrono::milliseconds(ms);
    while (Steady::now() < deadline) {
      if (WritingCheckpoint(Trainers(h_.daemon_pid(), "--report"))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }

  void KillDaemon() {
    const std::vector<pid_t> workers = Trainers(h_.daemon_pid(), "fjord-train");
    ::kill(h_.daemon_pid(), SIGKILL);
    ASSERT_NO_FATAL_FAILURE(h_.Kill9());
    // Workers die with the daemon, ranks with their launcher
    // (PR_SET_PDEATHSIG both): none may keep writing.
    ASSERT_NO_FATAL_FAILURE(WaitGone(workers));
    stats_.daemon_kills++;
    stats_.mid_checkpoint_kills += WritingCheckpoint(workers);
  }

  // SIGKILL to a trainer (or validator) of the running daemon; false when none runs.
  bool KillWorker(bool validator) {
    // A trainer is a worker or one rank of a 2-rank job's worker.
    std::vector<pid_t> pids = validator ? ChildrenOf(h_.daemon_pid(), "fjord-train validate")
                                        : Trainers(h_.daemon_pid(), "--report");
    if (pids.empty()) return false;
    const pid_t victim = pids[std::uniform_int_distribution<size_t>(0, pids.size() - 1)(rng_)];
    const std::vector<pid_t> direct = ChildrenOf(h_.daemon_pid(), "fjord-train");
    stats_.rank_kills += std::find(direct.begin(), direct.end(), victim) == direct.end();
    ::kill(victim, SIGKILL);
    WaitGone({victim});
    stats_.mid_checkpoint_kills += !validator && WritingCheckpoint({victim});
    (validator ? stats_.validator_kills : stats_.worker_kills)++;
    return true;
  }

  // While the daemon is down: tears the newest checkpoint of a job that has
  // not finished (truncates, flips a byte in, or deletes a file of it).
  void MaybeTear(bool always) {
    if (!always && std::uniform_int_distribution<int>(0, 2)(rng_) != 0) return;
    std::vector<std::string> candidates;
    for (const auto& [key, j] : jobs_) {
      if (!fs::exists(JobDir(j.first) + "/adapter") &&
          !train::ListCheckpoints(JobDir(j.first) + "/checkpoints").empty()) {
        candidates.push_back(j.first);
      }
    }
    if (candidates.empty()) return;
    const std::string id =
        candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng_)];
    const train::FoundCheckpoint newest =
        train::ListCheckpoints(JobDir(id) + "/checkpoints").back();
    if (!train::VerifyCheckpoint(newest.dir).ok()) return;  // already torn
    const std::vector<std::string> files = {"adapter/adapter_model.safetensors",
                                            "training_state.safetensors", "trainer_state.json",
                                            "MANIFEST.json", "adapter/adapter_config.json"};
    const std::string victim =
        newest.dir + "/" + files[std::uniform_int_distribution<size_t>(0, files.size() - 1)(rng_)];
    const int how = std::uniform_int_distribution<int>(0, 2)(rng_);
    const uint64_t size = fs::file_size(victim);
    if (how == 0) {
      fs::resize_file(victim, size / 2);
    } else if (how == 1) {
      std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
      const std::streamoff at =
          static_cast<std::streamoff>(std::uniform_int_distribution<uint64_t>(0, size - 1)(rng_));
      f.seekg(at);
      char c = 0;
      f.get(c);
      f.seekp(at);
      f.put(static_cast<char>(c ^ 0x5a));
    } else {
      fs::remove(victim);
    }
    ASSERT_EQ(train::VerifyCheckpoint(newest.dir).code(), absl::StatusCode::kDataLoss)
        << newest.dir;
    torn_[id].push_back(newest.dir);
    stats_.torn++;
  }

  // A job.create in flight when the daemon dies: the retry with the same
  // idempotency key after the restart gives the one job (or the first reply's).
  void KillDuringCreate() {
    const int64_t seed = 1 + static_cast<int64_t>(jobs_.size() % 2);
    protocol::JobSpec spec = Spec(seed);
    spec.idempotency_key = absl::StrCat("chaos-", jobs_.size());
    std::string first_id;
    std::thread t([&] {
      auto c = h_.Connect(h_.acme_keys(), 3000, 0);
      absl::StatusOr<Job> j = c->CreateJob(spec);
      if (j.ok()) first_id = j->id;
    });
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 40)(rng_)));
    ASSERT_NO_FATAL_FAILURE(KillDaemon());
    t.join();
    stats_.create_kills++;
    ASSERT_NO_FATAL_FAILURE(h_.Start());
    auto c = h_.Connect(h_.acme_keys(), 20000, 2);
    absl::StatusOr<Job> j = c->CreateJob(spec);
    ASSERT_TRUE(j.ok()) << j.status();
    if (!first_id.empty()) {
      ASSERT_EQ(j->id, first_id) << "a retried job.create made a second job";
    }
    Accept(spec.idempotency_key, j->id, seed);
  }

  void Round(int round) {
    if (round % 3 == 0) {
      ASSERT_NO_FATAL_FAILURE(Submit());
    }
    const int action = std::uniform_int_distribution<int>(0, 6)(rng_);
    const int delay_ms = std::uniform_int_distribution<int>(0, 1500)(rng_);
    std::printf("round %d: action %d after %d ms\n", round, action, delay_ms);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    NoteStatuses();
    switch (action) {
      case 0:  // the daemon, at a random moment
        ASSERT_NO_FATAL_FAILURE(KillDaemon());
        break;
      case 1:  // the daemon, while a checkpoint is being written
        AwaitCheckpointWrite(3000);
        ASSERT_NO_FATAL_FAILURE(KillDaemon());
        break;
      case 2:  // a trainer, at a random moment
        if (KillWorker(false)) return;
        ASSERT_NO_FATAL_FAILURE(KillDaemon());
        break;
      case 3:  // a trainer, while it writes a checkpoint
        if (AwaitCheckpointWrite(3000) && KillWorker(false)) return;
        ASSERT_NO_FATAL_FAILURE(KillDaemon());
        break;
      case 4:  // a validator, else the daemon
        if (KillWorker(true)) return;
        ASSERT_NO_FATAL_FAILURE(KillDaemon());
        break;
      case 5:  // the daemon while a job.create is in flight
        ASSERT_NO_FATAL_FAILURE(KillDuringCreate());
        return;
      case 6:  // the daemon while a checkpoint is being written, then tear the newest one
        AwaitCheckpointWrite(3000);
        ASSERT_NO_FATAL_FAILURE(KillDaemon());
        ASSERT_NO_FATAL_FAILURE(MaybeTear(/*always=*/true));
        ASSERT_NO_FATAL_FAILURE(h_.Start());
        return;
    }
    ASSERT_NO_FATAL_FAILURE(MaybeTear(/*always=*/false));
    ASSERT_NO_FATAL_FAILURE(h_.Start());
  }

  // Runs fjord-train once, uninterrupted, on the job.yaml the daemon wrote
  // for `job_id`, into its own output directory; returns that directory.
  std::string ReferenceRun(const std::string& job_id, const std::vector<std::string>& worker_args) {
    absl::StatusOr<lora::JobConfig> cfg = lora::LoadJobConfig(JobDir(job_id) + "/job.yaml");
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    if (!cfg.ok()) return "";
    const std::string out = absl::StrCat(h_.dir(), "/reference-", job_id);
    cfg->output.dir = out;
    std::ofstream(out + ".yaml") << cfg->ToYaml();
    daemon::WorkerSpec spec;
    spec.program = fs::absolute("lora/cli/fjord-train").string();
    spec.args = {"--config", out + ".yaml", "--progress", "none"};
    spec.args.insert(spec.args.end(), worker_args.begin(), worker_args.end());
    spec.env = {{"PATH", "/usr/bin:/bin"}};
    spec.log_path = out + ".log";
    absl::StatusOr<std::unique_ptr<daemon::WorkerProcess>> p = daemon::WorkerProcess::Start(spec);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return "";
    std::optional<daemon::WorkerExit> e = (*p)->Wait(300000);
    EXPECT_TRUE(e.has_value() && e->normal() && e->exit_code == 0)
        << (e ? e->Describe() : "timeout") << "\n"
        << ReadFile(out + ".log");
    return out + "/adapter";
  }

  const std::vector<std::pair<std::string, std::pair<std::string, int64_t>>>& jobs() const {
    return jobs_;
  }
  const std::map<std::string, std::vector<std::string>>& torn() const { return torn_; }
  const Stats& stats() const { return stats_; }

 private:
  DaemonHarness& h_;
  std::mt19937_64 rng_;
  std::string file_id_;
  // (idempotency key, (job id, training seed)), in submission order.
  std::vector<std::pair<std::string, std::pair<std::string, int64_t>>> jobs_;
  std::map<std::string, std::vector<std::string>> torn_;  // job id -> torn checkpoint dirs
  Stats stats_;
};

TEST(ChaosTest, KilledDaemonsAndWorkersLoseNothingAndChangeNoAdapter) {
  const int64_t rounds = EnvInt("FJORD_CHAOS_ROUNDS", 20);
  const uint64_t seed = static_cast<uint64_t>(
      EnvInt("FJORD_CHAOS_SEED",
             std::chrono::system_clock::now().time_since_epoch().count() % 1000000007));
  std::printf("chaos: %lld rounds, seed %llu (replay: FJORD_CHAOS_SEED=%llu)\n",
              static_cast<long long>(rounds), static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  RecordProperty("chaos_seed", std::to_string(seed));
  const auto started = Steady::now();

  const std::vector<std::string> worker_args = {"--set", "training.device=cpu", "--set",
                                                "training.threads=1"};
  HarnessOptions o;
  o.worker_program = fs::absolute("lora/cli/fjord-train").string();
  o.model_dir = fs::absolute("tools/demo/out/model").string();
  o.worker_extra =
      "  args: [\"--set\", \"training.device=cpu\", \"--set\", \"training.threads=1\"]\n";
  o.heartbeat_timeout_s = 60;  // kills come from the test, not from a loaded CI machine
  o.max_restarts = 100;
  o.validation_timeout_s = 120;
  o.cpu_slots = 2;  // a 2-rank job takes both; 1-rank jobs run two at a time
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  Chaos chaos(h, seed);
  ASSERT_NO_FATAL_FAILURE(chaos.Upload());
  ASSERT_NO_FATAL_FAILURE(chaos.Submit());
  for (int r = 0; r < rounds; ++r) {
    ASSERT_NO_FATAL_FAILURE(chaos.Round(r)) << "round " << r << " (seed " << seed << ")\n"
                                            << h.log();
  }
  // Some torn checkpoints may belong to jobs already done in the store: those
  // never run again, so nothing reads them.
  std::map<std::string, Job> before_finish = chaos.Poll();

  // No more chaos: every accepted job ends succeeded.
  auto acme = h.Connect(h.acme_keys(), 20000, 2);
  std::map<int64_t, std::string> first_of_seed;
  for (const auto& [key, j] : chaos.jobs()) {
    absl::StatusOr<Job> done = h.WaitForFinal(*acme, j.first, 900);
    ASSERT_TRUE(done.ok()) << done.status() << "\n"
                           << ReadFile(chaos.JobDir(j.first) + "/worker.log");
    EXPECT_EQ(done->status, JobStatus::kSucceeded)
        << j.first << ": " << (done->error ? done->error->message : "") << "\n"
        << ReadFile(chaos.JobDir(j.first) + "/worker.log");
    EXPECT_EQ(done->step, kSteps);
    if (!first_of_seed.count(j.second)) first_of_seed[j.second] = j.first;
  }
  // Exactly the accepted jobs: none lost, none made twice.
  ListJobsOptions lo;
  lo.limit = 100;
  absl::StatusOr<JobPage> page = acme->ListJobs(lo);
  ASSERT_TRUE(page.ok()) << page.status();
  std::set<std::string> listed, accepted;
  for (const Job& j : page->jobs) listed.insert(j.id);
  for (const auto& [key, j] : chaos.jobs()) accepted.insert(j.first);
  EXPECT_EQ(listed, accepted);

  // Every torn checkpoint was detected by its manifest and skipped.
  for (const auto& [id, dirs] : chaos.torn()) {
    auto it = before_finish.find(id);
    const bool ran_again = it == before_finish.end() || it->second.status != JobStatus::kSucceeded;
    if (!ran_again) continue;
    absl::StatusOr<EventPage> events = acme->ListEvents(id, 0, 1000);
    ASSERT_TRUE(events.ok());
    // The worker's warning, as an event or in its log (an event can die
    // with a daemon killed right after the worker sent it).
    const std::string worker_log = ReadFile(chaos.JobDir(id) + "/worker.log");
    for (const std::string& dir : dirs) {
      const std::string warning = "skipping invalid checkpoint " + dir;
      bool skipped = absl::StrContains(worker_log, warning);
      for (const auto& e : events->events)
        skipped |= e.type == "log" && absl::StrContains(e.message, warning);
      EXPECT_TRUE(skipped) << id << ": the torn checkpoint " << dir
                           << " was not reported as skipped";
    }
  }

  // Adapters identical to an uninterrupted run of the same job.
  std::map<int64_t, std::string> reference;
  for (const auto& [s, id] : first_of_seed) {
    std::vector<std::string> args = worker_args;
    if (Chaos::RanksOf(s) > 1) {
      args.insert(args.end(), {"--nproc-per-node", std::to_string(Chaos::RanksOf(s))});
    }
    reference[s] = chaos.ReferenceRun(id, args);
  }
  int restarts = 0;
  for (const auto& [key, j] : chaos.jobs()) {
    absl::StatusOr<Job> done = acme->GetJob(j.first);
    ASSERT_TRUE(done.ok());
    restarts += done->restarts;
    for (const char* f : {"adapter_model.safetensors", "adapter_config.json"}) {
      const std::string got = ReadFile(done->result_adapter_path + "/" + f);
      const std::string want = ReadFile(reference[j.second] + "/" + f);
      ASSERT_FALSE(want.empty()) << reference[j.second] << "/" << f;
      EXPECT_TRUE(got == want) << j.first << " (restarted " << done->restarts << " times): " << f
                               << " differs from the uninterrupted run";
    }
  }

  const Stats& s = chaos.stats();
  std::printf(
      "chaos: %lld rounds, seed %llu, %zu jobs, %d restarts in all, %.0f s\n"
      "  kills: daemon %d (during job.create %d), trainer %d (one rank of a 2-rank job %d), "
      "validator %d; mid-checkpoint %d\n"
      "  torn checkpoints: %d\n  jobs by status at the kills (summed):",
      static_cast<long long>(rounds), static_cast<unsigned long long>(seed), chaos.jobs().size(),
      restarts, std::chrono::duration<double>(Steady::now() - started).count(), s.daemon_kills,
      s.create_kills, s.worker_kills, s.rank_kills, s.validator_kills, s.mid_checkpoint_kills,
      s.torn);
  for (const auto& [status, n] : s.statuses_at_kill) std::printf(" %s %d", status.c_str(), n);
  std::printf("\n");
  RecordProperty("jobs", static_cast<int>(chaos.jobs().size()));
  RecordProperty("restarts", restarts);
  RecordProperty("mid_checkpoint_kills", s.mid_checkpoint_kills);
  RecordProperty("torn_checkpoints", s.torn);
}

}  // namespace
}  // namespace fjord::testing
