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
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <filesystem>
#include <fstream>
#include <httplib.h>
#include <zmq.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "daemon/server/config.h"
#include "daemon/protocol/codec.h"
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
namespace fs = std::filesystem;

// The 32 raw bytes of a Z85 key.
std::string RawKey(const std::string& z85) {
  std::string raw(32, '\0');
  EXPECT_NE(zmq_z85_decode(reinterpret_cast<uint8_t*>(raw.data()), z85.c_str()), nullptr);
  return raw;
}

// A raw CURVE DEALER: one connection, requests sent as frames.
class RawPeer {
 public:
  RawPeer(DaemonHarness& h, const CurveKeyPair& keys) : socket_(ctx_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::curve_serverkey, h.server_keys().public_key);
    socket_.set(zmq::sockopt::curve_publickey, keys.public_key);
    socket_.set(zmq::sockopt::curve_secretkey, keys.secret_key);
    socket_.connect(h.endpoint());
  }
  void Send(const std::string& request_id, const std::string& command, const json& body) {
    protocol::ClientMessage m;
    m.request_id = request_id;
    m.command = command;
    m.body = body;
    const protocol::Frames frames = protocol::EncodeClientMessage(m);
    for (size_t i = 0; i < frames.size(); ++i) {
      socket_.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  // The next reply (FINAL or error) to `request_id`, skipping partials and
  // heartbeats.
  absl::StatusOr<protocol::ServerMessage> Final(const std::string& request_id, int timeout_ms = 10000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(200)) == 0) continue;
      protocol::Frames reply;
      while (true) {
        zmq::message_t m;
        (void)socket_.recv(m);
        reply.push_back(m.to_string());
        if (!m.more()) break;
      }
      absl::StatusOr<protocol::ServerMessage> s = protocol::DecodeServerMessage(reply);
      if (!s.ok()) return s.status();
      if (s->type == protocol::MessageType::kFinal && s->request_id == request_id) return s;
    }
    return absl::DeadlineExceededError("no reply to " + request_id);
  }

 private:
  zmq::context_t ctx_;
  zmq::socket_t socket_;
};

// Every file under the harness directory but the key files themselves, and
// the metrics page, after a run that touched every command and error path:
// no secret key appears, Z85 or raw.
TEST(SecurityTest, SecretKeysNeverReachLogsStateStorageOrMetrics) {
  HarnessOptions o;
  o.limits_extra = "  max_message_bytes: 65536\n  max_body_bytes: 16384\n  upload_chunk_bytes: 16384\n";
  DaemonHarness h(o);
  ASSERT_NO_FATAL_FAILURE(h.Start());
  {
    auto acme = h.Acme();
    protocol::JobSpec ok = SpecWithData(*acme, FakeData(R"({"steps": 4, "step_ms": 10, "checkpoint_every": 2})"));
    ASSERT_OK_AND_ASSIGN(j1, acme->CreateJob(ok));
    protocol::JobSpec bad = SpecWithData(*acme, FakeData(R"({"steps": 4, "mode": "fail_user", "crash_at_step": 2})"));
    ASSERT_OK_AND_ASSIGN(j2, acme->CreateJob(bad));
    protocol::JobSpec crash = SpecWithData(*acme, FakeData(R"({"steps": 4, "mode": "crash_once", "crash_at_step": 2})"));
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
                                  {"acme", h.acme_keys()}, {"zeta", h.zeta_keys()}, {"admin", h.admin_keys()}}) {
    secrets.emplace_back(who + " secret key (Z85)", keys.secret_key);
    secrets.emplace_back(who + " secret key (raw)", RawKey(keys.secret_key));
  }
  int scanned = 0;
  for (const auto& entry : fs::recursive_directory_iterator(h.dir())) {
    if (!entry.is_regular_file() || entry.path().parent_path() == fs::path(h.dir() + "/keys")) continue;
    const std::string bytes = ReadFile(entry.path().string());
    ++scanned;
    for (const auto& [what, secret] : secrets) {
      EXPECT_FALSE(absl::StrContains(bytes, secret)) << what << " found in " << entry.path();
    }
  }
  for (const auto& [what, secret] : secrets) EXPECT_FALSE(absl::StrContains(metrics->body, secret)) << what;
  // The scan saw the daemon's log, its SQLite store and the jobs' files.
  EXPECT_GE(scanned, 10);
  EXPECT_TRUE(fs::exists(h.dir() + "/fjordd.log"));
  EXPECT_TRUE(fs::exists(h.dir() + "/state/fjordd.db"));
  EXPECT_THAT(h.log(), HasSubstr(h.server_keys().public_key));  // the public key is logged, on purpose
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
  for (const Case& c : {Case{"/keys/clients.yaml", 0664, "run chmod 644"}, Case{"/keys/clients.yaml", 0646, "run chmod 644"},
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
    EXPECT_THAT(ReadFile(spec.log_path), HasSubstr("server secret key file " + h.dir() + "/keys/server.key is owned by uid 65534"));
    EXPECT_THAT(ReadFile(spec.log_path), ::testing::Not(HasSubstr(h.server_keys().secret_key)));
  }
}

// The connection, stream and upload limits hold for a real client on the
// wire, and refusals say which limit.
TEST(SecurityTest, PeerStreamAndUploadLimitsHold) {
  HarnessOptions o;
  // Peers expire after 3 silent heartbeat intervals: long enough here that
  // the first three clients are still counted when the fourth comes.
  o.limits_extra = "  max_peers: 3\n  max_streams_per_peer: 2\n  heartbeat_interval_ms: 5000\n";
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
    peer.Send(absl::StrCat("u", i), "file.upload.begin", json{{"filename", "x.jsonl"}, {"bytes", 10}, {"sha256", std::string(64, 'a')}});
    ASSERT_OK_AND_ASSIGN(begun, peer.Final(absl::StrCat("u", i)));
    ASSERT_EQ(begun.status, "OK") << begun.body.dump();
  }
  peer.Send("u16", "file.upload.begin", json{{"filename", "x.jsonl"}, {"bytes", 10}, {"sha256", std::string(64, 'a')}});
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
    if (st.ok()) ++accepted;
    else refusal = st;
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

// The daemon's child running `job_id` with --report (the trainer), or 0.
pid_t TrainerOf(const DaemonHarness& h, const std::string& job_id) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string stat = ReadFile(e.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    if (std::atoi(stat.c_str() + close + 4) != h.daemon_pid()) continue;
    const std::string cmdline = ReadFile(e.path().string() + "/cmdline");
    if (absl::StrContains(cmdline, "--report") && absl::StrContains(cmdline, "/" + job_id + "/")) {
      return std::atoi(e.path().filename().c_str());
    }
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
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [](const Job& j) { return j.status == JobStatus::kRunning && j.step >= 2; }).ok());
  // The trainer: the daemon's child whose command line has --report.
  const pid_t trainer = TrainerOf(h, job.id);
  ASSERT_NE(trainer, 0) << "no trainer found";
  const std::string status = ReadFile(absl::StrCat("/proc/", trainer, "/status"));
  const std::string uid = std::to_string(nobody->pw_uid), gid = std::to_string(nobody->pw_gid);
  EXPECT_THAT(status, HasSubstr(absl::StrCat("Uid:\t", uid, "\t", uid, "\t", uid, "\t", uid, "\n")));
  EXPECT_THAT(status, HasSubstr(absl::StrCat("Gid:\t", gid, "\t", gid, "\t", gid, "\t", gid, "\n")));
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
    EXPECT_EQ(st.st_mode & 077, 0u) << f << " is open to group or others (mode " << std::oct << (st.st_mode & 0777)
                                    << "): the worker's user could read it";
  }
  ASSERT_TRUE(acme->CancelJob(job.id).ok());
  ASSERT_TRUE(h.WaitForFinal(*acme, job.id).ok());
}

// worker.tenant_uid_range: each tenant's workers run as a uid of their own,
// the same one after a restart; a tenant's area, files, job directories and
// report sockets are closed to every other tenant's uid; a job still runs to
// a verified adapter.
TEST(SecurityTest, EachTenantsWorkersRunAsItsOwnUidAndCannotReachAnotherTenant) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  if (absl::Status s = TenantUidRangeIsFree(); !s.ok()) GTEST_SKIP() << s;
  WorkerForOtherUsers worker;
  HarnessOptions o;
  o.worker_extra = absl::StrCat("  tenant_uid_range: ", kTenantUids, "\n");
  o.worker_program = worker.program();
  DaemonHarness h(o);
  h.OpenToOtherUsers();
  ASSERT_NO_FATAL_FAILURE(h.Start());
  auto acme = h.Acme();
  auto zeta = h.Zeta();
  ASSERT_OK_AND_ASSIGN(done, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 3, "step_ms": 10})"))));
  ASSERT_OK_AND_ASSIGN(a, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 500, "step_ms": 20})"))));
  ASSERT_OK_AND_ASSIGN(z, zeta->CreateJob(SpecWithData(*zeta, FakeData(R"({"steps": 500, "step_ms": 20})"))));
  ASSERT_OK_AND_ASSIGN(finished, h.WaitForFinal(*acme, done.id));
  EXPECT_EQ(finished.status, JobStatus::kSucceeded) << (finished.error ? finished.error->message : "");
  for (auto [c, id] : {std::pair{acme.get(), a.id}, std::pair{zeta.get(), z.id}}) {
    ASSERT_TRUE(h.WaitFor(*c, id, [](const Job& j) { return j.status == JobStatus::kRunning && j.step >= 2; }).ok());
  }
  // The ids come from the claims on the storage root, and the trainers run as them.
  std::map<std::string, uint32_t> ids;
  for (const auto& e : fs::directory_iterator(h.storage() + "/.fjord-tenant-ids")) {
    ids[std::string(absl::StripSuffix(ReadFile(e.path().string()), "\n"))] = std::stoul(e.path().filename().string());
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
    EXPECT_EQ(absl::StripAsciiWhitespace(status.substr(groups + 8, status.find('\n', groups + 1) - groups - 8)), "")
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
  EXPECT_EQ(std::get<0>(owner(acme_area + "/jobs/" + done.id + "/adapter/adapter_model.safetensors")), acme_id);
  EXPECT_EQ(owner(h.dir() + "/state/run/" + z.id + ".sock"), Own(zeta_id, zeta_id, 0600));
  // acme's uid reaches its own things and none of zeta's.
  EXPECT_EQ(AccessAs(acme_id, acme_area + "/jobs/" + a.id + "/job.yaml", false), 0);
  EXPECT_EQ(AccessAs(acme_id, h.dir() + "/state/run/" + a.id + ".sock", true), 0);
  EXPECT_EQ(AccessAs(acme_id, zeta_file, false), EACCES);
  EXPECT_EQ(AccessAs(acme_id, zeta_area + "/jobs/" + z.id + "/job.yaml", false), EACCES);
  EXPECT_EQ(AccessAs(acme_id, h.dir() + "/state/run/" + z.id + ".sock", true), EACCES);
  EXPECT_EQ(AccessAs(acme_id, h.storage() + "/.fjord-tenant-ids/" + std::to_string(acme_id), false), EACCES);
  EXPECT_EQ(AccessAs(zeta_id, acme_area + "/jobs/" + done.id + "/adapter/adapter_config.json", false), EACCES);
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
  ASSERT_OK_AND_ASSIGN(again, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 500, "step_ms": 20})"))));
  ASSERT_TRUE(h.WaitFor(*acme, again.id, [](const Job& j) { return j.status == JobStatus::kRunning && j.step >= 1; }).ok());
  const pid_t trainer = TrainerOf(h, again.id);
  ASSERT_NE(trainer, 0);
  EXPECT_THAT(ReadFile(absl::StrCat("/proc/", trainer, "/status")), HasSubstr(absl::StrCat("Uid:\t", acme_id, "\t")));
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
      job, acme->CreateJob(SpecWithData(*acme, FakeData(R"({"steps": 400, "step_ms": 20, "checkpoint_every": 2})"))));
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [](const Job& j) { return j.status == JobStatus::kRunning && j.step >= 4; }).ok());
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
  config.replace(config.find("  user: nobody\n"), 15, absl::StrCat("  tenant_uid_range: ", kTenantUids, "\n"));
  std::ofstream(h.config_path()) << config;
  ASSERT_NO_FATAL_FAILURE(h.Start());
  acme = h.Acme();
  ASSERT_OK_AND_ASSIGN(resumed, h.WaitFor(*acme, job.id, [](const Job& j) { return j.status == JobStatus::kRunning; }));
  const uint32_t acme_id = std::stoul(std::string(fs::directory_iterator(h.storage() + "/.fjord-tenant-ids")->path().filename()));
  const pid_t trainer = TrainerOf(h, job.id);
  ASSERT_NE(trainer, 0);
  EXPECT_THAT(ReadFile(absl::StrCat("/proc/", trainer, "/status")), HasSubstr(absl::StrCat("Uid:\t", acme_id, "\t")));
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [&](const Job& j) { return j.step >= resumed.step + 4; }).ok());
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
    return c.Call("file.upload.begin", json{{"filename", "t.jsonl"}, {"bytes", bytes}, {"sha256", std::string(64, 'a')}});
  };
  ASSERT_OK_AND_ASSIGN(a, acme->UploadBytes(FakeData(R"({"steps": 2, "step_ms": 10})", 8), "train.jsonl"));
  const uint64_t after_a = usage(*acme);
  EXPECT_GE(after_a, a.bytes);
  // An upload in progress counts at its announced size: 3000 fit, then 100 more do not.
  ASSERT_TRUE(begin(*acme, 3000).ok());
  absl::Status over = begin(*acme, 4096 - after_a - 3000 + 1).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_EQ(protocol::ParamOf(over), "bytes");
  EXPECT_THAT(over.message(), HasSubstr(absl::StrCat("tenant 'acme' uses ", after_a + 3000, " of its 4096 bytes")));
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
  ASSERT_OK_AND_ASSIGN(job, acme->CreateJob(SpecWithData(
                                *acme, FakeData(R"({"steps": 2000, "step_ms": 20, "checkpoint_every": 2, "checkpoint_bytes": 30720})"))));
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
  ASSERT_TRUE(h.WaitFor(*acme, job.id, [&](const Job& j) {
                 return j.status == JobStatus::kRunning && j.step >= paused.step + 12;
               }, 60).ok());
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
  for (const auto& [id, field] : {std::pair{spec.training_file, "training_file"}, std::pair{keep.id, "validation_file"}}) {
    absl::Status busy = acme->Call("file.delete", json{{"file_id", id}}).status();
    EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition) << busy;
    EXPECT_EQ(protocol::ParamOf(busy), "file_id");
    EXPECT_THAT(busy.message(), HasSubstr(absl::StrCat("is the ", field, " of job ", job.id, ", which is running")));
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
  replace_keys(absl::StrCat("clients:\n  - {name: acme-ci, public_key: \"", h.acme_keys().public_key,
                            "\", tenant: acme}\n  - {name: newco-ci, public_key: \"", newco.public_key,
                            "\", tenant: newco}\n"));
  ASSERT_EQ(::kill(h.daemon_pid(), SIGHUP), 0);
  ASSERT_TRUE(wait_for_log("keys file reloaded", 1)) << h.log();
  absl::Status revoked = zeta->Ping().status();
  EXPECT_EQ(revoked.code(), absl::StatusCode::kUnauthenticated) << revoked;
  EXPECT_THAT(revoked.message(), HasSubstr("no longer) in the keys file"));
  EXPECT_EQ(h.Connect(h.zeta_keys(), 3000, 0)->Ping().status().code(), absl::StatusCode::kUnauthenticated);
  ASSERT_OK_AND_ASSIGN(hello, h.Connect(newco, 3000, 0)->Ping());
  EXPECT_EQ(hello.tenant, "newco");

  // A broken file (a short key), and one others may write: nothing changes.
  replace_keys("clients:\n  - {name: x, public_key: \"short\", tenant: x}\n");
  ASSERT_EQ(::kill(h.daemon_pid(), SIGHUP), 0);
  ASSERT_TRUE(wait_for_log("keys file not reloaded", 1)) << h.log();
  replace_keys(absl::StrCat("clients:\n  - {name: zeta-dev, public_key: \"", h.zeta_keys().public_key,
                            "\", tenant: zeta}\n"));
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
  protocol::JobSpec spec = SpecWithData(*acme, FakeData(R"({"steps": 4, "step_ms": 10, "checkpoint_every": 2})"));
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

}  // namespace
}  // namespace fjord::testing
