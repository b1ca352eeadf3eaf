// The server loop in-process with a FakeClock: heartbeats to stream peers,
// peer expiry, the peer limit and upload expiry, all without sleeping (time
// moves only when the test says so).
#include "daemon/server/server.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <zmq.hpp>

#include "daemon/protocol/codec.h"
#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using nlohmann::json;
using protocol::MessageType;
using protocol::ServerMessage;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class ServerLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fjsrv-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    fs::create_directories(dir_ + "/storage/dev/data");
    fs::create_directories(dir_ + "/model");
    std::ofstream(dir_ + "/storage/dev/data/train.jsonl")
        << "{\"fake_worker\": {\"steps\": 100000, \"step_ms\": 1000}}\n{\"text\": \"x\"}\n";
    DaemonConfig c;
    c.node_name = "n";
    c.state_dir = dir_ + "/state";
    c.storage_root = dir_ + "/storage";
    c.listen = {"ipc://" + dir_ + "/d.sock"};
    c.security.curve = false;
    c.security.allow_plaintext = true;
    c.models = {{"tiny", dir_ + "/model"}};
    c.worker.program = fs::absolute("daemon/worker/fake_worker").string();
    c.worker.validate = false;
    c.worker.heartbeat_timeout_ms = 1000000000;  // fake time must not kill the worker
    c.limits.heartbeat_interval_ms = 1000;
    c.limits.max_peers = 2;
    c.limits.admin_reserved_peers = 0;
    c.limits.upload_idle_ms = 5000;
    c.metrics.listen = "";
    auto s = Server::Create(c, &clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    sockets_.clear();
    server_.reset();
    fs::remove_all(dir_);
  }

  zmq::socket_t& NewDealer() {
    sockets_.push_back(std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer));
    zmq::socket_t& d = *sockets_.back();
    d.set(zmq::sockopt::linger, 0);
    d.connect("ipc://" + dir_ + "/d.sock");
    return d;
  }
  void Send(zmq::socket_t& d, const protocol::ClientMessage& m) {
    protocol::Frames f = protocol::EncodeClientMessage(m);
    for (size_t i = 0; i < f.size(); ++i)
      d.send(zmq::buffer(f[i]),
             i + 1 < f.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  void Request(zmq::socket_t& d, const std::string& id, const std::string& command, json body) {
    protocol::ClientMessage m;
    m.request_id = id;
    m.command = command;
    m.body = std::move(body);
    Send(d, m);
  }
  // Runs the loop (no fake time passing) until the dealer has a message, or
  // `rounds` iterations pass (nullopt).
  std::optional<ServerMessage> Next(zmq::socket_t& d, int rounds = 200) {
    for (int i = 0; i < rounds; ++i) {
      zmq::pollitem_t item{d.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(0)) > 0) {
        protocol::Frames f;
        while (true) {
          zmq::message_t m;
          (void)d.recv(m);
          f.push_back(m.to_string());
          if (!m.more()) break;
        }
        absl::StatusOr<ServerMessage> s = protocol::DecodeServerMessage(f);
        EXPECT_TRUE(s.ok()) << s.status();
        return *s;
      }
      server_->PollOnce(5);
    }
    return std::nullopt;
  }
  // The FINAL for request `id`, skipping others.
  ServerMessage Final(zmq::socket_t& d, const std::string& id) {
    for (int i = 0; i < 100; ++i) {
      std::optional<ServerMessage> m = Next(d);
      if (!m) break;
      if (m->type == MessageType::kFinal && m->request_id == id) return *m;
    }
    ADD_FAILURE() << "no FINAL for " << id;
    return {};
  }

  std::string dir_;
  FakeClock clock_;
  zmq::context_t ctx_;
  std::vector<std::unique_ptr<zmq::socket_t>> sockets_;
  std::unique_ptr<Server> server_;
};

TEST_F(ServerLoopTest, HeartbeatsToStreamPeersThenExpiry) {
  zmq::socket_t& a = NewDealer();
  Request(a, "c1", "job.create", json{{"model", "tiny"}, {"training_file", "data/train.jsonl"}});
  ServerMessage created = Final(a, "c1");
  ASSERT_TRUE(created.ok()) << created.body.dump();
  const std::string job = created.body["id"];
  Request(a, "s1", "job.subscribe", json{{"job_id", job}});
  std::optional<ServerMessage> first = Next(a);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->type, MessageType::kPartial);
  while (Next(a, 20)) {
  }  // drain the stored events
  // One heartbeat interval of fake time: the daemon sends a HEARTBEAT.
  clock_.Advance(1000);
  std::optional<ServerMessage> hb;
  for (int i = 0; i < 10 && !(hb && hb->type == MessageType::kHeartbeat); ++i) hb = Next(a, 20);
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->type, MessageType::kHeartbeat);
  // The peer stays silent for liveness x interval: it is expired, its stream
  // dropped, and nothing more is sent to it.
  clock_.Advance(3001);
  server_->PollOnce(0);
  clock_.Advance(1000);
  server_->PollOnce(0);
  std::optional<ServerMessage> after = Next(a, 20);
  EXPECT_FALSE(after.has_value()) << (after ? after->body.dump() : "");
  // Another client cancels; the expired peer hears no FINAL.
  zmq::socket_t& b = NewDealer();
  Request(b, "x", "job.cancel", json{{"job_id", job}});
  EXPECT_TRUE(Final(b, "x").ok());
  EXPECT_FALSE(Next(a, 50).has_value());
}

TEST_F(ServerLoopTest, HeartbeatRepliesAndPeerLimit) {
  zmq::socket_t& a = NewDealer();
  zmq::socket_t& b = NewDealer();
  zmq::socket_t& c = NewDealer();
  protocol::ClientMessage beat;
  beat.type = MessageType::kHeartbeat;
  Send(a, beat);
  std::optional<ServerMessage> r = Next(a);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, MessageType::kHeartbeat);
  Request(b, "p", "ping", json::object());
  EXPECT_TRUE(Final(b, "p").ok());
  // Two peers is the limit.
  Request(c, "p", "ping", json::object());
  ServerMessage refused = Final(c, "p");
  EXPECT_EQ(refused.status, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(protocol::ParamOf(protocol::StatusFromReply(refused.status, refused.body)), "peers");
  // Once the others expire (fake time), the third is served.
  clock_.Advance(3001);
  server_->PollOnce(0);
  Request(c, "p2", "ping", json::object());
  EXPECT_TRUE(Final(c, "p2").ok());
}

TEST_F(ServerLoopTest, IdleUploadsExpire) {
  zmq::socket_t& a = NewDealer();
  Request(a, "b", "file.upload.begin",
          json{{"filename", "t.jsonl"}, {"bytes", 4}, {"sha256", std::string(64, '0')}});
  ServerMessage begin = Final(a, "b");
  ASSERT_TRUE(begin.ok()) << begin.body.dump();
  const std::string upl = begin.body["upload_id"];
  // files/.upload-<node tag>-<upload id>
  auto upload_file = [&]() {
    for (const auto& e : fs::directory_iterator(dir_ + "/storage/dev/files")) {
      const std::string name = e.path().filename().string();
      if (name.rfind(".upload-", 0) == 0 && name.size() > upl.size() &&
          name.compare(name.size() - upl.size(), upl.size(), upl) == 0) {
        return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(upload_file());
  clock_.Advance(6000);
  server_->PollOnce(0);
  protocol::ClientMessage chunk;
  chunk.request_id = "c";
  chunk.command = "file.upload.chunk";
  chunk.body = json{{"upload_id", upl}, {"offset", 0}};
  chunk.data = "abcd";
  Send(a, chunk);
  ServerMessage r = Final(a, "c");
  EXPECT_EQ(r.status, "NOT_FOUND");
  EXPECT_FALSE(upload_file());
}

TEST_F(ServerLoopTest, SecondDaemonOnTheSameStateDirIsRefused) {
  DaemonConfig c;
  c.state_dir = dir_ + "/state";
  c.storage_root = dir_ + "/storage";
  c.listen = {"ipc://" + dir_ + "/e.sock"};
  c.security.curve = false;
  c.security.allow_plaintext = true;
  c.worker.program = "/bin/true";
  auto s = Server::Create(c, &clock_);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("another fjordd"));
}

}  // namespace
}  // namespace fjord::daemon
