// A real fjordd process for integration tests: a temp directory with a
// state dir, a storage root, CURVE keys for three clients (tenants "acme" and
// "zeta", and an admin), a keys file, a tiny "model" directory, and a config
// listening on a free loopback TCP port and an ipc socket. The fake worker
// (daemon/worker/fake_worker) stands in for fjord-train unless a test names
// another program. Everything is removed, and every process killed, when the
// harness is destroyed. RawPeer speaks the wire protocol directly.
#ifndef FJORD_TESTS_INTEGRATION_DAEMON_HARNESS_H_
#define FJORD_TESTS_INTEGRATION_DAEMON_HARNESS_H_

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "daemon/protocol/codec.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/messages.h"
#include "daemon/protocol/protocol.h"
#include "daemon/worker/worker_process.h"
#include "gtest/gtest.h"
#include "runtime/util/net.h"
#include "sdk/cpp/client.h"

// `auto lhs = *expr` for an absl::StatusOr<T> expression; a failed status
// fails the test with the status in the message.
#define ASSERT_OK_AND_ASSIGN(lhs, expr)            \
  auto lhs##_or = (expr);                          \
  ASSERT_TRUE(lhs##_or.ok()) << lhs##_or.status(); \
  auto lhs = std::move(*lhs##_or)

namespace fjord::testing {

inline int FreeTcpPort() { return FreeLoopbackPort(); }

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A training file for the fake worker: its script line, then `lines` valid
// examples.
inline std::string FakeData(const std::string& script_json, int lines = 4) {
  std::string s = "{\"fake_worker\": " + script_json + "}\n";
  for (int i = 0; i < lines; ++i)
    s += "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
         "\"content\": \"hello\"}]}\n";
  return s;
}

struct HarnessOptions {
  std::string worker_program;   // "" = the fake worker
  std::string model_dir;        // "" = a stub directory
  std::string extra_config;     // appended YAML (top-level sections must not repeat)
  std::string worker_extra;     // lines inside the worker: section
  std::string limits_extra;     // lines inside the limits: section
  std::string scheduler_extra;  // lines inside the scheduler: section
  std::string metrics_extra;    // lines inside the metrics: section
  int cpu_slots = 2;
  double heartbeat_timeout_s = 2;
  int max_restarts = 2;
  double validation_timeout_s = 20;
  std::string storage_root;  // "" = <dir>/storage (created)
};

class DaemonHarness {
 public:
  explicit DaemonHarness(HarnessOptions o = {}) : options_(std::move(o)) {
    char tmpl[] = "/tmp/fjit-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::filesystem::create_directories(dir_ + "/storage");
    std::filesystem::create_directories(dir_ + "/keys");
    model_dir_ = options_.model_dir;
    if (model_dir_.empty()) {
      model_dir_ = dir_ + "/model";
      std::filesystem::create_directories(model_dir_);
      std::ofstream(model_dir_ + "/config.json") << "{}";
    }
    server_keys_ = *GenerateCurveKeyPair();
    EXPECT_TRUE(WriteCurveKeyFiles(dir_ + "/keys/server", server_keys_).ok());
    acme_ = *GenerateCurveKeyPair();
    zeta_ = *GenerateCurveKeyPair();
    admin_ = *GenerateCurveKeyPair();
    std::ofstream(dir_ + "/keys/clients.yaml")
        << "clients:\n"
        << "  - {name: acme-ci, public_key: \"" << acme_.public_key << "\", tenant: acme}\n"
        << "  - {name: zeta-dev, public_key: \"" << zeta_.public_key << "\", tenant: zeta}\n"
        << "  - {name: ops, public_key: \"" << admin_.public_key
        << "\", tenant: ops, role: admin}\n";
    ::chmod((dir_ + "/keys/clients.yaml").c_str(), 0644);
    port_ = FreeTcpPort();
    metrics_port_ = FreeTcpPort();
    const std::string worker = options_.worker_program.empty()
                                   ? std::filesystem::absolute("daemon/worker/fake_worker").string()
                                   : options_.worker_program;
    std::ofstream(dir_ + "/fjordd.yaml")
        << "node_name: test-node\n"
        << "state_dir: " << dir_ << "/state\n"
        << "storage_root: " << storage() << "\n"
        << "listen: [\"tcp://127.0.0.1:" << port_ << "\", \"ipc://" << dir_ << "/fjordd.sock\"]\n"
        << "security:\n  server_secret_key_file: " << dir_ << "/keys/server.key\n"
        << "  keys_file: " << dir_ << "/keys/clients.yaml\n"
        << "models:\n  tiny: " << model_dir_ << "\n"
        << "worker:\n  program: " << worker
        << "\n  heartbeat_timeout_s: " << options_.heartbeat_timeout_s << "\n  stop_grace_s: 5\n"
        << "  validation_timeout_s: " << options_.validation_timeout_s
        << "\n  max_restarts: " << options_.max_restarts << "\n"
        << options_.worker_extra << "scheduler:\n  cpu_slots: " << options_.cpu_slots << "\n"
        << options_.scheduler_extra << "limits:\n  heartbeat_interval_ms: 200\n"
        << options_.limits_extra << "metrics:\n  listen: 127.0.0.1:" << metrics_port_ << "\n"
        << options_.metrics_extra << "logging:\n  level: debug\n"
        << options_.extra_config;
  }

  ~DaemonHarness() {
    daemon_.reset();  // SIGKILL + reap if still running
    std::filesystem::remove_all(dir_);
  }

  const std::string& dir() const { return dir_; }
  std::string storage() const {
    return options_.storage_root.empty() ? dir_ + "/storage" : options_.storage_root;
  }
  // Makes the harness's directories (0700 from mkdtemp) searchable by other
  // users, for workers that run as another uid.
  void OpenToOtherUsers() const {
    for (const std::string& d : {dir_, storage(), model_dir_}) ::chmod(d.c_str(), 0755);
  }
  std::string config_path() const { return dir_ + "/fjordd.yaml"; }
  std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  std::string ipc_endpoint() const { return "ipc://" + dir_ + "/fjordd.sock"; }
  int metrics_port() const { return metrics_port_; }
  const CurveKeyPair& server_keys() const { return server_keys_; }
  const CurveKeyPair& acme_keys() const { return acme_; }
  const CurveKeyPair& zeta_keys() const { return zeta_; }
  const CurveKeyPair& admin_keys() const { return admin_; }
  pid_t daemon_pid() const { return daemon_ ? daemon_->pid() : 0; }
  std::string log() const { return ReadFile(dir_ + "/fjordd.log"); }

  // Starts fjordd and waits until it answers a ping.
  void Start() {
    daemon::WorkerSpec spec;
    spec.program = std::filesystem::absolute("daemon/server/fjordd").string();
    spec.args = {"--config", config_path()};
    spec.env = {{"PATH", "/usr/bin:/bin"}};
    if (const char* a = std::getenv("ASAN_OPTIONS")) spec.env["ASAN_OPTIONS"] = a;
    if (const char* t = std::getenv("TSAN_OPTIONS")) spec.env["TSAN_OPTIONS"] = t;
    spec.log_path = dir_ + "/fjordd.log";
    auto p = daemon::WorkerProcess::Start(spec);
    ASSERT_TRUE(p.ok()) << p.status();
    daemon_ = std::move(*p);
    std::unique_ptr<Client> c = Connect(acme_, 500, 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (true) {
      absl::StatusOr<PingInfo> ping = c->Ping();
      if (ping.ok()) break;
      if (auto e = daemon_->Poll()) FAIL() << "fjordd exited (" << e->Describe() << "):\n" << log();
      ASSERT_LT(std::chrono::steady_clock::now(), deadline)
          << "fjordd did not answer: " << ping.status() << "\n"
          << log();
      c = Connect(acme_, 500, 0);
    }
  }

  void Kill9() {
    ASSERT_TRUE(daemon_);
    ::kill(daemon_->pid(), SIGKILL);
    daemon_->Wait(10000);
    daemon_.reset();
  }

  // SIGTERM; returns the exit.
  daemon::WorkerExit Terminate(int timeout_ms = 30000) {
    ::kill(daemon_->pid(), SIGTERM);
    std::optional<daemon::WorkerExit> e = daemon_->Wait(timeout_ms);
    daemon::WorkerExit out = e.value_or(daemon::WorkerExit{});
    daemon_.reset();
    return out;
  }

  std::unique_ptr<Client> Connect(const CurveKeyPair& keys, int timeout_ms = 5000, int retries = 2,
                                  const std::string& endpoint = "") {
    ClientOptions o;
    o.endpoint = endpoint.empty() ? this->endpoint() : endpoint;
    o.server_public_key = server_keys_.public_key;
    o.client_keys = keys;
    o.timeout_ms = timeout_ms;
    o.retries = retries;
    o.heartbeat_interval_ms = 200;
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(*c);
  }
  std::unique_ptr<Client> Acme() { return Connect(acme_); }
  std::unique_ptr<Client> Zeta() { return Connect(zeta_); }
  std::unique_ptr<Client> Admin() { return Connect(admin_); }

  // Polls the job until `done` says so or timeout_s passes.
  absl::StatusOr<protocol::Job> WaitFor(Client& c, const std::string& job_id,
                                        const std::function<bool(const protocol::Job&)>& done,
                                        int timeout_s = 30) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (true) {
      absl::StatusOr<protocol::Job> j = c.GetJob(job_id);
      if (j.ok() && done(*j)) return j;
      if (std::chrono::steady_clock::now() > deadline) {
        return absl::DeadlineExceededError("job " + job_id + " did not get there; last: " +
                                           (j.ok()
                                                ? std::string(protocol::JobStatusName(j->status)) +
                                                      " step " + std::to_string(j->step)
                                                : std::string(j.status().message())));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  absl::StatusOr<protocol::Job> WaitForStatus(Client& c, const std::string& id,
                                              protocol::JobStatus s, int timeout_s = 30) {
    return WaitFor(
        c, id, [s](const protocol::Job& j) { return j.status == s; }, timeout_s);
  }
  absl::StatusOr<protocol::Job> WaitForFinal(Client& c, const std::string& id, int timeout_s = 30) {
    return WaitFor(
        c, id, [](const protocol::Job& j) { return protocol::IsFinal(j.status); }, timeout_s);
  }

 private:
  HarnessOptions options_;
  std::string dir_, model_dir_;
  CurveKeyPair server_keys_, acme_, zeta_, admin_;
  int port_ = 0, metrics_port_ = 0;
  std::unique_ptr<daemon::WorkerProcess> daemon_;
};

// The fake worker copied where any user can run it (the runfiles tree may
// not be reachable by another uid), removed with this object.
class WorkerForOtherUsers {
 public:
  WorkerForOtherUsers() {
    char tmpl[] = "/tmp/fjit-worker-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ::chmod(dir_.c_str(), 0755);
    program_ = dir_ + "/fake_worker";
    std::filesystem::copy_file("daemon/worker/fake_worker", program_);
    ::chmod(program_.c_str(), 0755);
  }
  ~WorkerForOtherUsers() { std::filesystem::remove_all(dir_); }
  WorkerForOtherUsers(const WorkerForOtherUsers&) = delete;
  WorkerForOtherUsers& operator=(const WorkerForOtherUsers&) = delete;
  const std::string& program() const { return program_; }

 private:
  std::string dir_, program_;
};

// A raw CURVE DEALER on the harness's TCP endpoint: one connection, frames
// sent as given, for what the SDK would never send. `ctx` null: one of its
// own; `rcvhwm` below 1000 also shrinks the socket's receive buffer (a
// client that does not read).
class RawPeer {
 public:
  RawPeer(DaemonHarness& h, const CurveKeyPair& keys, zmq::context_t* ctx = nullptr,
          int rcvhwm = 1000)
      : own_ctx_(ctx ? nullptr : std::make_unique<zmq::context_t>()),
        socket_(ctx ? *ctx : *own_ctx_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvhwm, rcvhwm);
    if (rcvhwm < 1000) socket_.set(zmq::sockopt::rcvbuf, 4096);
    socket_.set(zmq::sockopt::curve_serverkey, h.server_keys().public_key);
    socket_.set(zmq::sockopt::curve_publickey, keys.public_key);
    socket_.set(zmq::sockopt::curve_secretkey, keys.secret_key);
    socket_.connect(h.endpoint());
  }
  void SendFrames(const protocol::Frames& frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      socket_.send(zmq::buffer(frames[i]),
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  // A REQUEST.
  void Send(const std::string& request_id, const std::string& command, const nlohmann::json& body) {
    protocol::ClientMessage m;
    m.request_id = request_id;
    m.command = command;
    m.body = body;
    SendFrames(protocol::EncodeClientMessage(m));
  }
  // DISCONNECT: the daemon forgets this peer at once.
  void Disconnect() { SendFrames({"", std::string(protocol::kSignature), std::string(1, '\x05')}); }
  // The next message from the daemon, decoded; DeadlineExceeded when none
  // comes within timeout_ms.
  absl::StatusOr<protocol::ServerMessage> Next(int timeout_ms = 5000) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) == 0) {
      return absl::DeadlineExceededError("no reply from the daemon");
    }
    protocol::Frames reply;
    while (true) {
      zmq::message_t m;
      (void)socket_.recv(m);
      reply.push_back(m.to_string());
      if (!m.more()) break;
    }
    return protocol::DecodeServerMessage(reply);
  }
  // The next FINAL reply to `request_id`, skipping partials, heartbeats and
  // other requests' replies.
  absl::StatusOr<protocol::ServerMessage> Final(const std::string& request_id,
                                                int timeout_ms = 10000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      absl::StatusOr<protocol::ServerMessage> m = Next(200);
      if (absl::IsDeadlineExceeded(m.status())) continue;
      if (!m.ok()) return m.status();
      if (m->type == protocol::MessageType::kFinal && m->request_id == request_id) return m;
    }
    return absl::DeadlineExceededError("no reply to " + request_id);
  }

 private:
  std::unique_ptr<zmq::context_t> own_ctx_;
  zmq::socket_t socket_;
};

// Uploads data and returns a spec naming it.
inline protocol::JobSpec SpecWithData(Client& c, const std::string& data) {
  absl::StatusOr<protocol::FileInfo> f = c.UploadBytes(data, "train.jsonl");
  EXPECT_TRUE(f.ok()) << f.status();
  protocol::JobSpec spec;
  spec.model = "tiny";
  spec.training_file = f.ok() ? f->id : "";
  return spec;
}

}  // namespace fjord::testing

#endif  // FJORD_TESTS_INTEGRATION_DAEMON_HARNESS_H_
