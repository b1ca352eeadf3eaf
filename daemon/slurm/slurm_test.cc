#include "daemon/slurm/slurm.h"

#include <csignal>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(SlurmShapeTest, RanksFillAsFewNodesAsHoldThem) {
  SlurmConfig gpu;
  gpu.gpus_per_node = 8;
  struct Row {
    int ranks, nodes, per_node, gpus;
  };
  for (const Row& r :
       {Row{1, 1, 1, 1}, Row{4, 1, 4, 4}, Row{8, 1, 8, 8}, Row{16, 2, 8, 8}, Row{64, 8, 8, 8}}) {
    absl::StatusOr<SlurmShape> s = ShapeFor(r.ranks, gpu);
    ASSERT_TRUE(s.ok()) << r.ranks;
    EXPECT_EQ(s->nodes, r.nodes) << r.ranks;
    EXPECT_EQ(s->tasks_per_node, r.per_node) << r.ranks;
    EXPECT_EQ(s->gpus_per_node, r.gpus) << r.ranks;
  }
  absl::StatusOr<SlurmShape> odd = ShapeFor(12, gpu);
  ASSERT_FALSE(odd.ok());
  EXPECT_THAT(odd.status().message(), HasSubstr("12 ranks do not fill whole nodes of 8 GPUs"));

  SlurmConfig cpu;  // a CPU cluster: ranks_per_node ranks, no GPUs asked for
  cpu.ranks_per_node = 2;
  absl::StatusOr<SlurmShape> two = ShapeFor(2, cpu);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->nodes, 1);
  EXPECT_EQ(two->tasks_per_node, 2);
  EXPECT_EQ(two->gpus_per_node, 0);
  absl::StatusOr<SlurmShape> six = ShapeFor(6, cpu);
  ASSERT_TRUE(six.ok());
  EXPECT_EQ(six->nodes, 3);
}

TEST(SlurmSbatchTest, ArgumentsCarryTheShapeTheUserTheFilesAndTheOperatorsOptions) {
  SlurmConfig c;
  c.partition = "gpu";
  c.account = "acme";
  c.qos = "normal";
  c.time_limit = "2-00:00:00";
  c.cpus_per_task = 16;
  c.sbatch_args = {"--exclusive", "--constraint=h100"};
  WorkerSpec spec;
  spec.uid = 2000001;
  spec.gid = 2000001;
  spec.working_dir = "/srv/fjord/acme/jobs/job-1";
  spec.log_path = "/srv/fjord/acme/jobs/job-1/worker.log";
  const std::vector<std::string> a = SbatchArgs(c, SlurmShape{2, 8, 8}, "job-1", spec, false);
  EXPECT_EQ(a.front(), "--parsable");
  for (const char* want :
       {"--job-name=fjord-job-1", "--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8",
        "--cpus-per-task=16", "--partition=gpu", "--account=acme", "--qos=normal",
        "--time=2-00:00:00", "--uid=2000001", "--gid=2000001", "--chdir=/srv/fjord/acme/jobs/job-1",
        "--output=/srv/fjord/acme/jobs/job-1/worker.log", "--open-mode=append", "--export=NONE",
        "--requeue", "--signal=TERM@120", "--exclusive", "--constraint=h100"}) {
    EXPECT_THAT(a, Contains(want));
  }
  EXPECT_THAT(a, Not(Contains("--test-only")));
  EXPECT_EQ(SbatchArgs(c, SlurmShape{}, "job-1", spec, true).back(), "--test-only");
  // Nothing unset is passed.
  const std::vector<std::string> bare = SbatchArgs(SlurmConfig{}, SlurmShape{}, "j", {}, false);
  for (const std::string& w : bare) {
    EXPECT_FALSE(absl::StartsWith(w, "--partition") || absl::StartsWith(w, "--uid") ||
                 absl::StartsWith(w, "--gpus-per-node"))
        << w;
  }
}

TEST(SlurmScriptTest, EveryWordIsQuotedForBash) {
  EXPECT_EQ(ShellQuote("plain"), "'plain'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("$(rm -rf /) `x` \"q\" ; &&"), "'$(rm -rf /) `x` \"q\" ; &&'");
  WorkerSpec spec;
  spec.program = "/opt/fjord/bin/fjord-train";
  spec.args = {"--config", "/s/a b/job.yaml"};
  spec.env = {{"PATH", "/usr/bin:/bin"}, {"HOME", "/s/it's"}};
  const std::string s = BatchScript(spec);
  EXPECT_THAT(s, HasSubstr("export HOME='/s/it'\\''s'\n"));
  EXPECT_THAT(s, HasSubstr("exec srun --export=ALL --kill-on-bad-exit=1 "
                           "'/opt/fjord/bin/fjord-train' '--config' '/s/a b/job.yaml'\n"));
}

TEST(SlurmParseTest, SqueueLines) {
  absl::StatusOr<std::map<std::string, SlurmJobInfo>> jobs = ParseSqueue(
      "12|PENDING|Resources|\n"
      "13|RUNNING|None|node[01-02]\n"
      "\n"
      "14|CANCELLED by 0|None|(null)\n");
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 3u);
  EXPECT_EQ(jobs->at("12").state, "PENDING");
  EXPECT_EQ(jobs->at("12").reason, "Resources");
  EXPECT_EQ(jobs->at("13").nodes, "node[01-02]");
  EXPECT_EQ(jobs->at("14").state, "CANCELLED");
  EXPECT_EQ(jobs->at("14").nodes, "");
  absl::StatusOr<std::map<std::string, SlurmJobInfo>> bad = ParseSqueue("12|PENDING\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("line 1"));
}

TEST(SlurmParseTest, ScontrolOneLiner) {
  absl::StatusOr<SlurmJobInfo> info = ParseScontrolJob(
      "JobId=17 JobName=fjord-job-1 UserId=root(0) JobState=FAILED Reason=NonZeroExitCode "
      "Dependency=(null) Requeue=1 Restarts=0 ExitCode=75:0 NodeList=c1 "
      "Command=(null) WorkDir=/s/a b\n");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->id, "17");
  EXPECT_EQ(info->state, "FAILED");
  EXPECT_EQ(info->reason, "NonZeroExitCode");
  EXPECT_EQ(info->exit_code, 75);
  EXPECT_EQ(info->signal, 0);
  EXPECT_EQ(info->nodes, "c1");
  EXPECT_FALSE(ParseScontrolJob("slurm_load_jobs error: Invalid job id specified").ok());
  EXPECT_FALSE(ParseScontrolJob("JobId=1 JobState=FAILED ExitCode=x").ok());
}

TEST(SlurmStateTest, PhasesAndEnds) {
  EXPECT_EQ(PhaseOf("PENDING"), SlurmPhase::kPending);
  EXPECT_EQ(PhaseOf("REQUEUED"), SlurmPhase::kPending);
  EXPECT_EQ(PhaseOf("CONFIGURING"), SlurmPhase::kPending);
  EXPECT_EQ(PhaseOf("RUNNING"), SlurmPhase::kRunning);
  EXPECT_EQ(PhaseOf("COMPLETING"), SlurmPhase::kRunning);
  for (const char* s : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                        "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}) {
    EXPECT_EQ(PhaseOf(s), SlurmPhase::kEnded) << s;
  }
  struct Row {
    const char* state;
    int code, signal;
    bool stop_requested;
    int want_code, want_signal;
    bool final;
    const char* cause_has;
  };
  for (const Row& r : {
           Row{"COMPLETED", 0, 0, false, 0, 0, false, ""},
           Row{"FAILED", 2, 0, false, 2, 0, false, ""},
           Row{"FAILED", 75, 0, true, 75, 0, false, ""},  // paused: every rank checkpointed
           Row{"FAILED", 0, 9, false, 0, 9, false, "Slurm job 5 failed"},
           Row{"CANCELLED", 0, 15, true, -1, 15, false, "cancelled by fjordd"},
           Row{"CANCELLED", 0, 0, false, -1, SIGKILL, true, "cancelled outside fjord"},
           Row{"TIMEOUT", 0, 0, false, -1, SIGKILL, true, "time limit"},
           Row{"NODE_FAIL", 0, 0, false, -1, SIGKILL, false, "lost a node"},
           Row{"PREEMPTED", 0, 0, false, -1, SIGKILL, false, "preempted"},
       }) {
    SlurmJobInfo info;
    info.id = "5";
    info.state = r.state;
    info.exit_code = r.code;
    info.signal = r.signal;
    const SlurmEnd e = EndOf(info, r.stop_requested);
    EXPECT_EQ(e.exit.exit_code, r.want_code) << r.state;
    EXPECT_EQ(e.exit.signal, r.want_signal) << r.state;
    EXPECT_EQ(e.final, r.final) << r.state;
    if (*r.cause_has == 0)
      EXPECT_EQ(e.cause, "") << r.state;
    else
      EXPECT_THAT(e.cause, HasSubstr(r.cause_has)) << r.state;
  }
}

}  // namespace
}  // namespace fjord::daemon
