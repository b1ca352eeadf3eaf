// Security properties of a real fjordd (loopback, CURVE) with the fake worker
// (docs/security.md): secret keys never reach a log, the job store, the
// storage root or the metrics page; key files with loose permissions stop
// the daemon; the limits on peers, streams and uploads hold over the wire;
// and, as root, workers run as the configured unprivileged user with no
// supplementary groups and cannot read the daemon's state.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <httplib.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "daemon/protocol/codec.h"
#include "daemon/protocol/errors.h"
#include "daemon/server/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/sha256.h"
#include "tests/integration/daemon_harness.h"

namespace fjord::testing {
namespace {

using nlohmann::json;
using protocol::Job;
using protocol::JobStatus;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// The 32 raw bytes of a Z85 key.
std::string RawKey(const std::string& z85) {
  std::string raw(32, '\0');
  EXPECT_NE(zmq_z85_decode(reinterpret_cast<uint8_t*>(raw.data()), z85.c_str()), nullptr);
  return raw;
}

// Every file under the harness directory but the key files themselves, and
// the metrics page, after a run that touched every command and error path:
// no secret key appears, Z85 or raw.
TEST(SecurityTest, SecretKeysNeverReachLogsStateStorageOrMetrics) {
  HarnessOptions o;
  o.limits_extra =
      "  max_message_bytes: 65536\n  max_body_bytes: 16384\n  upload_chunk_bytes: 16384\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  {
    auto acme = h.Acme();
    protocol::JobSpec ok =
        SpecWithData(*acme, FakeData(R"({"steps": 4, "step_ms": 10, "checkpoint_every": 2})"));
    ASSERT_OK_AND_ASSIGN(j1, acme->CreateJob(ok));
    protocol::JobSpec bad =
        SpecWithData(*acme, FakeData(R"({"steps": 4, "mode": "fail_user", "crash_at_step": 2})"));
    ASSERT_OK_AND_ASSIGN(j2, acme->CreateJob(bad));
    protocol::JobSpec crash =
        SpecWithData(*acme, FakeData(R"({"steps": 4, "mode": "crash_once", "crash_at_step": 2})"));
    ASSERT_OK_AND_ASSIGN(j3, acme->CreateJob(crash));
    for (const std::string& id : {j1.id, j2.id, j3.id}) ASSERT_TRUE(h.WaitForFinal(*acme, id).ok());
    ASSERT_TRUE(acme->DownloadAdapter(j1.id, h.dir() + "/download").ok());
    EXPECT_FALSE(acme->GetJob("job-0000").ok());
    EXPECT_FALSE(acme->Call("job.create", json{{"model", 7}}).ok());
    EXPECT_FALSE(h.Connect(*GenerateCurveKeyPair(), 2000, 0)->Ping().ok());  // an unknown client
    auto admin = h.Admin();
    EXPECT_TRUE(admin->ListJobs().ok());
  }
  httplib::Client http("127.0.0.1", h.metrics_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  daemon::WorkerExit e = h.Terminate();
  EXPECT_EQ(e.exit_code, 0) << e.Describe();
  ASSERT_NO_FATAL_FAILURE(h.Start());  // a restart logs its keys-related lines again
  (void)h.Terminate();
  // A refused secret key file: fjordd must say why without printing it.
  ::chmod((h.dir() + "/keys/server.key").c_str(), 0644);
  daemon::WorkerSpec spec;
  spec.program = fs::absolute("daemon/server/fjordd").string();
  spec.args = {"--config", h.config_path()};
  spec.log_path = h.dir() + "/refused.log";
  ASSERT_OK_AND_ASSIGN(p, daemon::WorkerProcess::Start(spec));
  ASSERT_TRUE(p->Wait(20000).has_value());
  EXPECT_THAT(ReadFile(spec.log_path), HasSubstr("chmod 600"));

  std::vector<std::pair<std::string, std::string>> secrets;  // (what, bytes)
  for (const auto& [who, keys] : {std::pair<std::string, CurveKeyPair>{"server", h.server_keys()},
                                  {"acme", h.acme_keys()},
                                  {"zeta", h.zeta_keys()},
                                  {"admin", h.admin_keys()}}) {
    secrets.emplace_back(who + " secret key (Z85)", keys.secret_key);
    secrets.emplace_back(who + " secret key (raw)", RawKey(keys.secret_key));
  }
  int scanned = 0;
  for (const auto& entry : fs::recursive_directory_iterator(h.dir())) {
    if (!entry.is_regular_file() || entry.path().parent_path() == fs::path(h.dir() + "/keys"))
      continue;
    const std::string bytes = ReadFile(entry.path().string());
    ++scanned;
    for (const auto& [what, secret] : secrets) {
      EXPECT_FALSE(absl::StrContains(bytes, secret)) << what << " found in " << entry.path();
    }
  }
  for (const auto& [what, secret] : secrets)
    EXPECT_FALSE(absl::StrContains(metrics->body, secret)) << what;
  // The scan saw the daemon's log, its SQLite store and the jobs' files.
  EXPECT_GE(scanned, 10);
  EXPECT_TRUE(fs::exists(h.dir() + "/fjordd.log"));
  EXPECT_TRUE(fs::exists(h.dir() + "/state/fjordd.db"));
  EXPECT_THAT(h.log(),
              HasSubstr(h.server_keys().public_key));  // the public key is logged, on purpose
}

// Key files that group or others could change or read stop the daemon at
// start (exit 1) with the fix in the message: the keys file decides who may
// connect, the secret key is the server's identity.
TEST(SecurityTest, LooseKeyFilePermissionsStopTheDaemon) {
  DaemonHarness h;
  fs::create_directories(h.dir() + "/state");
  struct Case {
    std::string file;
    mode_t mode;
    std::string message;
  };
  for (const Case& c :
       {Case{"/keys/clients.yaml", 0664, "run chmod 644"},
        Case{"/keys/clients.yaml", 0646, "run chmod 644"},
        Case{"/keys/server.key", 0640, "chmod 600"}, Case{"/keys/server.key", 0604, "chmod 600"}}) {
    ::chmod((h.dir() + "/keys/clients.yaml").c_str(), 0644);
    ::chmod((h.dir() + "/keys/server.key").c_str(), 0600);
    ::chmod((h.dir() + c.file).c_str(), c.mode);
    daemon::WorkerSpec spec;
    spec.program = fs::absolute("daemon/server/fjordd").string();
    spec.args = {"--config", h.config_path()};
    spec.log_path = h.dir() + "/start.log";
    fs::remove(spec.log_path);
    ASSERT_OK_AND_ASSIGN(p, daemon::WorkerProcess::Start(spec));
    std::optional<daemon::WorkerExit> e = p->Wait(20000);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->exit_code, 1) << c.file << " " << std::oct << c.mode;
    EXPECT_THAT(ReadFile(spec.log_path), HasSubstr(c.message)) << c.file;
    EXPECT_THAT(ReadFile(spec.log_path), HasSubstr(h.dir() + c.file));
  }
  // Mode 0600 but owned by another user, who could change or read it.
  if (::geteuid() == 0) {
    ::chmod((h.dir() + "/keys/server.key").c_str(), 0600);
    ASSERT_EQ(::chown((h.dir() + "/keys/server.key").c_str(), 65534, 65534), 0);
    daemon::WorkerSpec spec;
    spec.program = fs::absolute("daemon/server/fjordd").string();
    spec.args = {"--config", h.config_path()};
    spec.log_path = h.dir() + "/owner.log";
    ASSERT_OK_AND_ASSIGN(p, daemon::WorkerProcess::Start(spec));
    std::optional<daemon::WorkerExit> e = p->Wait(20000);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->exit_code, 1);
    EXPECT_THAT(ReadFile(spec.log_path), HasSubstr("server secret key file " + h.dir() +
                                                   "/keys/server.key is owned by uid 65534"));
    EXPECT_THAT(ReadFile(spec.log_path), ::testing::Not(HasSubstr(h.server_keys().secret_key)));
  }
}

// The connection, stream and upload limits hold for a real client on the
// wire, and refusals say which limit.
TEST(SecurityTest, PeerStreamAndUploadLimitsHold) {
  HarnessOptions o;
  // Peers expire after 3 silent heartbeat intervals: long enough here that
  // the first three clients are still counted when the fourth comes.
  o.limits_extra =
      "  max_peers: 3\n  admin_reserved_peers: 0\n  max_streams_per_peer: 2\n  "
      "heartbeat_interval_ms: 5000\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::string job_id;
  {
    auto acme = h.Connect(h.acme_keys(), 5000, 0);
    protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 200, "step_ms": 50})"));
    ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
    job_id = job.id;
  }
  // Streams: the third on one connection is refused; the two open ones live on.
  RawPeer peer(h, h.acme_keys());
  peer.Send("s1", "job.subscribe", json{{"job_id", job_id}});
  peer.Send("s2", "job.subscribe", json{{"job_id", job_id}});
  peer.Send("s3", "job.subscribe", json{{"job_id", job_id}});
  ASSERT_OK_AND_ASSIGN(refused, peer.Final("s3"));
  EXPECT_EQ(refused.status, "RESOURCE_EXHAUSTED");
  absl::Status s = protocol::StatusFromReply(refused.status, refused.body);
  EXPECT_EQ(protocol::ParamOf(s), "streams");
  EXPECT_THAT(s.message(), HasSubstr("at most 2 streams per connection"));
  // Uploads in progress: 16 per tenant, the 17th refused.
  for (int i = 0; i < 16; ++i) {
    peer.Send(absl::StrCat("u", i), "file.upload.begin",
              json{{"filename", "x.jsonl"}, {"bytes", 10}, {"sha256", std::string(64, 'a')}});
    ASSERT_OK_AND_ASSIGN(begun, peer.Final(absl::StrCat("u", i)));
    ASSERT_EQ(begun.status, "OK") << begun.body.dump();
  }
  peer.Send("u16", "file.upload.begin",
            json{{"filename", "x.jsonl"}, {"bytes", 10}, {"sha256", std::string(64, 'a')}});
  ASSERT_OK_AND_ASSIGN(too_many, peer.Final("u16"));
  EXPECT_EQ(too_many.status, "RESOURCE_EXHAUSTED");
  EXPECT_THAT(protocol::StatusFromReply(too_many.status, too_many.body).message(),
              HasSubstr("at most 16 uploads in progress per tenant"));
  // Peers: new connections are counted until 3 are tracked (the harness's
  // start-up client, the job's, `peer`, ...): at the latest the third new
  // one here is refused, naming the limit; a tracked one still works.
  int accepted = 0;
  absl::Status refusal;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 4 && refusal.ok(); ++i) {
    clients.push_back(h.Connect(h.zeta_keys(), 5000, 0));
    absl::Status st = clients.back()->Ping().status();
    if (st.ok())
      ++accepted;
    else
      refusal = st;
  }
  EXPECT_LE(accepted, 1);  // `peer` and the job's client are tracked already
  EXPECT_EQ(refusal.code(), absl::StatusCode::kResourceExhausted) << refusal;
  EXPECT_EQ(protocol::ParamOf(refusal), "peers");
  EXPECT_THAT(refusal.message(), HasSubstr("at most 3 connections"));
  peer.Send("p", "ping", json::object());
  ASSERT_OK_AND_ASSIGN(pong, peer.Final("p"));
  EXPECT_EQ(pong.status, "OK");
}

// As root, with worker.user set, every worker (validator and trainer) runs
// with the user's uid and gid in all four ids, no supplementary groups, and
// the daemon's state (SQLite store, lock, keys) is closed to it.
// The worker.tenant_uid_range the tests use (kTenantUids), when no user or
// group of this machine has an id in it.
constexpr char kTenantUids[] = "1500000000-1500000999";
absl::Status TenantUidRangeIsFree() {
  daemon::DaemonConfig range;
  range.worker.tenant_uid_first = 1500000000;
  range.worker.tenant_uid_count = 1000;
  return daemon::CheckTenantUidRange(range);
}

// Tests of per-tenant worker uids need root and kTenantUids free.
#define SKIP_UNLESS_ROOT_WITH_TENANT_UIDS()           \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root"; \
  if (absl::Status free = TenantUidRangeIsFree(); !free.ok()) GTEST_SKIP() << free

// `o` with workers as per-tenant uids from kTenantUids, running `worker`
// (the fake worker where those uids can run it).
HarnessOptions WithTenantUids(const WorkerForOtherUsers& worker, HarnessOptions o = {}) {
  o.worker_extra += absl::StrCat("  tenant_uid_range: ", kTenantUids, "\n");
  o.worker_program = worker.program();
  return o;
}

// The daemon's child working on `job_id` whose command line holds `marker`
// (an argument, NUL-terminated as in /proc/<pid>/cmdline), or 0.
pid_t ChildOfDaemon(const DaemonHarness& h, const std::string& job_id, const std::string& marker) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string stat = ReadFile(e.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    if (std::atoi(stat.c_str() + close + 4) != h.daemon_pid()) continue;
    const std::string cmdline = ReadFile(e.path().string() + "/cmdline");
    if (absl::StrContains(cmdline, marker) && absl::StrContains(cmdline, "/" + job_id + "/")) {
      return std::atoi(e.path().filename().c_str());
    }
  }
  return 0;
}
// The trainer (it has --report) and the validator of `job_id`, or 0.
pid_t TrainerOf(const DaemonHarness& h, const std::string& job_id) {
  return ChildOfDaemon(h, job_id, std::string("--report\0", 9));
}
pid_t ValidatorOf(const DaemonHarness& h, const std::string& job_id) {
  return ChildOfDaemon(h, job_id, std::string("validate\0", 9));
}
// ValidatorOf once it has started (within 5 s), or 0.
pid_t WaitForValidator(const DaemonHarness& h, const std::string& job_id) {
  for (int i = 0; i < 200; ++i) {
    if (const pid_t pid = ValidatorOf(h, job_id)) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return 0;
}

// What a process running as `id` (uid and gid, no other groups) gets from
// open(path) or, for a socket, connect(path): 0 or the errno.
int AccessAs(uint32_t id, const std::string& path, bool socket) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    int err = 0;
    if (::setgroups(0, nullptr) != 0 || ::setgid(id) != 0 || ::setuid(id) != 0) {
      err = -2;
    } else if (socket) {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
      const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      err = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 ? 0 : errno;
    } else {
      err = ::open(path.c_str(), O_RDONLY) >= 0 ? 0 : errno;
    }
    (void)!::write(pipe_fds[1], &err, sizeof(err));
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  int err = -3;
  (void)!::read(pipe_fds[0], &err, sizeof(err));
  ::close(pipe_fds[0]);
  ::waitpid(pid, nullptr, 0);
  return err;
}

TEST(SecurityTest, WorkersRunUnprivilegedAndCannotReadTheDaemonsState) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  struct passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody'";
  WorkerForOtherUsers worker;
  HarnessOptions o;
  o.worker_extra = "  user: nobody\n";
  o.worker_program = worker.program();
  DaemonHarness h(o);
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 100, "step_ms": 20})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [](const Job& j) {
                 return j.status == JobStatus::kRunning && j.step >= 2;
               }).ok());
  // The trainer: the daemon's child whose command line has --report.
  const pid_t trainer = TrainerOf(h, job.id);
  ASSERT_NE(trainer, 0) << "no trainer found";
  const std::string status = ReadFile(absl::StrCat("/proc/", trainer, "/status"));
  const std::string uid = std::to_string(nobody->pw_uid), gid = std::to_string(nobody->pw_gid);
  EXPECT_THAT(status,
              HasSubstr(absl::StrCat("Uid:\t", uid, "\t", uid, "\t", uid, "\t", uid, "\n")));
  EXPECT_THAT(status,
              HasSubstr(absl::StrCat("Gid:\t", gid, "\t", gid, "\t", gid, "\t", gid, "\n")));
  auto field = [&](const std::string& name) {
    const size_t at = status.find("\n" + name + ":");
    if (at == std::string::npos) return std::string("<none>");
    const size_t begin = at + name.size() + 2, end = status.find('\n', begin);
    return std::string(absl::StripAsciiWhitespace(status.substr(begin, end - begin)));
  };
  EXPECT_EQ(field("Groups"), "");  // setgroups(0): none of root's groups
  EXPECT_EQ(field("CapEff"), "0000000000000000");
  EXPECT_EQ(field("CapPrm"), "0000000000000000");
  EXPECT_EQ(field("NoNewPrivs"), "1");  // worker.no_new_privs (default): no setuid program helps it
  // What the worker's user could open of the daemon's own files: nothing.
  for (const std::string& f : {h.dir() + "/state/fjordd.db", h.dir() + "/state/fjordd.db-wal",
                               h.dir() + "/state/fjordd.lock", h.dir() + "/keys/server.key"}) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) continue;
    EXPECT_EQ(st.st_mode & 077, 0u) << f << " is open to group or others (mode " << std::oct
                                    << (st.st_mode & 0777) << "): the worker's user could read it";
  }
  ASSERT_TRUE(acme->CancelJob(job.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
}

// worker.tenant_uid_range: each tenant's workers run as a uid of their own,
// the same one after a restart; a tenant's area, files, job directories and
// report sockets are closed to every other tenant's uid; a job still runs to
// a verified adapter.
TEST(SecurityTest, EachTenantsWorkersRunAsItsOwnUidAndCannotReachAnotherTenant) {
  SKIP_UNLESS_ROOT_WITH_TENANT_UIDS();
  WorkerForOtherUsers worker;
  DaemonHarness h(WithTenantUids(worker));
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto zeta = h.Zeta();
  ASSERT_OK_AND_ASSIGN(
      done, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 3, "step_ms": 10})"))));
  ASSERT_OK_AND_ASSIGN(
      a, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 500, "step_ms": 20})"))));
  ASSERT_OK_AND_ASSIGN(
      z, zeta->CreateJob(SpecWithData(*zeta, FakeData(R"({"steps": 500, "step_ms": 20})"))));
  ASSERT_OK_AND_ASSIGN(finished, h.WaitForFinal(*acme, done.id));
  EXPECT_EQ(finished.status, JobStatus::kSucceeded)
      << (finished.error ? finished.error->message : "");
  for (auto [c, id] : {std::pair{acme.get(), a.id}, std::pair{zeta.get(), z.id}}) {
    ASSERT_TRUE(h.WaitFor(*c, id, [](const Job& j) {
                   return j.status == JobStatus::kRunning && j.step >= 2;
                 }).ok());
  }
  // The ids come from the claims on the storage root, and the trainers run as them.
  std::map<std::string, uint32_t> ids;
  for (const auto& e : fs::directory_iterator(h.storage() + "/.fjord-tenant-ids")) {
    ids[std::string(absl::StripSuffix(ReadFile(e.path().string()), "\n"))] =
        std::stoul(e.path().filename().string());
  }
  ASSERT_EQ(ids.size(), 2u);
  const uint32_t acme_id = ids["acme"], zeta_id = ids["zeta"];
  EXPECT_NE(acme_id, zeta_id);
  for (uint32_t id : {acme_id, zeta_id}) {
    EXPECT_GE(id, 1500000000u);
    EXPECT_LE(id, 1500000999u);
  }
  for (auto [job_id, id] : {std::pair{a.id, acme_id}, std::pair{z.id, zeta_id}}) {
    const pid_t trainer = TrainerOf(h, job_id);
    ASSERT_NE(trainer, 0) << "no trainer for " << job_id;
    const std::string status = ReadFile(absl::StrCat("/proc/", trainer, "/status"));
    const std::string n = std::to_string(id);
    EXPECT_THAT(status, HasSubstr(absl::StrCat("Uid:\t", n, "\t", n, "\t", n, "\t", n, "\n")));
    EXPECT_THAT(status, HasSubstr(absl::StrCat("Gid:\t", n, "\t", n, "\t", n, "\t", n, "\n")));
    const size_t groups = status.find("\nGroups:");
    ASSERT_NE(groups, std::string::npos);
    EXPECT_EQ(absl::StripAsciiWhitespace(
                  status.substr(groups + 8, status.find('\n', groups + 1) - groups - 8)),
              "")
        << "supplementary groups";
  }
  // Who owns what: the area and the files are root's with the tenant's
  // group; the job directory is the tenant's uid.
  const std::string acme_area = h.storage() + "/acme", zeta_area = h.storage() + "/zeta";
  ASSERT_OK_AND_ASSIGN(zeta_files, zeta->ListFiles());
  ASSERT_FALSE(zeta_files.empty());
  const std::string zeta_file = zeta_area + "/files/" + zeta_files[0].id;
  auto owner = [](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return std::tuple<uint32_t, uint32_t, uint32_t>(st.st_uid, st.st_gid, st.st_mode & 0777);
  };
  using Own = std::tuple<uint32_t, uint32_t, uint32_t>;
  EXPECT_EQ(owner(zeta_area), Own(0, zeta_id, 0750));
  EXPECT_EQ(owner(zeta_area + "/files"), Own(0, zeta_id, 0750));
  EXPECT_EQ(owner(zeta_file), Own(0, zeta_id, 0640));
  EXPECT_EQ(owner(zeta_area + "/jobs/" + z.id), Own(zeta_id, zeta_id, 0750));
  EXPECT_EQ(
      std::get<0>(owner(acme_area + "/jobs/" + done.id + "/adapter/adapter_model.safetensors")),
      acme_id);
  EXPECT_EQ(owner(h.dir() + "/state/run/" + z.id + ".sock"), Own(zeta_id, zeta_id, 0600));
  // acme's uid reaches its own things and none of zeta's.
  EXPECT_EQ(AccessAs(acme_id, acme_area + "/jobs/" + a.id + "/job.yaml", false), 0);
  EXPECT_EQ(AccessAs(acme_id, h.dir() + "/state/run/" + a.id + ".sock", true), 0);
  EXPECT_EQ(AccessAs(acme_id, zeta_file, false), EACCES);
  EXPECT_EQ(AccessAs(acme_id, zeta_area + "/jobs/" + z.id + "/job.yaml", false), EACCES);
  EXPECT_EQ(AccessAs(acme_id, h.dir() + "/state/run/" + z.id + ".sock", true), EACCES);
  EXPECT_EQ(AccessAs(acme_id, h.storage() + "/.fjord-tenant-ids/" + std::to_string(acme_id), false),
            EACCES);
  EXPECT_EQ(
      AccessAs(zeta_id, acme_area + "/jobs/" + done.id + "/adapter/adapter_config.json", false),
      EACCES);
  // After a restart (any node on this storage root reads the same claims),
  // acme's next job runs as the same uid.
  ASSERT_TRUE(acme->CancelJob(a.id).ok());
  ASSERT_TRUE(zeta->CancelJob(z.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, a.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*zeta, z.id).ok());
  acme.reset();
  zeta.reset();
  EXPECT_EQ(h.Terminate().exit_code, 0);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(
      again, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 500, "step_ms": 20})"))));
  ASSERT_TRUE(h.WaitFor(*acme, again.id, [](const Job& j) {
                 return j.status == JobStatus::kRunning && j.step >= 1;
               }).ok());
  const pid_t trainer = TrainerOf(h, again.id);
  ASSERT_NE(trainer, 0);
  EXPECT_THAT(ReadFile(absl::StrCat("/proc/", trainer, "/status")),
              HasSubstr(absl::StrCat("Uid:\t", acme_id, "\t")));
  ASSERT_TRUE(acme->CancelJob(again.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, again.id).ok());
}

// An operator moving a node from one worker.user to worker.tenant_uid_range:
// a job stopped mid-run (requeued by the SIGTERM) resumes as the tenant's
// uid from the checkpoint the shared user wrote, and the files uploaded
// before are its tenant's to read.
TEST(SecurityTest, SwitchingToTenantUidsReownsTheAreasMadeBefore) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  struct passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody'";
  if (absl::Status s = TenantUidRangeIsFree(); !s.ok()) GTEST_SKIP() << s;
  WorkerForOtherUsers worker;
  HarnessOptions o;
  o.worker_extra = "  user: nobody\n";
  o.worker_program = worker.program();
  DaemonHarness h(o);
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(
      job, acme->CreateJob(SpecWithData(
               *acme, FakeData(R"({"steps": 400, "step_ms": 20, "checkpoint_every": 2})"))));
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [](const Job& j) {
                 return j.status == JobStatus::kRunning && j.step >= 4;
               }).ok());
  acme.reset();
  EXPECT_EQ(h.Terminate().exit_code, 0);
  const std::string job_dir = h.storage() + "/acme/jobs/" + job.id;
  size_t by_nobody = 0;
  for (const auto& e : fs::recursive_directory_iterator(job_dir)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) == 0 && st.st_uid == nobody->pw_uid) ++by_nobody;
  }
  ASSERT_GT(by_nobody, 0u) << "the shared user wrote no checkpoint";
  std::string config = ReadFile(h.config_path());
  config.replace(config.find("  user: nobody\n"), 15,
                 absl::StrCat("  tenant_uid_range: ", kTenantUids, "\n"));
  std::ofstream(h.config_path()) << config;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(resumed, h.WaitFor(*acme, job.id, [](const Job& j) {
    return j.status == JobStatus::kRunning;
  }));
  const uint32_t acme_id = std::stoul(
      std::string(fs::directory_iterator(h.storage() + "/.fjord-tenant-ids")->path().filename()));
  const pid_t trainer = TrainerOf(h, job.id);
  ASSERT_NE(trainer, 0);
  EXPECT_THAT(ReadFile(absl::StrCat("/proc/", trainer, "/status")),
              HasSubstr(absl::StrCat("Uid:\t", acme_id, "\t")));
  ASSERT_TRUE(
      h.WaitFor(*acme, job.id, [&](const Job& j) { return j.step >= resumed.step + 4; }).ok());
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  std::vector<int64_t> starts;
  for (const auto& e : events.events) {
    if (e.type == "start") starts.push_back(e.data.value("step", int64_t{-1}));
  }
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_GE(starts[1], 2);  // resumed from the shared user's checkpoint, not from the start
  for (const auto& e : fs::recursive_directory_iterator(h.storage() + "/acme")) {
    struct stat st {};
    ASSERT_EQ(::lstat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_gid, acme_id) << e.path();
    EXPECT_NE(st.st_uid, nobody->pw_uid) << e.path();
  }
  // The file uploaded under the shared user's group is readable by acme's uid.
  ASSERT_OK_AND_ASSIGN(files, acme->ListFiles());
  ASSERT_FALSE(files.empty());
  EXPECT_EQ(AccessAs(acme_id, h.storage() + "/acme/files/" + files[0].id, false), 0);
  ASSERT_TRUE(acme->CancelJob(job.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
}

// limits.max_tenant_storage_bytes: a tenant's area (files, uploads in
// progress at their announced size, job directories) is held under its quota;
// another tenant's is its own; limits.max_uploads_per_tenant is the config's.
TEST(SecurityTest, StorageQuotaRefusesUploadsAndJobsPerTenant) {
  HarnessOptions o;
  o.limits_extra = "  max_tenant_storage_bytes: 4096\n  max_uploads_per_tenant: 2\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto usage = [&](Client& c) {
    absl::StatusOr<protocol::ServerMessage> l = c.Call("file.list", json::object());
    EXPECT_TRUE(l.ok()) << l.status();
    EXPECT_EQ(l.ok() ? l->body.value("quota_bytes", uint64_t{0}) : 0, 4096u);
    return l.ok() ? l->body.value("usage_bytes", uint64_t{0}) : 0;
  };
  auto begin = [&](Client& c, int64_t bytes) {
    return c.Call(
        "file.upload.begin",
        json{{"filename", "t.jsonl"}, {"bytes", bytes}, {"sha256", std::string(64, 'a')}});
  };
  ASSERT_OK_AND_ASSIGN(
      a, acme->UploadBytes(FakeData(R"({"steps": 2, "step_ms": 10})", 8), "train.jsonl"));
  const uint64_t after_a = usage(*acme);
  EXPECT_GE(after_a, a.bytes);
  // An upload in progress counts at its announced size: 3000 fit, then 100 more do not.
  ASSERT_TRUE(begin(*acme, 3000).ok());
  absl::Status over = begin(*acme, 4096 - after_a - 3000 + 1).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_EQ(protocol::ParamOf(over), "bytes");
  EXPECT_THAT(over.message(),
              HasSubstr(absl::StrCat("tenant 'acme' uses ", after_a + 3000, " of its 4096 bytes")));
  EXPECT_EQ(usage(*acme), after_a + 3000);
  // Exactly up to the quota is allowed; then the upload count is the limit.
  ASSERT_TRUE(begin(*acme, 4096 - after_a - 3000).ok());
  absl::Status third = begin(*acme, 1).status();
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted) << third;
  EXPECT_EQ(protocol::ParamOf(third), "upload_id");
  EXPECT_THAT(third.message(), HasSubstr("at most 2 uploads in progress per tenant"));
  // At the quota, a new job (it would write checkpoints) is refused.
  protocol::JobSpec spec;
  spec.model = "tiny";
  spec.training_file = a.id;
  absl::Status job = acme->CreateJob(spec).status();
  EXPECT_EQ(job.code(), absl::StatusCode::kResourceExhausted) << job;
  EXPECT_EQ(protocol::ParamOf(job), "tenant");
  EXPECT_THAT(job.message(), HasSubstr("uses 4096 of its 4096 bytes"));
  // zeta's quota is its own.
  auto zeta = h.Zeta();
  EXPECT_EQ(usage(*zeta), 0u);
  ASSERT_OK_AND_ASSIGN(z, zeta->UploadBytes(std::string(4000, 'z'), "big.jsonl"));
  EXPECT_EQ(usage(*zeta), 4000u);
  EXPECT_TRUE(acme->Ping().ok());
}

// file.delete removes the file from the listing and the storage root, and
// the usage with it; a file a live job names cannot be deleted until the job
// ends; another tenant cannot delete (or learn of) it; a repeat is NOT_FOUND.
// A running job whose checkpoints take its tenant past the quota is paused
// (not failed: its checkpoints stay), says why in its error, cannot be
// resumed until the tenant frees space, and then resumes from its newest
// checkpoint and keeps running (checkpoint rotation holds it under).
TEST(SecurityTest, StorageQuotaPausesARunningJobAndResumeWaitsForSpace) {
  HarnessOptions o;
  o.limits_extra = "  max_tenant_storage_bytes: 131072\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(extra, acme->UploadBytes(std::string(40 * 1024, 'x'), "extra.bin"));
  // 30 KiB per checkpoint, the last 3 kept: 40 + 30·3 KiB goes over 128 KiB
  // at the third checkpoint (step 6).
  ASSERT_OK_AND_ASSIGN(
      job,
      acme->CreateJob(SpecWithData(
          *acme,
          FakeData(
              R"({"steps": 2000, "step_ms": 20, "checkpoint_every": 2, "checkpoint_bytes": 30720})"))));
  ASSERT_OK_AND_ASSIGN(paused, h.WaitForStatus(*acme, job.id, JobStatus::kPaused, 60));
  ASSERT_TRUE(paused.error.has_value());
  EXPECT_EQ(paused.error->code, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(paused.error->param, "tenant");
  EXPECT_THAT(paused.error->message, HasSubstr("paused: tenant 'acme' uses "));
  EXPECT_THAT(paused.error->message, HasSubstr(" of its 131072 bytes of storage"));
  ASSERT_TRUE(paused.latest_checkpoint.has_value());
  EXPECT_GE(paused.latest_checkpoint->step, 6);
  EXPECT_LT(paused.step, 40) << "paused at its first checkpoint over the quota";
  // Over the quota: resume is refused and changes nothing.
  absl::Status refused = acme->ResumeJob(job.id).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_EQ(protocol::ParamOf(refused), "tenant");
  EXPECT_THAT(refused.message(), HasSubstr("a resumed job writes checkpoints"));
  ASSERT_OK_AND_ASSIGN(still, acme->GetJob(job.id));
  EXPECT_EQ(still.status, JobStatus::kPaused);
  // Space freed: it resumes from its checkpoint, with no error, and keeps
  // checkpointing under the quota.
  ASSERT_TRUE(acme->DeleteFile(extra.id).ok());
  ASSERT_OK_AND_ASSIGN(resumed, acme->ResumeJob(job.id));
  EXPECT_FALSE(resumed.error.has_value());
  ASSERT_TRUE(h.WaitFor(
                   *acme, job.id,
                   [&](const Job& j) {
                     return j.status == JobStatus::kRunning && j.step >= paused.step + 12;
                   },
                   60)
                  .ok());
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  std::vector<int64_t> starts;
  for (const auto& e : events.events) {
    if (e.type == "start") starts.push_back(e.data.value("step", int64_t{-1}));
  }
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[1], paused.latest_checkpoint->step);
  httplib::Client http("127.0.0.1", h.metrics_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("fjord_jobs_paused_over_quota_total 1"));
  ASSERT_TRUE(acme->CancelJob(job.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
}

TEST(SecurityTest, FileDeleteFreesStorageAndSparesFilesInUse) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto list = [&]() {
    absl::StatusOr<protocol::ServerMessage> l = acme->Call("file.list", json::object());
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? l->body : json::object();
  };
  ASSERT_OK_AND_ASSIGN(keep, acme->UploadBytes(FakeData(R"({"steps": 1})"), "keep.jsonl"));
  ASSERT_OK_AND_ASSIGN(gone, acme->UploadBytes(std::string(5000, 'g'), "gone.jsonl"));
  const json before = list();
  EXPECT_EQ(before["quota_bytes"], 0);
  EXPECT_EQ(before["files"].size(), 2u);
  const uint64_t used = before["usage_bytes"].get<uint64_t>();
  EXPECT_GE(used, keep.bytes + 5000);

  absl::Status stranger = h.Zeta()->Call("file.delete", json{{"file_id", gone.id}}).status();
  EXPECT_EQ(stranger.code(), absl::StatusCode::kNotFound) << stranger;
  EXPECT_EQ(protocol::ParamOf(stranger), "file_id");
  ASSERT_OK_AND_ASSIGN(deleted, acme->Call("file.delete", json{{"file_id", gone.id}}));
  EXPECT_EQ(deleted.body["id"], gone.id);
  EXPECT_EQ(deleted.body["filename"], "gone.jsonl");
  EXPECT_EQ(deleted.body["bytes"], 5000);
  const json after = list();
  ASSERT_EQ(after["files"].size(), 1u);
  EXPECT_EQ(after["files"][0]["id"], keep.id);
  EXPECT_EQ(after["usage_bytes"].get<uint64_t>(), used - 5000);
  EXPECT_FALSE(std::filesystem::exists(h.storage() + "/acme/files/" + gone.id));
  absl::Status again = acme->Call("file.delete", json{{"file_id", gone.id}}).status();
  EXPECT_EQ(again.code(), absl::StatusCode::kNotFound) << again;
  EXPECT_THAT(again.message(), HasSubstr("no file '" + gone.id + "'"));

  // In use: a running job's training file (named by id) and validation file
  // (named by path) stay until the job ends.
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 400, "step_ms": 20})"));
  spec.validation_file = keep.path;
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitForStatus(*acme, job.id, protocol::JobStatus::kRunning).ok());
  for (const auto& [id, field] :
       {std::pair{spec.training_file, "training_file"}, std::pair{keep.id, "validation_file"}}) {
    absl::Status busy = acme->Call("file.delete", json{{"file_id", id}}).status();
    EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition) << busy;
    EXPECT_EQ(protocol::ParamOf(busy), "file_id");
    EXPECT_THAT(busy.message(), HasSubstr(absl::StrCat("is the ", field, " of job ", job.id,
                                                       ", which is running")));
  }
  ASSERT_TRUE(acme->CancelJob(job.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
  EXPECT_TRUE(acme->Call("file.delete", json{{"file_id", spec.training_file}}).ok());
  EXPECT_TRUE(acme->Call("file.delete", json{{"file_id", keep.id}}).ok());
  EXPECT_TRUE(list()["files"].empty());
  // The ended job keeps its record.
  ASSERT_OK_AND_ASSIGN(ended, acme->GetJob(job.id));
  EXPECT_EQ(ended.status, protocol::JobStatus::kCancelled);
}

// SIGHUP reads the keys file again: a new client can connect, a removed one
// is refused from its next request on (on its open connection too), and a
// broken file changes nothing. Running jobs are not touched.
TEST(SecurityTest, SighupReloadsTheKeysFile) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 3000, "step_ms": 20})"));
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_TRUE(h.WaitForStatus(*acme, job.id, protocol::JobStatus::kRunning).ok());
  auto zeta = h.Connect(h.zeta_keys(), 3000, 0);
  ASSERT_TRUE(zeta->Ping().ok());
  ASSERT_OK_AND_ASSIGN(newco, GenerateCurveKeyPair());
  const std::string file = h.dir() + "/keys/clients.yaml";
  auto replace_keys = [&](const std::string& text) {
    std::ofstream(file + ".new") << text;
    ::chmod((file + ".new").c_str(), 0644);
    ASSERT_EQ(::rename((file + ".new").c_str(), file.c_str()), 0);
  };
  auto wait_for_log = [&](const std::string& line, int count) {
    for (int i = 0; i < 200; ++i) {
      const std::string log = h.log();
      size_t n = 0;
      for (size_t at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) ++n;
      if (n >= static_cast<size_t>(count)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  ASSERT_FALSE(absl::StrContains(h.log(), "keys file reloaded"));
  replace_keys(absl::StrCat("clients:\n  - {name: acme-ci, public_key: \"",
                            h.acme_keys().public_key,
                            "\", tenant: acme}\n  - {name: newco-ci, public_key: \"",
                            newco.public_key, "\", tenant: newco}\n"));
  ASSERT_EQ(::kill(h.daemon_pid(), SIGHUP), 0);
  ASSERT_TRUE(wait_for_log("keys file reloaded", 1)) << h.log();
  absl::Status revoked = zeta->Ping().status();
  EXPECT_EQ(revoked.code(), absl::StatusCode::kUnauthenticated) << revoked;
  EXPECT_THAT(revoked.message(), HasSubstr("no longer) in the keys file"));
  EXPECT_EQ(h.Connect(h.zeta_keys(), 3000, 0)->Ping().status().code(),
            absl::StatusCode::kUnauthenticated);
  ASSERT_OK_AND_ASSIGN(hello, h.Connect(newco, 3000, 0)->Ping());
  EXPECT_EQ(hello.tenant, "newco");

  // A broken file (a short key), and one others may write: nothing changes.
  replace_keys("clients:\n  - {name: x, public_key: \"short\", tenant: x}\n");
  ASSERT_EQ(::kill(h.daemon_pid(), SIGHUP), 0);
  ASSERT_TRUE(wait_for_log("keys file not reloaded", 1)) << h.log();
  replace_keys(absl::StrCat("clients:\n  - {name: zeta-dev, public_key: \"",
                            h.zeta_keys().public_key, "\", tenant: zeta}\n"));
  ::chmod(file.c_str(), 0666);
  ASSERT_EQ(::kill(h.daemon_pid(), SIGHUP), 0);
  ASSERT_TRUE(wait_for_log("keys file not reloaded", 2)) << h.log();
  EXPECT_TRUE(h.Connect(newco, 3000, 0)->Ping().ok());
  EXPECT_TRUE(acme->Ping().ok());
  EXPECT_EQ(zeta->Ping().status().code(), absl::StatusCode::kUnauthenticated);
  httplib::Client http("127.0.0.1", h.metrics_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("fjord_key_reloads_total{result=\"ok\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("fjord_key_reloads_total{result=\"error\"} 2"));
  // The job ran on throughout.
  ASSERT_OK_AND_ASSIGN(still, acme->GetJob(job.id));
  EXPECT_EQ(still.status, protocol::JobStatus::kRunning);
  ASSERT_TRUE(acme->CancelJob(job.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
}

// job.delete: only an ended job; its directory (checkpoints, adapter, logs)
// and record go, the usage falls, every command naming it is NOT_FOUND (a
// restart does not bring it back), and its idempotency key is free again.
TEST(SecurityTest, JobDeleteFreesStorageAndForgetsTheJob) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto usage = [&]() {
    absl::StatusOr<protocol::ServerMessage> l = acme->Call("file.list", json::object());
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? l->body.value("usage_bytes", uint64_t{0}) : 0;
  };
  protocol::JobSpec spec =
      SpecWithData(*acme, FakeData(R"({"steps": 4, "step_ms": 10, "checkpoint_every": 2})"));
  spec.idempotency_key = "nightly-1";
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(spec));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  ASSERT_EQ(done.status, protocol::JobStatus::kSucceeded) << h.log();
  const std::string dir = h.storage() + "/acme/jobs/" + job.id;
  ASSERT_TRUE(std::filesystem::exists(dir + "/checkpoints"));
  const uint64_t before = usage();
  uint64_t dir_bytes = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir)) {
    if (f.is_regular_file() && !f.is_symlink()) dir_bytes += f.file_size();
  }
  EXPECT_GT(dir_bytes, 0u);

  absl::Status stranger = h.Zeta()->Call("job.delete", json{{"job_id", job.id}}).status();
  EXPECT_EQ(stranger.code(), absl::StatusCode::kNotFound) << stranger;
  ASSERT_TRUE(std::filesystem::exists(dir));

  ASSERT_OK_AND_ASSIGN(deleted, acme->Call("job.delete", json{{"job_id", job.id}}));
  EXPECT_EQ(deleted.body["id"], job.id);
  EXPECT_EQ(deleted.body["status"], "succeeded");
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_EQ(usage(), before - dir_bytes);
  auto gone = [&](const absl::Status& s, const std::string& what) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << what << ": " << s;
  };
  // A job that has not ended stays.
  protocol::JobSpec slow = SpecWithData(*acme, FakeData(R"({"steps": 3000, "step_ms": 20})"));
  ASSERT_OK_AND_ASSIGN(running, acme->CreateJob(slow));
  ASSERT_TRUE(h.WaitForStatus(*acme, running.id, protocol::JobStatus::kRunning).ok());
  absl::Status busy = acme->Call("job.delete", json{{"job_id", running.id}}).status();
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition) << busy;
  EXPECT_EQ(protocol::ParamOf(busy), "job_id");
  EXPECT_THAT(busy.message(), HasSubstr("is running; only a job that has ended can be deleted"));
  gone(acme->GetJob(job.id).status(), "job.get");
  gone(acme->ListEvents(job.id).status(), "job.events");
  gone(acme->ListAdapterFiles(job.id).status(), "adapter.files");
  gone(acme->Call("job.delete", json{{"job_id", job.id}}).status(), "job.delete again");
  ASSERT_OK_AND_ASSIGN(page, acme->ListJobs());
  for (const protocol::Job& j : page.jobs) EXPECT_NE(j.id, job.id);
  // The key names a new job now.
  ASSERT_OK_AND_ASSIGN(again, acme->CreateJob(spec));
  EXPECT_NE(again.id, job.id);
  ASSERT_TRUE(h.WaitForFinal(*acme, again.id).ok());
  ASSERT_TRUE(acme->CancelJob(running.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, running.id).ok());
  // A restart does not bring it back.
  acme.reset();
  daemon::WorkerExit e = h.Terminate();
  EXPECT_EQ(e.exit_code, 0) << e.Describe();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  gone(h.Acme()->GetJob(job.id).status(), "job.get after a restart");
  EXPECT_TRUE(h.Acme()->GetJob(again.id).ok());
}

// metrics.bearer_token_file: fjordd's /metrics needs the token; /healthz
// does not; a token file others can read stops the daemon at start.
TEST(SecurityTest, MetricsNeedTheBearerTokenWhenOneIsSet) {
  char tmpl[] = "/tmp/fjtok-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string token_file = dir + "/metrics.token";
  std::ofstream(token_file) << "prometheus-scrape-token-42\n";
  ::chmod(token_file.c_str(), 0600);
  HarnessOptions o;
  o.metrics_extra = "  bearer_token_file: " + token_file + "\n";
  {
    DaemonHarness h(o);
    ASSERT_NO_FATAL_FAILURE(h.Start());
    httplib::Client http("127.0.0.1", h.metrics_port());
    auto refused = http.Get("/metrics");
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 401);
    auto scraped = http.Get("/metrics", {{"Authorization", "Bearer prometheus-scrape-token-42"}});
    ASSERT_TRUE(scraped);
    EXPECT_EQ(scraped->status, 200);
    EXPECT_THAT(scraped->body, HasSubstr("fjord_peers"));
    auto health = http.Get("/healthz");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
  }
  ::chmod(token_file.c_str(), 0644);
  DaemonHarness loose(o);
  std::filesystem::create_directories(loose.dir() + "/state");
  daemon::WorkerSpec spec;
  spec.program = std::filesystem::absolute("daemon/server/fjordd").string();
  spec.args = {"--config", loose.config_path()};
  spec.log_path = loose.dir() + "/start.log";
  auto p = daemon::WorkerProcess::Start(spec);
  ASSERT_TRUE(p.ok()) << p.status();
  auto e = (*p)->Wait(30000);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->exit_code, 1) << e->Describe();
  EXPECT_THAT(ReadFile(spec.log_path), HasSubstr("has mode 0644: group or others can access it"));
  std::filesystem::remove_all(dir);
}

// ---- a compromised worker against the root daemon (docs/security.md, "Root
// never follows what a worker plants") ------------------------------------

// The uid fjordd gave `tenant` (its claim on the storage root).
uint32_t TenantUid(const DaemonHarness& h, const std::string& tenant) {
  for (const auto& e : fs::directory_iterator(h.storage() + "/.fjord-tenant-ids")) {
    if (absl::StripSuffix(ReadFile(e.path().string()), "\n") == tenant)
      return std::stoul(e.path().filename().string());
  }
  return 0;
}

// Runs `fn` in a child process as uid and gid `id` with no other groups: what
// a compromised worker of that tenant can do. Waits when `wait`, else returns
// at once; the result is fn's (or -1), the pid when not waiting.
int RunAs(uint32_t id, const std::function<int()>& fn, bool wait = true) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(id) != 0 || ::setuid(id) != 0) ::_exit(101);
    ::_exit(fn());
  }
  if (!wait) return pid;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Replaces `path` with a symbolic link to `target`, as `id`; 0 on success.
int PlantLink(uint32_t id, const std::string& path, const std::string& target) {
  return RunAs(id, [&] {
    (void)::unlink(path.c_str());
    return ::symlink(target.c_str(), path.c_str()) == 0 ? 0 : 1;
  });
}

// A root-only file (0600, root) with known bytes, in a directory only root
// can enter, removed with this object.
class RootOnlyFile {
 public:
  RootOnlyFile() {
    char tmpl[] = "/tmp/fjit-root-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ::chmod(dir_.c_str(), 0711);  // others may pass (a link must resolve), not list
    path_ = dir_ + "/secret";
    std::ofstream(path_) << kContent;
    ::chmod(path_.c_str(), 0600);
  }
  ~RootOnlyFile() { fs::remove_all(dir_); }
  static constexpr char kContent[] = "root-only secret\n";  // 17 bytes
  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }
  std::string Read() const { return ReadFile(path_); }

 private:
  std::string dir_, path_;
};

// Finding 1 of the hostile-tenant probe, as it was reproduced: a paused job's
// events.jsonl and worker.log replaced by links to a root-only file, then
// job.resume; and validation.json replaced by such a link while the
// validator runs, then the validator killed so that fjordd starts it again.
// Before the fix the root-only file grew by the trainer's output (and the
// worker got a writable descriptor to it), or was truncated and replaced by
// the validator's report. Now the file is unchanged, and the jobs fail with
// an error naming the link.
TEST(SecurityTest, RootNeverWritesThroughLinksAWorkerPlantsInItsJobDirectory) {
  SKIP_UNLESS_ROOT_WITH_TENANT_UIDS();
  WorkerForOtherUsers worker;
  RootOnlyFile secret;
  HarnessOptions o;
  o.cpu_slots = 1;
  DaemonHarness h(WithTenantUids(worker, o));
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  // The long job holds the only slot; the second one waits and is paused.
  ASSERT_OK_AND_ASSIGN(
      slot, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 5000, "step_ms": 20})"))));
  ASSERT_TRUE(h.WaitForStatus(*acme, slot.id, JobStatus::kRunning).ok());
  ASSERT_OK_AND_ASSIGN(
      job, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 20, "step_ms": 10})"))));
  ASSERT_TRUE(h.WaitForStatus(*acme, job.id, JobStatus::kQueued).ok());
  ASSERT_TRUE(acme->PauseJob(job.id).ok());
  const uint32_t acme_id = TenantUid(h, "acme");
  ASSERT_NE(acme_id, 0u);
  const std::string dir = h.storage() + "/acme/jobs/" + job.id;
  ASSERT_EQ(PlantLink(acme_id, dir + "/events.jsonl", secret.path()), 0);
  ASSERT_EQ(PlantLink(acme_id, dir + "/worker.log", secret.path()), 0);
  ASSERT_TRUE(acme->CancelJob(slot.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, slot.id).ok());
  ASSERT_TRUE(acme->ResumeJob(job.id).ok());
  ASSERT_OK_AND_ASSIGN(failed, h.WaitForFinal(*acme, job.id));
  EXPECT_EQ(failed.status, JobStatus::kFailed);
  ASSERT_TRUE(failed.error.has_value());
  EXPECT_THAT(failed.error->message, HasSubstr("worker.log"));
  EXPECT_THAT(failed.error->message, HasSubstr("symbolic link"));
  EXPECT_EQ(secret.Read(), RootOnlyFile::kContent);
  // The job's events are all in the store all the same.
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  EXPECT_EQ(events.events.back().data.value("status", ""), "failed");

  // validation.json: a link planted while the validator runs; the validator
  // killed; fjordd starts it again (it has restarts left).
  ASSERT_OK_AND_ASSIGN(
      slow, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 2, "validate_ms": 3000})"))));
  const pid_t validator = WaitForValidator(h, slow.id);
  ASSERT_NE(validator, 0) << "no validator for " << slow.id;
  ASSERT_EQ(
      PlantLink(acme_id, h.storage() + "/acme/jobs/" + slow.id + "/validation.json", secret.path()),
      0);
  ::kill(validator, SIGKILL);
  ASSERT_OK_AND_ASSIGN(refused, h.WaitForFinal(*acme, slow.id));
  EXPECT_EQ(refused.status, JobStatus::kFailed);
  ASSERT_TRUE(refused.error.has_value());
  EXPECT_THAT(refused.error->message, HasSubstr("validation.json"));
  EXPECT_EQ(secret.Read(), RootOnlyFile::kContent);
  struct stat st {};
  ASSERT_EQ(::stat(secret.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// Earlier fjordd versions opened worker.log as root, so a job stopped under
// one has a root-owned log in its directory; the worker now opens its log
// itself, as its uid, and could not append to it. fjordd gives such a file to
// the worker's ids before the launch, and the job resumes with its old log.
TEST(SecurityTest, ALogAnEarlierFjorddMadeAsRootIsGivenToTheWorker) {
  SKIP_UNLESS_ROOT_WITH_TENANT_UIDS();
  WorkerForOtherUsers worker;
  DaemonHarness h(WithTenantUids(worker));
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(
      job, acme->CreateJob(SpecWithData(
               *acme, FakeData(R"({"steps": 400, "step_ms": 20, "checkpoint_every": 2})"))));
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [](const Job& j) {
                 return j.status == JobStatus::kRunning && j.step >= 4;
               }).ok());
  ASSERT_TRUE(acme->PauseJob(job.id).ok());
  ASSERT_TRUE(h.WaitForStatus(*acme, job.id, JobStatus::kPaused).ok());
  const std::string log = h.storage() + "/acme/jobs/" + job.id + "/worker.log";
  ASSERT_EQ(::unlink(log.c_str()), 0);
  std::ofstream(log) << "written by an earlier fjordd\n";
  ASSERT_EQ(::chown(log.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(log.c_str(), 0640), 0);
  ASSERT_TRUE(acme->ResumeJob(job.id).ok());
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [](const Job& j) {
                 return j.status == JobStatus::kRunning && j.step >= 8;
               }).ok());
  struct stat st {};
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, TenantUid(h, "acme"));
  EXPECT_THAT(ReadFile(log), ::testing::StartsWith("written by an earlier fjordd\n"));
  ASSERT_TRUE(acme->CancelJob(job.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
}

// The read side of finding 1: a validator that fails without a report makes
// fjordd quote the end of worker.log in the job's error; a worker that
// replaced worker.log with a link to a root-only file must not get that
// file's content back through job.get.
TEST(SecurityTest, RootNeverReadsThroughLinksAWorkerPlantsInItsJobDirectory) {
  SKIP_UNLESS_ROOT_WITH_TENANT_UIDS();
  WorkerForOtherUsers worker;
  RootOnlyFile secret;
  HarnessOptions o;
  o.max_restarts = 0;
  DaemonHarness h(WithTenantUids(worker, o));
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  // Without a link, the log's end is the error (what the check protects).
  ASSERT_OK_AND_ASSIGN(
      plain, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"validate": "no_report"})"))));
  ASSERT_OK_AND_ASSIGN(plain_done, h.WaitForFinal(*acme, plain.id));
  ASSERT_TRUE(plain_done.error.has_value());
  EXPECT_THAT(plain_done.error->message,
              HasSubstr("fake validator: refusing this data without a report"));
  // With worker.log swapped for a link while the validator runs.
  ASSERT_OK_AND_ASSIGN(
      job, acme->CreateJob(
               SpecWithData(*acme, FakeData(R"({"validate": "no_report", "validate_ms": 2000})"))));
  const pid_t validator = WaitForValidator(h, job.id);
  ASSERT_NE(validator, 0) << "no validator for " << job.id;
  const uint32_t acme_id = TenantUid(h, "acme");
  ASSERT_EQ(PlantLink(acme_id, h.storage() + "/acme/jobs/" + job.id + "/worker.log", secret.path()),
            0);
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  EXPECT_EQ(done.status, JobStatus::kFailed);
  ASSERT_TRUE(done.error.has_value());
  EXPECT_THAT(done.error->message, ::testing::Not(HasSubstr("root-only secret")));
  ASSERT_OK_AND_ASSIGN(events, acme->ListEvents(job.id, 0, 1000));
  for (const auto& e : events.events)
    EXPECT_THAT(e.message, ::testing::Not(HasSubstr("root-only secret")));
}

// Finding 2 as reproduced: an ended job whose directory holds b/ with 30
// directories of 200 files; job.delete; as the tenant's uid, b/ is swapped
// for a link to a root-only directory once the deletion has started. Before
// the fix the daemon deleted the root-only directory's 200 files. Also: links
// already in the tree are removed as links.
TEST(SecurityTest, JobDeleteRemovesNothingOutsideTheJobWhenAWorkerSwapsInALink) {
  SKIP_UNLESS_ROOT_WITH_TENANT_UIDS();
  WorkerForOtherUsers worker;
  RootOnlyFile secret;
  const std::string victim = secret.dir() + "/victim";
  fs::create_directories(victim);
  for (int i = 0; i < 200; ++i) std::ofstream(absl::StrCat(victim, "/f", i)) << "keep";
  ::chmod(victim.c_str(), 0700);
  DaemonHarness h(WithTenantUids(worker));
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(
      job, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 3, "step_ms": 10})"))));
  ASSERT_OK_AND_ASSIGN(done, h.WaitForFinal(*acme, job.id));
  ASSERT_EQ(done.status, JobStatus::kSucceeded);
  const uint32_t acme_id = TenantUid(h, "acme");
  const std::string dir = h.storage() + "/acme/jobs/" + job.id;
  ASSERT_EQ(RunAs(acme_id,
                  [&] {
                    if (::mkdir((dir + "/b").c_str(), 0755) != 0) return 1;
                    for (int d = 0; d < 30; ++d) {
                      const std::string sub = absl::StrCat(dir, "/b/d", d);
                      if (::mkdir(sub.c_str(), 0755) != 0) return 2;
                      for (int f = 0; f < 200; ++f) {
                        const int fd =
                            ::open(absl::StrCat(sub, "/f", f).c_str(), O_WRONLY | O_CREAT, 0644);
                        if (fd < 0) return 3;
                        ::close(fd);
                      }
                    }
                    // Links already there, to the root-only directory and a file in it.
                    if (::symlink(victim.c_str(), (dir + "/link-dir").c_str()) != 0) return 4;
                    if (::symlink((victim + "/f0").c_str(), (dir + "/b/d0/link-file").c_str()) != 0)
                      return 5;
                    return 0;
                  }),
            0);
  // The swapper: as soon as any file of b/ is gone, b/ becomes a link.
  const pid_t swapper = RunAs(
      acme_id,
      [&] {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (std::chrono::steady_clock::now() < deadline) {
          bool started = false;
          for (int d = 0; d < 30 && !started; ++d) {
            started = ::access(absl::StrCat(dir, "/b/d", d, "/f199").c_str(), F_OK) != 0;
          }
          if (!started) continue;
          (void)::rename((dir + "/b").c_str(), (dir + "/b-away").c_str());
          return ::symlink(victim.c_str(), (dir + "/b").c_str()) == 0 ? 0 : 1;
        }
        return 2;
      },
      /*wait=*/false);
  absl::StatusOr<protocol::ServerMessage> deleted =
      acme->Call("job.delete", json{{"job_id", job.id}});
  int status = 0;
  ::waitpid(swapper, &status, 0);
  EXPECT_TRUE(deleted.ok() || deleted.status().code() == absl::StatusCode::kUnavailable)
      << deleted.status();
  size_t left = 0;
  for (const auto& e : fs::directory_iterator(victim)) left += e.is_regular_file();
  EXPECT_EQ(left, 200u) << "the daemon deleted files outside the job's directory";
  EXPECT_EQ(ReadFile(victim + "/f0"), "keep");
  // A retry removes whatever the race left; the job is gone.
  if (!deleted.ok()) {
    ASSERT_TRUE(acme->Call("job.delete", json{{"job_id", job.id}}).ok());
  }
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_EQ(acme->GetJob(job.id).status().code(), absl::StatusCode::kNotFound);
}

// Finding 3 as reproduced: adapter.files on a finished job of acme (its
// listing is cached), then acme's uid replaces the job's adapter/ with a link
// to zeta's adapter directory: adapter.download must not return zeta's
// adapter. Nor through a link in place of one adapter file.
TEST(SecurityTest, AdapterDownloadNeverFollowsALinkToAnotherTenantsAdapter) {
  SKIP_UNLESS_ROOT_WITH_TENANT_UIDS();
  WorkerForOtherUsers worker;
  DaemonHarness h(WithTenantUids(worker));
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto zeta = h.Zeta();
  ASSERT_OK_AND_ASSIGN(
      a, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 2, "step_ms": 10})"))));
  ASSERT_OK_AND_ASSIGN(
      z, zeta->CreateJob(SpecWithData(
             *zeta, FakeData(R"({"steps": 2, "step_ms": 10, "adapter_bytes": 4096})"))));
  ASSERT_EQ(h.WaitForFinal(*acme, a.id)->status, JobStatus::kSucceeded);
  ASSERT_EQ(h.WaitForFinal(*zeta, z.id)->status, JobStatus::kSucceeded);
  ASSERT_OK_AND_ASSIGN(zeta_files, zeta->ListAdapterFiles(z.id));
  ASSERT_OK_AND_ASSIGN(acme_files, acme->ListAdapterFiles(a.id));  // cached from here on
  std::set<std::string> zeta_sha;
  for (const auto& f : zeta_files) zeta_sha.insert(f.sha256);
  const uint32_t acme_id = TenantUid(h, "acme");
  const std::string adir = h.storage() + "/acme/jobs/" + a.id;
  const std::string zdir = h.storage() + "/zeta/jobs/" + z.id + "/adapter";
  auto download_all = [&](const std::string& what) {
    for (const auto& f : acme_files) {
      absl::StatusOr<protocol::ServerMessage> m =
          acme->Call("adapter.download", json{{"job_id", a.id}, {"name", f.name}, {"offset", 0}});
      if (!m.ok()) {
        EXPECT_EQ(m.status().code(), absl::StatusCode::kUnavailable) << what << ": " << m.status();
        continue;
      }
      ADD_FAILURE() << what << ": " << f.name << " was served through the link (" << m->body.dump()
                    << ")";
      EXPECT_FALSE(zeta_sha.count(Sha256Hex(m->data.value_or(""))));
    }
  };
  ASSERT_EQ(
      RunAs(acme_id,
            [&] {
              if (::rename((adir + "/adapter").c_str(), (adir + "/adapter-away").c_str()) != 0)
                return 1;
              return ::symlink(zdir.c_str(), (adir + "/adapter").c_str()) == 0 ? 0 : 2;
            }),
      0);
  download_all("adapter/ replaced by a link");
  // The same with the directory back and one file replaced by a link.
  ASSERT_EQ(
      RunAs(acme_id,
            [&] {
              if (::unlink((adir + "/adapter").c_str()) != 0) return 1;
              if (::rename((adir + "/adapter-away").c_str(), (adir + "/adapter").c_str()) != 0)
                return 2;
              (void)::unlink((adir + "/adapter/adapter_model.safetensors").c_str());
              return ::symlink((zdir + "/adapter_model.safetensors").c_str(),
                               (adir + "/adapter/adapter_model.safetensors").c_str()) == 0
                         ? 0
                         : 3;
            }),
      0);
  absl::StatusOr<protocol::ServerMessage> m =
      acme->Call("adapter.download",
                 json{{"job_id", a.id}, {"name", "adapter_model.safetensors"}, {"offset", 0}});
  ASSERT_FALSE(m.ok()) << "served through a link: " << m->body.dump();
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(m.status().message(), HasSubstr("symbolic link"));
  // The untouched file is still served.
  ASSERT_OK_AND_ASSIGN(
      config, acme->Call("adapter.download",
                         json{{"job_id", a.id}, {"name", "adapter_config.json"}, {"offset", 0}}));
  EXPECT_THAT(config.data.value_or(""), HasSubstr("peft_type"));
}

// ---- a tenant against the node's resources (findings 4-10) ---------------

// Finding 4: one key's connections cannot take every slot (1044 connections
// of one key locked every other tenant and the admin out before), and the
// last slots are kept for admins.
TEST(SecurityTest, OneKeyCannotTakeEveryConnection) {
  HarnessOptions o;
  o.limits_extra =
      "  max_peers: 12\n  max_peers_per_key: 4\n  admin_reserved_peers: 2\n  "
      "heartbeat_interval_ms: 5000\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  std::vector<std::unique_ptr<RawPeer>> acme;
  std::vector<absl::StatusOr<protocol::ServerMessage>> replies;
  for (int i = 0; i < 6; ++i) {
    acme.push_back(std::make_unique<RawPeer>(h, h.acme_keys()));
    acme.back()->Send("p", "ping", json::object());
    replies.push_back(acme.back()->Final("p"));
  }
  // The harness's start-up client was acme's too: at most 4 tracked in all.
  int ok = 0, refused = 0;
  for (const auto& r : replies) {
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->status == "OK") {
      ++ok;
    } else {
      ++refused;
      EXPECT_EQ(r->status, "RESOURCE_EXHAUSTED");
      absl::Status s = protocol::StatusFromReply(r->status, r->body);
      EXPECT_EQ(protocol::ParamOf(s), "peers");
      EXPECT_THAT(s.message(), HasSubstr("client key 'acme-ci' has 4 connections open"));
    }
  }
  EXPECT_LE(ok, 4);
  EXPECT_GE(refused, 2);
  // Another tenant still gets in, up to the slots kept for admins.
  std::vector<std::unique_ptr<RawPeer>> zeta;
  absl::Status last;
  for (int i = 0; i < 8 && last.ok(); ++i) {
    zeta.push_back(std::make_unique<RawPeer>(h, h.zeta_keys()));
    zeta.back()->Send("p", "ping", json::object());
    ASSERT_OK_AND_ASSIGN(r, zeta.back()->Final("p"));
    last = protocol::StatusFromReply(r.status, r.body);
    if (i == 0) {
      EXPECT_TRUE(last.ok()) << "another tenant was locked out: " << last;
    }
  }
  // The admin gets in whatever the tenants hold.
  RawPeer admin(h, h.admin_keys());
  admin.Send("p", "ping", json::object());
  ASSERT_OK_AND_ASSIGN(pong, admin.Final("p"));
  EXPECT_EQ(pong.status, "OK") << pong.body.dump();
}

// Finding 5: oversize messages are refused without being kept: a frame
// larger than a whole message is dropped by ZeroMQ (ZMQ_MAXMSGSIZE), frames
// that add up to too much get RESOURCE_EXHAUSTED, frames beyond the
// protocol's get INVALID_ARGUMENT; the daemon keeps serving.
TEST(SecurityTest, OversizeMessagesAreRefusedAndTheDaemonKeepsServing) {
  HarnessOptions o;
  o.limits_extra =
      "  max_message_bytes: 65536\n  max_body_bytes: 16384\n  upload_chunk_bytes: 16384\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  const protocol::Frames header = {"", "FJD01", std::string(1, '\x01')};
  auto request = [&](const std::string& id, std::vector<std::string> rest) {
    protocol::Frames frames = header;
    frames.push_back(id);
    frames.insert(frames.end(), rest.begin(), rest.end());
    return frames;
  };
  // Three frames of 30 KiB: each under the frame limit, 90 KiB in all.
  RawPeer a(h, h.acme_keys());
  a.SendFrames(request(
      "big", {"ping", std::string(30000, ' '), std::string(30000, 'x'), std::string(30000, 'y')}));
  ASSERT_OK_AND_ASSIGN(too_big, a.Next());
  EXPECT_EQ(too_big.request_id, "big");
  EXPECT_EQ(too_big.status, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(protocol::ParamOf(protocol::StatusFromReply(too_big.status, too_big.body)), "message");
  // 200 small frames: more than a request has.
  std::vector<std::string> many = {"ping", "{}"};
  for (int i = 0; i < 200; ++i) many.push_back("z");
  a.SendFrames(request("many", many));
  ASSERT_OK_AND_ASSIGN(too_many, a.Next());
  EXPECT_EQ(too_many.request_id, "many");
  EXPECT_EQ(too_many.status, "INVALID_ARGUMENT");
  EXPECT_THAT(protocol::StatusFromReply(too_many.status, too_many.body).message(),
              HasSubstr("message has 206 frames; expected 6 or 7"));
  // One frame larger than a whole message: ZeroMQ drops it (and the
  // connection) before allocating it; nothing comes back.
  RawPeer b(h, h.acme_keys());
  b.SendFrames(request("huge", {"ping", std::string(70000, ' ')}));
  EXPECT_EQ(b.Next(3000).status().code(), absl::StatusCode::kDeadlineExceeded);
  // The daemon serves the next request, on the first connection too.
  a.SendFrames(request("after", {"ping", "{}"}));
  ASSERT_OK_AND_ASSIGN(pong, a.Next());
  EXPECT_EQ(pong.request_id, "after");
  EXPECT_EQ(pong.status, "OK");
  EXPECT_TRUE(h.Acme()->Ping().ok());
}

// Finding 6: validators are bounded per node and per tenant; the jobs beyond
// wait in `validating` and are all validated in the end.
TEST(SecurityTest, ValidatorsAreBoundedPerNodeAndPerTenant) {
  HarnessOptions o;
  o.scheduler_extra = "  max_validators: 2\n  max_validators_per_tenant: 1\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto zeta = h.Zeta();
  const std::string data = FakeData(R"({"steps": 1, "validate_ms": 600})");
  std::vector<std::string> acme_jobs;
  protocol::JobSpec spec = SpecWithData(*acme, data);
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(j, acme->CreateJob(spec));
    acme_jobs.push_back(j.id);
  }
  ASSERT_OK_AND_ASSIGN(zj, zeta->CreateJob(SpecWithData(*zeta, data)));
  int most_acme = 0, most_all = 0;
  bool zeta_alongside = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    int acme_now = 0, all_now = 0;
    for (const std::string& id : acme_jobs) acme_now += ValidatorOf(h, id) != 0;
    const bool zeta_now = ValidatorOf(h, zj.id) != 0;
    all_now = acme_now + zeta_now;
    zeta_alongside |= zeta_now && acme_now > 0;
    most_acme = std::max(most_acme, acme_now);
    most_all = std::max(most_all, all_now);
    bool all_done = true;
    for (const std::string& id : acme_jobs) {
      absl::StatusOr<Job> j = acme->GetJob(id);
      all_done &= j.ok() && j->status != JobStatus::kValidating;
    }
    if (all_done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(most_acme, 1) << "acme's validators at once";
  EXPECT_LE(most_all, 2);
  EXPECT_TRUE(zeta_alongside) << "zeta's job waited for acme's four";
  for (const std::string& id : acme_jobs) {
    ASSERT_OK_AND_ASSIGN(j, h.WaitForFinal(*acme, id));
    EXPECT_EQ(j.status, JobStatus::kSucceeded) << id;
  }
}

// Finding 7: an upload a killed daemon left half-written is removed when the
// daemon starts again (it counted against the quota and nothing could delete
// it); another node's upload in progress on the same storage root is left
// alone until it has been idle for twice limits.upload_idle_s.
TEST(SecurityTest, HalfWrittenUploadsAreRemovedAtStart) {
  HarnessOptions o;
  o.limits_extra = "  upload_idle_s: 60\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(kept, acme->UploadBytes("{}\n", "kept.jsonl"));
  ASSERT_OK_AND_ASSIGN(begun,
                       acme->Call("file.upload.begin", json{{"filename", "big.jsonl"},
                                                            {"bytes", 100000},
                                                            {"sha256", std::string(64, 'a')}}));
  const std::string upload_id = begun.body["upload_id"];
  ASSERT_TRUE(acme->Call("file.upload.chunk", json{{"upload_id", upload_id}, {"offset", 0}},
                         std::string(50000, 'c'))
                  .ok());
  const std::string files = h.storage() + "/acme/files";
  auto leftovers = [&]() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(files)) {
      if (absl::StartsWith(e.path().filename().string(), ".upload-"))
        out.push_back(e.path().filename().string());
    }
    return out;
  };
  ASSERT_EQ(leftovers().size(), 1u);
  EXPECT_THAT(leftovers()[0], ::testing::EndsWith(upload_id));
  // Another node's: one fresh, one idle for long.
  std::ofstream(files + "/.upload-0123456789ab-upl-fresh") << "other node";
  std::ofstream(files + "/.upload-0123456789ab-upl-stale") << "other node, gone";
  struct timespec old_times[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(
      ::utimensat(AT_FDCWD, (files + "/.upload-0123456789ab-upl-stale").c_str(), old_times, 0), 0);
  acme.reset();
  h.Kill9();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  EXPECT_THAT(leftovers(), ::testing::ElementsAre(".upload-0123456789ab-upl-fresh"));
  acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(list, acme->Call("file.list", json::object()));
  EXPECT_EQ(list.body["usage_bytes"].get<uint64_t>(), kept.bytes) << list.body.dump();
  EXPECT_EQ(acme->Call("file.upload.finish", json{{"upload_id", upload_id}}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(h.log(), HasSubstr("removed an unfinished upload"));
}

// Finding 8: file.list pages; files count against limits.max_tenant_files
// (zero-byte files were unlimited: the quota counted bytes only).
TEST(SecurityTest, FileListPagesAndFilesCountAgainstTheQuota) {
  HarnessOptions o;
  o.limits_extra = "  max_tenant_files: 5\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(f, acme->UploadBytes("", absl::StrCat("empty-", i, ".jsonl")));
    ids.push_back(f.id);
  }
  absl::Status refused = acme->UploadBytes("", "one-too-many.jsonl").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_EQ(protocol::ParamOf(refused), "tenant");
  EXPECT_THAT(refused.message(), HasSubstr("has 5 of its 5 files and directories"));
  ASSERT_OK_AND_ASSIGN(first, acme->Call("file.list", json{{"limit", 2}}));
  EXPECT_EQ(first.body["usage_files"], 5);
  EXPECT_EQ(first.body["quota_files"], 5);
  ASSERT_EQ(first.body["files"].size(), 2u);
  EXPECT_TRUE(first.body["has_more"].get<bool>());
  std::vector<std::string> seen;
  json page = first.body;
  while (true) {
    for (const json& f : page["files"]) seen.push_back(f["id"]);
    if (!page["has_more"].get<bool>()) break;
    ASSERT_OK_AND_ASSIGN(next, acme->Call("file.list", json{{"limit", 2}, {"after", seen.back()}}));
    page = next.body;
  }
  EXPECT_EQ(seen, std::vector<std::string>(ids.rbegin(), ids.rend()));  // newest first, each once
  EXPECT_EQ(h.Zeta()->Call("file.list", json{{"after", ids[0]}}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(acme->Call("file.list", json{{"limit", 1001}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // With the area full, job.create is refused too (a job's directory holds
  // files of its own); another tenant is not affected.
  protocol::JobSpec spec;
  spec.model = "tiny";
  spec.training_file = ids[1];
  absl::Status full = acme->CreateJob(spec).status();
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_EQ(protocol::ParamOf(full), "tenant");
  EXPECT_TRUE(h.Zeta()->UploadBytes("", "empty.jsonl").ok());
  // Deleting frees a file's slot at once.
  ASSERT_TRUE(acme->DeleteFile(ids[0]).ok());
  EXPECT_TRUE(acme->UploadBytes("", "now-it-fits.jsonl").ok());
}

// Finding 10: the deviations from docs/protocol.md, decided: CANCEL of a
// stream that is not open is answered (NOT_FOUND); a data frame on a command
// that takes none, a body with a byte order mark and file names with control,
// separator or bidi characters are refused.
TEST(SecurityTest, ProtocolDeviationsAreRefusedOrAnswered) {
  DaemonHarness h;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  RawPeer peer(h, h.acme_keys());
  peer.SendFrames({"", "FJD01", std::string(1, '\x06'), "no-such-stream"});
  absl::StatusOr<protocol::ServerMessage> r = peer.Next();
  ASSERT_TRUE(r.ok()) << "CANCEL of an unknown stream got no reply: " << r.status();
  EXPECT_EQ(r->request_id, "no-such-stream");
  EXPECT_EQ(r->status, "NOT_FOUND");
  EXPECT_EQ(protocol::ParamOf(protocol::StatusFromReply(r->status, r->body)), "request_id");
  for (const std::string name :
       {"a\u0085b.jsonl", "a\u2028b.jsonl", "x\u202Egnp.exe", "tab\there"}) {
    absl::Status s =
        acme->Call("file.upload.begin",
                   json{{"filename", name}, {"bytes", 1}, {"sha256", std::string(64, 'a')}})
            .status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(protocol::ParamOf(s), "filename") << name;
  }
  EXPECT_TRUE(acme->Call("file.upload.begin", json{{"filename", "Ünïcödé 训练.jsonl"},
                                                   {"bytes", 1},
                                                   {"sha256", std::string(64, 'a')}})
                  .ok());
}

}  // namespace
}  // namespace fjord::testing
