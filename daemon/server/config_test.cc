#include "daemon/server/config.h"

#include <fstream>

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

TEST(ConfigTest, MetricsBearerTokenFile) {
  absl::StatusOr<DaemonConfig> c =
      ParseDaemonConfig(std::string(kMinimal) + "metrics:\n  bearer_token_file: /etc/fjordd/metrics.token\n", "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics.bearer_token_file, "/etc/fjordd/metrics.token");
}

TEST(ConfigTest, QuotaUploadAndPrivilegeFields) {
  const std::string base = kMinimal;
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(
      base + "limits:\n  max_tenant_storage_bytes: 1099511627776\n  max_uploads_per_tenant: 4\n", "f");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->limits.max_tenant_storage_bytes, uint64_t{1} << 40);
  EXPECT_EQ(c->limits.max_uploads_per_tenant, 4);
  EXPECT_THAT(ParseDaemonConfig(base + "limits:\n  max_uploads_per_tenant: 0\n", "f").status().message(),
              HasSubstr("f:11: limits.max_uploads_per_tenant"));
  EXPECT_THAT(ParseDaemonConfig(base + "limits:\n  max_tenant_storage_bytes: -1\n", "f").status().message(),
              HasSubstr("f:11: limits.max_tenant_storage_bytes"));
  absl::StatusOr<DaemonConfig> off = ParseDaemonConfig(
      std::string(kMinimal).replace(std::string(kMinimal).find("  program:"), 0, "  no_new_privs: false\n"), "f");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->worker.no_new_privs);
}

TEST(ConfigTest, TheShippedExampleParses) {
  std::ifstream f("configs/fjordd.yaml");
  std::stringstream s;
  s << f.rdbuf();
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(s.str(), "configs/fjordd.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scheduler.gpus.size(), 8u);
  EXPECT_EQ(c->models.at("llama-3.2-1b"), "/models/Llama-3.2-1B-Instruct");
}

TEST(ConfigTest, Errors) {
  const std::string base = kMinimal;
  EXPECT_THAT(ParseDaemonConfig(base + "colour: red\n", "f").status().message(), HasSubstr("f:10: colour: unknown field"));
  EXPECT_THAT(ParseDaemonConfig(base + "scheduler:\n  gpus: [0, 0]\n", "f").status().message(), HasSubstr("listed twice"));
  EXPECT_THAT(ParseDaemonConfig(base + "scheduler:\n  cpu_slots: x\n", "f").status().message(), HasSubstr("expected an integer"));
  EXPECT_THAT(ParseDaemonConfig("state_dir: /a\nstorage_root: /b\nlisten: [tcp://0.0.0.0:1]\nworker: {program: /x}\n", "f")
                  .status()
                  .message(),
              HasSubstr("server_secret_key_file"));
  EXPECT_THAT(ParseDaemonConfig("state_dir: rel\nstorage_root: /b\nlisten: [ipc:///x]\nworker: {program: /x}\n"
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
  s = ParseDaemonConfig("state_dir: /a\nstorage_root: /b\nlisten: [ipc:///x]\nworker:\n  program: /x\n  env:\n    [a, b]: c\n",
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
  EXPECT_THAT(ParseDaemonConfig(head + "listen: [tcp://127.0.0.1:7700]\nsecurity: {curve: false}\n", "f").status().message(),
              HasSubstr("allow_plaintext is not true"));
  EXPECT_THAT(ParseDaemonConfig(head + "listen: [tcp://0.0.0.0:7700]\nsecurity: {curve: false, allow_plaintext: true}\n", "f")
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
}

}  // namespace
}  // namespace fjord::daemon
