#include "daemon/server/config.h"

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"(
state_dir: /var/lib/fjordd
storage_root: /mnt/fjord
listen: [tcp://0.0.0.0:7700]
security:
  server_secret_key_file: /etc/fjordd/server.key
  keys_file: /etc/fjordd/clients.yaml
worker:
  program: /usr/bin/fjord-train
)";

TEST(ConfigTest, MinimalAndDefaults) {
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(kMinimal, "fjordd.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->security.curve);
  EXPECT_EQ(c->worker.max_restarts, 3);
  EXPECT_EQ(c->worker.heartbeat_timeout_ms, 30000);
  EXPECT_EQ(c->limits.max_peers, 1024);
  EXPECT_EQ(c->limits.max_uploads_per_tenant, 16);
  EXPECT_EQ(c->limits.max_tenant_storage_bytes, 0u);  // no quota unless the operator sets one
  EXPECT_TRUE(c->worker.no_new_privs);
  EXPECT_FALSE(c->node_name.empty());
}

// The bounds a tenant cannot exhaust the node past (docs/security.md,
// "Limits"): their defaults, and a value out of range names file, line and
// field.
TEST(ConfigTest, ConnectionFileAndValidatorLimits) {
  absl::StatusOr<DaemonConfig> d = ParseDaemonConfig(kMinimal, "f");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->limits.max_peers_per_key, 128);
  EXPECT_EQ(d->limits.admin_reserved_peers, 16);
  EXPECT_EQ(d->limits.max_tenant_files, 100000u);
  EXPECT_EQ(d->scheduler.max_validators, 4);
  EXPECT_EQ(d->scheduler.max_validators_per_tenant, 2);
  const std::string base = kMinimal;
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(
      base +
          "limits:\n  max_peers_per_key: 8\n  admin_reserved_peers: 0\n  max_tenant_files: 0\n"
          "scheduler:\n  max_validators: 1\n  max_validators_per_tenant: 1\n",
      "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->limits.max_peers_per_key, 8);
  EXPECT_EQ(c->limits.admin_reserved_peers, 0);
  EXPECT_EQ(c->limits.max_tenant_files, 0u);  // no limit
  EXPECT_EQ(c->scheduler.max_validators, 1);
  EXPECT_THAT(ParseDaemonConfig(base + "limits:\n  max_peers_per_key: 0\n", "f").status().message(),
              HasSubstr("f:11: limits.max_peers_per_key"));
  EXPECT_THAT(ParseDaemonConfig(base + "scheduler:\n  max_validators: 0\n", "f").status().message(),
              HasSubstr("f:11: scheduler.max_validators"));
  EXPECT_THAT(
      ParseDaemonConfig(base + "limits:\n  admin_reserved_peers: -1\n", "f").status().message(),
      HasSubstr("f:11: limits.admin_reserved_peers"));
}

// scheduler.gpu_memory_gb: each GPU's memory for job.create's check of the
// frozen base (0, the default: unknown, no check).
TEST(ConfigTest, GpuMemory) {
  const std::string base = kMinimal;
  absl::StatusOr<DaemonConfig> d = ParseDaemonConfig(base, "f");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->scheduler.gpu_memory_gb, 0);
  for (const auto& [text, gb] : {std::pair{"80", 80.0}, {"79.6", 79.6}, {"0", 0.0}}) {
    absl::StatusOr<DaemonConfig> c =
        ParseDaemonConfig(base + "scheduler:\n  gpus: [0]\n  gpu_memory_gb: " + text + "\n", "f");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_DOUBLE_EQ(c->scheduler.gpu_memory_gb, gb);
  }
  for (const char* bad : {"-1", ".nan", ".inf", "2e6"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(ParseDaemonConfig(base + "scheduler:\n  gpu_memory_gb: " + bad + "\n", "f")
                    .status()
                    .message(),
                HasSubstr(absl::StrCat("f:11: scheduler.gpu_memory_gb: must be a number of GB > 0 "
                                       "(each GPU's memory; 0: unknown, no check), got '",
                                       bad, "'")));
  }
  EXPECT_THAT(
      ParseDaemonConfig(base + "scheduler:\n  gpu_memory_gb: 80GB\n", "f").status().message(),
      HasSubstr("f:11: scheduler.gpu_memory_gb: expected a number of GB, got '80GB'"));
}

TEST(ConfigTest, MetricsBearerTokenFile) {
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(
      std::string(kMinimal) + "metrics:\n  bearer_token_file: /etc/fjordd/metrics.token\n", "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics.bearer_token_file, "/etc/fjordd/metrics.token");
}

TEST(ConfigTest, QuotaUploadAndPrivilegeFields) {
  const std::string base = kMinimal;
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(
      base + "limits:\n  max_tenant_storage_bytes: 1099511627776\n  max_uploads_per_tenant: 4\n",
      "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->limits.max_tenant_storage_bytes, uint64_t{1} << 40);
  EXPECT_EQ(c->limits.max_uploads_per_tenant, 4);
  EXPECT_THAT(
      ParseDaemonConfig(base + "limits:\n  max_uploads_per_tenant: 0\n", "f").status().message(),
      HasSubstr("f:11: limits.max_uploads_per_tenant"));
  EXPECT_THAT(
      ParseDaemonConfig(base + "limits:\n  max_tenant_storage_bytes: -1\n", "f").status().message(),
      HasSubstr("f:11: limits.max_tenant_storage_bytes"));
  absl::StatusOr<DaemonConfig> off =
      ParseDaemonConfig(std::string(kMinimal).replace(std::string(kMinimal).find("  program:"), 0,
                                                      "  no_new_privs: false\n"),
                        "f");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->worker.no_new_privs);
}

TEST(ConfigTest, TenantUidRange) {
  auto with = [](const std::string& worker_lines) {
    std::string y = kMinimal;
    return ParseDaemonConfig(y.replace(y.find("  program:"), 0, worker_lines), "f");
  };
  absl::StatusOr<DaemonConfig> c = with("  tenant_uid_range: 61000-61999\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->worker.tenant_uid_first, 61000u);
  EXPECT_EQ(c->worker.tenant_uid_count, 1000u);
  EXPECT_EQ(ParseDaemonConfig(kMinimal, "f")->worker.tenant_uid_count, 0u);  // not set by default
  for (const std::string bad :
       {"61000", "61999-61000", "0-999", "500-2000", "61000-x", "1000-2147483648", "-5"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(with("  tenant_uid_range: " + bad + "\n").status().message(),
                HasSubstr("f:9: worker.tenant_uid_range: expected FIRST-LAST"));
  }
  EXPECT_THAT(with("  tenant_uid_range: 60000-70000\n").status().message(),
              HasSubstr("contains 65534 (nobody)"));
  EXPECT_THAT(with("  tenant_uid_range: 100000-2000000\n").status().message(),
              HasSubstr("at most 1048576"));
  EXPECT_THAT(with("  tenant_uid_range: 61000-61999\n  user: nobody\n").status().message(),
              HasSubstr("worker.user and worker.tenant_uid_range are both set"));
  // The range must not hold a user or group of the node: each of this
  // machine's users in /etc/passwd is refused as a one-id range.
  std::ifstream passwd("/etc/passwd");
  std::string line;
  bool range_free = true;
  while (std::getline(passwd, line)) {
    const std::vector<std::string> f = absl::StrSplit(line, ':');
    int64_t uid = 0;
    if (f.size() < 4 || !absl::SimpleAtoi(f[2], &uid)) continue;
    int64_t gid = 0;
    if ((uid >= 61000 && uid <= 61999) ||
        (absl::SimpleAtoi(f[3], &gid) && gid >= 61000 && gid <= 61999)) {
      range_free = false;
    }
    if (uid < 1000 || uid >= 65534) continue;
    DaemonConfig d = *c;
    d.worker.tenant_uid_first = static_cast<uint32_t>(uid);
    d.worker.tenant_uid_count = 1;
    absl::Status s = CheckTenantUidRange(d);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << line;
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("user '", f[0], "' has uid ", uid))) << line;
  }
  if (range_free) {
    EXPECT_TRUE(CheckTenantUidRange(*c).ok()) << CheckTenantUidRange(*c);
  }
}

TEST(ConfigTest, SlurmExecutor) {
  absl::StatusOr<DaemonConfig> local = ParseDaemonConfig(kMinimal, "f");
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(local->executor.kind, "local");
  const std::string slurm = absl::StrCat(kMinimal, R"(executor:
  kind: slurm
  slurm:
    partition: gpu
    account: acme
    time_limit: "2-00:00:00"
    gpus_per_node: 8
    cpus_per_task: 16
    sbatch_args: ["--exclusive", "--constraint=h100"]
    slurm_conf: /etc/slurm/slurm.conf
    report_listen: tcp://0.0.0.0:7791
    report_endpoint: tcp://login1:7791
    poll_interval_s: 0.5
    signal_before_limit_s: 300
    max_jobs: 64
)");
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(slurm, "f");
  ASSERT_TRUE(c.ok()) << c.status();
  const SlurmConfig& sl = c->executor.slurm;
  EXPECT_EQ(c->executor.kind, "slurm");
  EXPECT_EQ(sl.partition, "gpu");
  EXPECT_EQ(sl.account, "acme");
  EXPECT_EQ(sl.time_limit, "2-00:00:00");
  EXPECT_EQ(sl.gpus_per_node, 8);
  EXPECT_EQ(sl.cpus_per_task, 16);
  EXPECT_EQ(sl.sbatch_args, (std::vector<std::string>{"--exclusive", "--constraint=h100"}));
  EXPECT_EQ(sl.slurm_conf, "/etc/slurm/slurm.conf");
  EXPECT_EQ(sl.report_endpoint, "tcp://login1:7791");
  EXPECT_EQ(sl.poll_interval_ms, 500);
  EXPECT_EQ(sl.signal_before_limit_s, 300);
  EXPECT_EQ(sl.max_jobs, 64);
  EXPECT_EQ(sl.bin_dir, "/usr/bin");

  struct Bad {
    std::string yaml, message;
  };
  for (const Bad& b : {
           Bad{"executor: {kind: kubernetes}\n", "executor.kind: expected local or slurm"},
           Bad{"executor: {kind: slurm}\n", "executor.slurm.report_listen: required"},
           Bad{"executor: {kind: slurm, slurm: {report_listen: tcp://0.0.0.0:7791, "
               "sbatch_args: [--uid=0]}}\n",
               "'--uid' is set by fjordd for every job"},
           Bad{"executor: {kind: slurm, slurm: {report_listen: tcp://0.0.0.0:7791, "
               "sbatch_args: [-N2]}}\n",
               "'-N2' is not a long option"},
           Bad{"executor: {kind: slurm, slurm: {report_listen: tcp://0.0.0.0:7791, "
               "bin_dir: bin}}\n",
               "executor.slurm.bin_dir must be an absolute path"},
           Bad{"executor: {kind: slurm, slurm: {partiton: gpu}}\n",
               "executor.slurm.partiton: unknown field"},
       }) {
    absl::StatusOr<DaemonConfig> bad = ParseDaemonConfig(absl::StrCat(kMinimal, b.yaml), "f");
    ASSERT_FALSE(bad.ok()) << b.yaml;
    EXPECT_THAT(bad.status().message(), HasSubstr(b.message)) << b.yaml;
  }
}

TEST(ConfigTest, TheShippedExampleParses) {
  std::ifstream f("configs/fjordd.yaml");
  std::stringstream s;
  s << f.rdbuf();
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(s.str(), "configs/fjordd.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scheduler.gpus.size(), 8u);
  EXPECT_EQ(c->scheduler.gpu_memory_gb, 80);
  EXPECT_EQ(c->models.at("llama-3.2-1b"), "/models/Llama-3.2-1B-Instruct");
  EXPECT_EQ(c->worker.tenant_uid_first, 1500000000u);
  EXPECT_EQ(c->worker.tenant_uid_count, 65536u);
  EXPECT_TRUE(c->worker.user.empty());
}

TEST(ConfigTest, Errors) {
  const std::string base = kMinimal;
  EXPECT_THAT(ParseDaemonConfig(base + "colour: red\n", "f").status().message(),
              HasSubstr("f:10: colour: unknown field"));
  EXPECT_THAT(ParseDaemonConfig(base + "scheduler:\n  gpus: [0, 0]\n", "f").status().message(),
              HasSubstr("listed twice"));
  EXPECT_THAT(ParseDaemonConfig(base + "scheduler:\n  cpu_slots: x\n", "f").status().message(),
              HasSubstr("expected an integer"));
  EXPECT_THAT(
      ParseDaemonConfig(
          "state_dir: /a\nstorage_root: /b\nlisten: [tcp://0.0.0.0:1]\nworker: {program: /x}\n",
          "f")
          .status()
          .message(),
      HasSubstr("server_secret_key_file"));
  EXPECT_THAT(ParseDaemonConfig(
                  "state_dir: rel\nstorage_root: /b\nlisten: [ipc:///x]\nworker: {program: /x}\n"
                  "security: {curve: false, allow_plaintext: true}\n",
                  "f")
                  .status()
                  .message(),
              HasSubstr("state_dir must be an absolute path"));
}

// Regression (found by tests/fuzz/daemon_config_fuzz.cc): a mapping or list
// used as a key made yaml-cpp throw out of ParseDaemonConfig, aborting fjordd.
TEST(ConfigTest, NonScalarKeysAreErrorsNotCrashes) {
  const std::string base = kMinimal;
  absl::Status s = ParseDaemonConfig(base + "{[1]: 2}: 3\n", "f").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("f:10: config: field names must be plain strings"));
  s = ParseDaemonConfig(
          "state_dir: /a\nstorage_root: /b\nlisten: [ipc:///x]\nworker:\n  program: /x\n  env:\n   "
          " [a, b]: c\n",
          "f")
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("f:7: worker.env: keys must be plain strings"));
  s = ParseDaemonConfig(base + "models:\n  [x]: /m\n", "f").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("models: keys must be plain strings"));
}

TEST(ConfigTest, PlaintextOnlyWhenAskedAndOnlyOnLoopback) {
  const std::string head = "state_dir: /a\nstorage_root: /b\nworker: {program: /x}\n";
  EXPECT_THAT(
      ParseDaemonConfig(head + "listen: [tcp://127.0.0.1:7700]\nsecurity: {curve: false}\n", "f")
          .status()
          .message(),
      HasSubstr("allow_plaintext is not true"));
  EXPECT_THAT(
      ParseDaemonConfig(
          head + "listen: [tcp://0.0.0.0:7700]\nsecurity: {curve: false, allow_plaintext: true}\n",
          "f")
          .status()
          .message(),
      HasSubstr("not loopback"));
  EXPECT_TRUE(ParseDaemonConfig(head + "listen: [tcp://127.0.0.1:7700, ipc:///tmp/x]\n"
                                       "security: {curve: false, allow_plaintext: true}\n",
                                "f")
                  .ok());
  EXPECT_TRUE(IsLoopbackOrIpc("tcp://[::1]:5"));
  EXPECT_FALSE(IsLoopbackOrIpc("tcp://10.0.0.1:5"));
}

TEST(ConfigTest, CheckConfigReportsEveryProblem) {
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(kMinimal, "f");
  ASSERT_TRUE(c.ok());
  absl::Status s = CheckConfig(*c);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("/etc/fjordd/server.key does not exist"));
  EXPECT_THAT(s.message(), HasSubstr("worker.program: /usr/bin/fjord-train is not executable"));
  EXPECT_THAT(s.message(), HasSubstr("models: none configured"));
  // A tenant uid range holding a user of the node is one more problem
  // (set directly: the parser refuses ranges below 1000 already).
  c->worker.tenant_uid_first = 0;
  c->worker.tenant_uid_count = 1;
  s = CheckConfig(*c);
  EXPECT_THAT(s.message(), HasSubstr("worker.tenant_uid_range 0-0 must be reserved for fjordd's "
                                     "tenants, but user 'root' has uid 0"));
  EXPECT_THAT(s.message(), HasSubstr("models: none configured"));
}

}  // namespace
}  // namespace fjord::daemon
