// fjord::Client against a scripted ROUTER in a thread (the daemon itself is
// exercised in tests/integration): request/reply matching, error mapping,
// lazy-pirate retries with one idempotency key, streams (heartbeats, CANCEL,
// resubscribe after silence), chunked upload, CURVE refusal.
#include "sdk/cpp/client.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/sha256.h"

namespace fjord {
namespace {

using nlohmann::json;
using protocol::ClientMessage;
using protocol::Frames;
using protocol::MessageType;
using protocol::ServerMessage;
using ::testing::HasSubstr;

std::string TempEndpoint(const char* name) {
  static std::atomic<int> n{0};
  // ipc paths are limited to ~100 bytes: TEST_TMPDIR is too long.
  struct Dir {
    std::string path;
    Dir() {
      char tmpl[] = "/tmp/fjord-client-test-XXXXXX";
      path = ::mkdtemp(tmpl);
    }
    ~Dir() { std::filesystem::remove_all(path); }
  };
  static const Dir dir;
  return "ipc://" + dir.path + "/" + name + "-" + std::to_string(n++) + ".sock";
}

// A ROUTER answering with `handler`: it gets each decoded client message and
// a send function (routing id bound) to reply any number of times.
class ScriptedServer {
 public:
  using Send = std::function<void(const ServerMessage&)>;
  using Handler = std::function<void(const ClientMessage&, const Send&)>;

  ScriptedServer(std::string endpoint, Handler handler, const CurveKeyPair* server_keys = nullptr,
                 bool refuse_all = false)
      : endpoint_(std::move(endpoint)), handler_(std::move(handler)) {
    if (server_keys != nullptr) {
      zap_ = std::thread([this, refuse_all] { RunZap(refuse_all); });
      // The ZAP handler must be bound before the server socket accepts.
      while (!zap_ready_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    router_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    router_->set(zmq::sockopt::linger, 0);
    if (server_keys != nullptr) {
      router_->set(zmq::sockopt::curve_server, 1);
      router_->set(zmq::sockopt::curve_secretkey, server_keys->secret_key);
    }
    router_->bind(endpoint_);
    thread_ = std::thread([this] { Run(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
    if (zap_.joinable()) zap_.join();
  }

 private:
  void Run() {
    while (!stop_) {
      zmq::pollitem_t item{router_->handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<std::string> parts;
      while (true) {
        zmq::message_t m;
        (void)router_->recv(m);
        parts.push_back(m.to_string());
        if (!m.more()) break;
      }
      const std::string identity = parts[0];
      Frames frames(parts.begin() + 1, parts.end());
      absl::StatusOr<ClientMessage> msg = protocol::DecodeClientMessage(frames);
      if (!msg.ok()) continue;
      Send send = [this, identity](const ServerMessage& reply) {
        Frames out = protocol::EncodeServerMessage(reply);
        router_->send(zmq::buffer(identity), zmq::send_flags::sndmore);
        for (size_t i = 0; i < out.size(); ++i) {
          router_->send(zmq::buffer(out[i]),
                        i + 1 < out.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
        }
      };
      handler_(*msg, send);
    }
  }

  void RunZap(bool refuse_all) {
    zmq::socket_t zap(ctx_, zmq::socket_type::rep);
    zap.set(zmq::sockopt::linger, 0);
    zap.bind("inproc://zeromq.zap.01");
    zap_ready_ = true;
    while (!stop_) {
      zmq::pollitem_t item{zap.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<std::string> req;
      while (true) {
        zmq::message_t m;
        (void)zap.recv(m);
        req.push_back(m.to_string());
        if (!m.more()) break;
      }
      const std::vector<std::string> reply = {"1.0",
                                              req[1],
                                              refuse_all ? "400" : "200",
                                              refuse_all ? "unknown key" : "OK",
                                              refuse_all ? "" : "tester",
                                              ""};
      for (size_t i = 0; i < reply.size(); ++i) {
        zap.send(zmq::buffer(reply[i]),
                 i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    }
  }

  zmq::context_t ctx_;
  std::string endpoint_;
  Handler handler_;
  std::unique_ptr<zmq::socket_t> router_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> zap_ready_{false};
  std::thread thread_;
  std::thread zap_;
};

std::unique_ptr<Client> Connect(const std::string& endpoint, int timeout_ms = 2000,
                                int retries = 2) {
  ClientOptions o;
  o.endpoint = endpoint;
  o.timeout_ms = timeout_ms;
  o.retries = retries;
  o.heartbeat_interval_ms = 50;
  o.learn_heartbeat = false;  // the scripted servers do not all answer ping
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

json JobBody(const std::string& id, const std::string& status) {
  return json{{"id", id}, {"tenant", "t"}, {"status", status}, {"model", "m"}};
}

TEST(ClientTest, CallsAndErrors) {
  const std::string ep = TempEndpoint("calls");
  ScriptedServer server(ep, [](const ClientMessage& m, const ScriptedServer::Send& send) {
    if (m.command == "job.get" && m.body["job_id"] == "job-1") {
      send(protocol::OkReply(m.request_id, JobBody("job-1", "running")));
    } else if (m.command == "job.get") {
      send(protocol::ErrorReply(
          m.request_id, protocol::Error(absl::StatusCode::kNotFound, "no job 'job-2'", "job_id")));
    } else {
      send(protocol::ErrorReply(m.request_id, protocol::Error(absl::StatusCode::kUnimplemented,
                                                              "unknown command", "command")));
    }
  });
  std::unique_ptr<Client> c = Connect(ep);
  absl::StatusOr<protocol::Job> j = c->GetJob("job-1");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->status, protocol::JobStatus::kRunning);
  j = c->GetJob("job-2");
  EXPECT_EQ(j.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(protocol::ParamOf(j.status()), "job_id");
  EXPECT_EQ(c->Call("no.such", json::object()).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(ClientTest, RetryReusesTheIdempotencyKey) {
  const std::string ep = TempEndpoint("retry");
  std::mutex mu;
  std::vector<std::string> keys;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    keys.push_back(m.body.value("idempotency_key", ""));
    if (keys.size() == 1) return;  // lose the first request
    send(protocol::OkReply(m.request_id, JobBody("job-9", "validating")));
  });
  std::unique_ptr<Client> c = Connect(ep, /*timeout_ms=*/300);
  protocol::JobSpec spec;
  spec.model = "m";
  spec.training_file = "file-1";
  absl::StatusOr<protocol::Job> j = c->CreateJob(spec);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->id, "job-9");
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_FALSE(keys[0].empty());
  EXPECT_EQ(keys[0], keys[1]);
}

// The spec's data files travel by their protocol names; the job object
// that comes back names them too.
TEST(ClientTest, CreateJobSendsTheDataFiles) {
  const std::string ep = TempEndpoint("files");
  std::mutex mu;
  json body;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    body = m.body;
    json job = JobBody("job-9", "validating");
    job["heldout_file"] = m.body.value("heldout_file", "");
    send(protocol::OkReply(m.request_id, job));
  });
  std::unique_ptr<Client> c = Connect(ep);
  protocol::JobSpec spec;
  spec.model = "m";
  spec.training_file = "file-1";
  spec.validation_file = "file-2";
  spec.heldout_file = "files/heldout.jsonl";
  absl::StatusOr<protocol::Job> j = c->CreateJob(spec);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->spec.heldout_file, "files/heldout.jsonl");
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(body["training_file"], "file-1");
  EXPECT_EQ(body["validation_file"], "file-2");
  EXPECT_EQ(body["heldout_file"], "files/heldout.jsonl");
}

TEST(ClientTest, NoReplyIsDeadlineExceeded) {
  const std::string ep = TempEndpoint("silent");
  std::atomic<int> seen{0};
  ScriptedServer server(ep, [&](const ClientMessage&, const ScriptedServer::Send&) { ++seen; });
  std::unique_ptr<Client> c = Connect(ep, /*timeout_ms=*/100, /*retries=*/2);
  absl::Status s = c->GetJob("job-1").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(s.message(), HasSubstr("3 attempts"));
  EXPECT_EQ(seen.load(), 3);
}

TEST(ClientTest, NobodyListeningIsUnavailableAfterOneTimeout) {
  const std::string ep = TempEndpoint("nobody");  // nothing bound there
  std::unique_ptr<Client> c = Connect(ep, /*timeout_ms=*/300, /*retries=*/2);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = c->Ping().status();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(s.message(), "no reply from " + ep + " within 0.3 s: is fjordd running?");
  EXPECT_LT(took, std::chrono::milliseconds(800));  // one timeout, not three
  s = c->StreamEvents("job-1", 0, [](const protocol::JobEvent&) { return true; }).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("is fjordd running?"));
}

TEST(ClientTest, StreamHeartbeatsAtTheDaemonsIntervalFromPing) {
  const std::string ep = TempEndpoint("learn");
  std::atomic<int> pings{0}, beats{0};
  std::string stream_id;  // the server thread's only
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    if (m.type == MessageType::kHeartbeat) {
      // Answer as fjordd does; the job ends after 6 of the client's heartbeats.
      ServerMessage hb;
      hb.type = MessageType::kHeartbeat;
      send(hb);
      if (++beats == 6 && !stream_id.empty()) {
        send(protocol::OkReply(stream_id, json{{"job", JobBody("job-1", "succeeded")}}));
      }
      return;
    }
    if (m.type != MessageType::kRequest) return;
    if (m.command == protocol::kPing) {
      ++pings;
      send(protocol::OkReply(m.request_id, json{{"heartbeat_interval_ms", 50}, {"liveness", 3}}));
      return;
    }
    stream_id = m.request_id;
  });
  ClientOptions o;
  o.endpoint = ep;
  o.timeout_ms = 2000;  // heartbeat_interval_ms stays 2000: the daemon's 50 must win
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
  ASSERT_TRUE(c.ok()) << c.status();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<protocol::Job> j =
      (*c)->StreamEvents("job-1", 0, [](const protocol::JobEvent&) { return true; });
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(pings.load(), 1);
  EXPECT_EQ(beats.load(), 6);
  EXPECT_LT(std::chrono::steady_clock::now() - start,
            std::chrono::milliseconds(1500));  // not 6 x 2 s
}

// Answers job.subscribe with events after_seq+1..last, then (final) the job;
// HEARTBEAT with HEARTBEAT, as fjordd does.
ScriptedServer::Handler StreamHandler(int last, bool final, std::atomic<int>* subscribes,
                                      std::vector<int>* after_seqs, std::mutex* mu) {
  return [=](const ClientMessage& m, const ScriptedServer::Send& send) {
    if (m.type == MessageType::kHeartbeat) {
      ServerMessage hb;
      hb.type = MessageType::kHeartbeat;
      send(hb);
      return;
    }
    if (m.type != MessageType::kRequest || m.command != protocol::kJobSubscribe) return;
    ++*subscribes;
    const int from = m.body["after_seq"].get<int>();
    {
      std::lock_guard<std::mutex> l(*mu);
      after_seqs->push_back(from);
    }
    for (int seq = from + 1; seq <= last; ++seq) {
      send(protocol::OkReply(m.request_id, json{{"event", {{"seq", seq}, {"type", "log"}}}},
                             MessageType::kPartial));
    }
    if (final) send(protocol::OkReply(m.request_id, json{{"job", JobBody("job-1", "succeeded")}}));
  };
}

TEST(ClientTest, StreamResubscribesWhenOnEventKeptItSilentTooLong) {
  const std::string ep = TempEndpoint("slow-consumer");
  std::atomic<int> subscribes{0};
  std::vector<int> after;
  std::mutex mu;
  ScriptedServer server(ep, StreamHandler(3, true, &subscribes, &after, &mu));
  std::unique_ptr<Client> c = Connect(ep);  // heartbeat 50 ms x 3
  std::vector<int64_t> seqs;
  absl::StatusOr<protocol::Job> j = c->StreamEvents("job-1", 0, [&](const protocol::JobEvent& e) {
    seqs.push_back(e.seq);
    if (e.seq == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));  // > 150 ms silent
    return true;
  });
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(seqs, (std::vector<int64_t>{1, 2, 3}));
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(after, (std::vector<int>{0, 1}));
}

TEST(ClientTest, StreamResubscribesAfterTheDaemonRestarts) {
  const std::string ep = TempEndpoint("restart");
  std::atomic<int> subs1{0}, subs2{0};
  std::vector<int> after1, after2;
  std::mutex mu;
  auto server = std::make_unique<ScriptedServer>(ep, StreamHandler(1, false, &subs1, &after1, &mu));
  ClientOptions o;
  o.endpoint = ep;
  o.timeout_ms = 2000;
  o.heartbeat_interval_ms = 50;
  o.heartbeat_liveness = 100;  // 5 s: only the reconnect can explain a quick resubscribe
  o.learn_heartbeat = false;
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<int64_t> seqs;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<protocol::Job> j =
      (*c)->StreamEvents("job-1", 0, [&](const protocol::JobEvent& e) {
        seqs.push_back(e.seq);
        if (e.seq == 1) {  // the daemon restarts: same endpoint, no memory of the stream
          server.reset();
          server =
              std::make_unique<ScriptedServer>(ep, StreamHandler(3, true, &subs2, &after2, &mu));
        }
        return true;
      });
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(seqs, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(after2, (std::vector<int>{1}));
}

TEST(ClientTest, StreamDeliversEventsThenTheFinalJob) {
  const std::string ep = TempEndpoint("stream");
  ScriptedServer server(ep, [](const ClientMessage& m, const ScriptedServer::Send& send) {
    if (m.type != MessageType::kRequest) return;
    for (int seq = m.body["after_seq"].get<int>() + 1; seq <= 3; ++seq) {
      send(protocol::OkReply(
          m.request_id,
          json{{"event", {{"seq", seq}, {"type", "step"}, {"data", {{"step", seq}}}}}},
          MessageType::kPartial));
      ServerMessage hb;
      hb.type = MessageType::kHeartbeat;
      send(hb);
    }
    send(protocol::OkReply(m.request_id, json{{"job", JobBody("job-1", "succeeded")}}));
  });
  std::unique_ptr<Client> c = Connect(ep);
  std::vector<int64_t> seqs;
  absl::StatusOr<protocol::Job> j = c->StreamEvents("job-1", 1, [&](const protocol::JobEvent& e) {
    seqs.push_back(e.seq);
    return true;
  });
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->status, protocol::JobStatus::kSucceeded);
  EXPECT_EQ(seqs, (std::vector<int64_t>{2, 3}));
}

TEST(ClientTest, StreamCancelAndResubscribeAfterSilence) {
  const std::string ep = TempEndpoint("stream2");
  std::atomic<int> subscribes{0};
  std::atomic<bool> cancel_seen{false};
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    if (m.type == MessageType::kCancel) {
      cancel_seen = true;
      send(protocol::OkReply(m.request_id, json{{"job", JobBody("job-1", "running")}}));
      return;
    }
    if (m.type != MessageType::kRequest) return;
    const int n = ++subscribes;
    const int from = m.body["after_seq"].get<int>();
    // First subscription: one event, then silence (a dead daemon).
    send(protocol::OkReply(m.request_id, json{{"event", {{"seq", from + 1}, {"type", "log"}}}},
                           MessageType::kPartial));
    if (n >= 2) {
      send(protocol::OkReply(m.request_id, json{{"event", {{"seq", from + 2}, {"type", "log"}}}},
                             MessageType::kPartial));
    }
  });
  std::unique_ptr<Client> c = Connect(ep);
  std::vector<int64_t> seqs;
  absl::StatusOr<protocol::Job> j = c->StreamEvents("job-1", 0, [&](const protocol::JobEvent& e) {
    seqs.push_back(e.seq);
    return seqs.size() < 3;
  });
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(subscribes.load(), 2);
  EXPECT_EQ(seqs, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(cancel_seen.load());
  EXPECT_EQ(j->status, protocol::JobStatus::kRunning);
}

TEST(ClientTest, UploadInChunksWithChecksum) {
  const std::string ep = TempEndpoint("upload");
  std::string received;
  std::string announced_sha;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    if (m.command == "file.upload.begin") {
      announced_sha = m.body["sha256"];
      send(protocol::OkReply(m.request_id, json{{"upload_id", "upl-1"}, {"chunk_bytes", 7}}));
    } else if (m.command == "file.upload.chunk") {
      EXPECT_EQ(m.body["offset"].get<size_t>(), received.size());
      EXPECT_LE(m.data->size(), 7u);
      received += *m.data;
      send(protocol::OkReply(m.request_id, json{{"received", received.size()}}));
    } else {
      send(protocol::OkReply(m.request_id, json{{"id", "file-1"},
                                                {"filename", "t.jsonl"},
                                                {"bytes", received.size()},
                                                {"sha256", Sha256Hex(received)}}));
    }
  });
  std::unique_ptr<Client> c = Connect(ep);
  const std::string data = "{\"text\": \"hello world, twenty-nine+\"}\n";
  absl::StatusOr<protocol::FileInfo> f = c->UploadBytes(data, "t.jsonl");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(received, data);
  EXPECT_EQ(announced_sha, Sha256Hex(data));
  EXPECT_EQ(f->sha256, Sha256Hex(data));
}

json FileBody(const std::string& id, uint64_t bytes) {
  return json{{"id", id},       {"filename", "t.jsonl"}, {"bytes", bytes},
              {"sha256", "ab"}, {"created_at_ms", 5},    {"path", "files/" + id}};
}

TEST(ClientTest, ListFilesWithUsageAndWithout) {
  const std::string ep = TempEndpoint("file-list");
  std::atomic<int> lists{0};
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    json body{{"files", json::array({FileBody("file-2", 7), FileBody("file-1", 3)})}};
    switch (lists++) {
      case 0:  // a daemon with a quota
        body["usage_bytes"] = 1234;
        body["quota_bytes"] = uint64_t{10} << 30;
        break;
      case 1:  // no quota
        body["usage_bytes"] = 10;
        body["quota_bytes"] = 0;
        break;
      case 2:  // an older daemon: neither field
        break;
      default:
        body["usage_bytes"] = -1;
    }
    send(protocol::OkReply(m.request_id, body));
  });
  std::unique_ptr<Client> c = Connect(ep);
  absl::StatusOr<FileListing> l = c->ListFilesWithUsage();
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_EQ(l->files.size(), 2u);
  EXPECT_EQ(l->files[0].id, "file-2");
  EXPECT_EQ(l->usage_bytes, std::optional<uint64_t>(1234));
  EXPECT_EQ(l->quota_bytes, std::optional<uint64_t>(uint64_t{10} << 30));
  l = c->ListFilesWithUsage();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->usage_bytes, std::optional<uint64_t>(10));
  EXPECT_EQ(l->quota_bytes, std::optional<uint64_t>(0));
  l = c->ListFilesWithUsage();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->files.size(), 2u);
  EXPECT_FALSE(l->usage_bytes.has_value());
  EXPECT_FALSE(l->quota_bytes.has_value());
  absl::Status bad = c->ListFilesWithUsage().status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInternal) << bad;
  EXPECT_THAT(bad.message(), HasSubstr("usage_bytes is -1"));
  // ListFiles is unchanged for its callers: it never looks at the usage.
  absl::StatusOr<std::vector<protocol::FileInfo>> files = c->ListFiles();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->size(), 2u);
}

// A daemon's file.list over `ids` (newest first), as docs/protocol.md says,
// but in pages of at most `page_size` files (the daemon's are up to 1000):
// INVALID_ARGUMENT param limit outside 1..1000, NOT_FOUND param after for an
// id it does not have.
ServerMessage PagedFileList(const ClientMessage& m, const std::vector<std::string>& ids,
                            size_t page_size) {
  const int64_t limit = m.body.value("limit", int64_t{1000});
  if (limit < 1 || limit > 1000) {
    return protocol::ErrorReply(m.request_id, protocol::Error(absl::StatusCode::kInvalidArgument,
                                                              "limit must be 1..1000", "limit"));
  }
  size_t start = 0;
  if (m.body.contains("after")) {
    const std::string after = m.body["after"];
    auto it = std::find(ids.begin(), ids.end(), after);
    if (it == ids.end()) {
      return protocol::ErrorReply(
          m.request_id,
          protocol::Error(absl::StatusCode::kNotFound, "no file '" + after + "'", "after"));
    }
    start = static_cast<size_t>(it - ids.begin()) + 1;
  }
  const size_t end = std::min({ids.size(), start + page_size, start + static_cast<size_t>(limit)});
  json files = json::array();
  for (size_t i = start; i < end; ++i) files.push_back(FileBody(ids[i], i + 1));
  return protocol::OkReply(m.request_id,
                           json{{"files", files},
                                {"has_more", end < ids.size()},
                                {"usage_bytes", 4096},
                                {"quota_bytes", 0},
                                {"usage_files", ids.size() + 8},  // + directories, logs
                                {"quota_files", 100000}});
}

TEST(ClientTest, ListFilesFollowsHasMorePageByPage) {
  const std::string ep = TempEndpoint("file-list-pages");
  std::mutex mu;
  std::vector<std::string> ids = {"file-5", "file-4", "file-3", "file-2", "file-1"};
  std::vector<json> bodies;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    bodies.push_back(m.body);
    send(PagedFileList(m, ids, /*page_size=*/2));
  });
  std::unique_ptr<Client> c = Connect(ep);
  absl::StatusOr<FileListing> l = c->ListFilesWithUsage();
  ASSERT_TRUE(l.ok()) << l.status();
  std::vector<std::string> got;
  for (const protocol::FileInfo& f : l->files) got.push_back(f.id);
  EXPECT_EQ(got, ids);
  EXPECT_EQ(l->files[4].bytes, 5u);
  EXPECT_EQ(l->usage_bytes, std::optional<uint64_t>(4096));
  EXPECT_EQ(l->quota_bytes, std::optional<uint64_t>(0));
  EXPECT_EQ(l->usage_files, std::optional<uint64_t>(13));
  EXPECT_EQ(l->quota_files, std::optional<uint64_t>(100000));
  {
    std::lock_guard<std::mutex> lock(mu);
    // The first page with the default limit (a daemon older than paging
    // refuses a "limit" field), then each after the last id of the one before.
    EXPECT_EQ(bodies, (std::vector<json>{json::object(), json{{"after", "file-4"}},
                                         json{{"after", "file-2"}}}));
    bodies.clear();
    ids = {"file-2", "file-1"};  // exactly one page: no second request
  }
  absl::StatusOr<std::vector<protocol::FileInfo>> files = c->ListFiles();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->size(), 2u);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(bodies.size(), 1u);
    ids.clear();
  }
  files = c->ListFiles();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(files->empty());
}

TEST(ClientTest, ListFilesFromADaemonOlderThanPaging) {
  const std::string ep = TempEndpoint("file-list-old");
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    if (!m.body.empty()) {  // as the older daemon: every field it does not know is refused
      send(protocol::ErrorReply(
          m.request_id,
          protocol::Error(absl::StatusCode::kInvalidArgument,
                          "unknown field '" + m.body.begin().key() + "'", m.body.begin().key())));
      return;
    }
    send(protocol::OkReply(
        m.request_id, json{{"files", json::array({FileBody("file-2", 7), FileBody("file-1", 3)})},
                           {"usage_bytes", 10},
                           {"quota_bytes", 100}}));
  });
  std::unique_ptr<Client> c = Connect(ep);
  absl::StatusOr<FileListing> l = c->ListFilesWithUsage();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->files.size(), 2u);  // no has_more: one page
  EXPECT_EQ(l->usage_bytes, std::optional<uint64_t>(10));
  EXPECT_EQ(l->quota_bytes, std::optional<uint64_t>(100));
  EXPECT_FALSE(l->usage_files.has_value());  // unknown, not 0
  EXPECT_FALSE(l->quota_files.has_value());
  absl::StatusOr<std::vector<protocol::FileInfo>> files = c->ListFiles();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->size(), 2u);
}

TEST(ClientTest, ListFilesStopsAtAPageThatWouldNeverEnd) {
  const std::string ep = TempEndpoint("file-list-bad");
  std::atomic<int> requests{0};
  std::atomic<int> mode{0};
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    ++requests;
    json body;
    switch (mode.load()) {
      case 0:  // ignores `after`: the same page again and again
        body = json{{"files", json::array({FileBody("file-2", 7), FileBody("file-1", 3)})},
                    {"has_more", true}};
        break;
      case 1:  // more to come, but nothing in the page
        body = json{{"files", json::array()}, {"has_more", true}};
        break;
      case 2:
        body = json{{"files", json::array({FileBody("file-1", 3)})}, {"has_more", "yes"}};
        break;
      default:
        body = json{{"files", json::array({FileBody("file-1", 3)})}, {"usage_files", -2}};
    }
    send(protocol::OkReply(m.request_id, body));
  });
  std::unique_ptr<Client> c = Connect(ep);
  absl::Status s = c->ListFiles().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_THAT(
      s.message(),
      HasSubstr(
          "malformed reply to file.list (the page after file-1): file file-2 is listed twice"));
  EXPECT_EQ(requests.load(), 2);
  mode = 1;
  s = c->ListFilesWithUsage().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_THAT(
      s.message(),
      HasSubstr("malformed reply to file.list (the first page): has_more is true but the page "
                "has no files"));
  mode = 2;
  s = c->ListFiles().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_THAT(s.message(), HasSubstr("has_more is \"yes\", not true or false"));
  mode = 3;
  s = c->ListFilesWithUsage().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_THAT(s.message(), HasSubstr("usage_files is -2, not a file count"));
  EXPECT_TRUE(c->ListFiles().ok());  // ListFiles never looks at the usage
}

TEST(ClientTest, CreateEvaluationSendsTheEvaluationFields) {
  const std::string ep = TempEndpoint("eval-create");
  std::mutex mu;
  std::vector<json> bodies;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    bodies.push_back(m.body);
    json job = JobBody("job-e", "validating");
    job["type"] = "evaluation";
    job["training_file"] = nullptr;
    job["candidates"] = m.body["candidates"];
    job["datasets"] = m.body["datasets"];
    job["evaluation"] = m.body["evaluation"];
    job["result_report"] = nullptr;
    send(protocol::OkReply(m.request_id, job));
  });
  std::unique_ptr<Client> c = Connect(ep);
  protocol::JobSpec spec;
  spec.type = "evaluation";
  spec.model = "m";
  spec.candidates = {{"base", "", "", ""}, {"ft", "job-1", "", ""}, {"up", "", "file-c", "file-w"}};
  spec.datasets = {"file-d"};
  spec.evaluation.judge = "judge";
  absl::StatusOr<protocol::Job> j = c->CreateEvaluation(spec);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_TRUE(j->spec.is_evaluation());
  ASSERT_EQ(j->spec.candidates.size(), 3u);
  EXPECT_EQ(j->spec.candidates[2].adapter_model, "file-w");
  EXPECT_EQ(j->spec.datasets, std::vector<std::string>{"file-d"});
  EXPECT_EQ(j->spec.training_file, "");
  protocol::JobSpec fine_tune;
  fine_tune.model = "m";
  fine_tune.training_file = "file-1";
  absl::StatusOr<protocol::Job> refused = c->CreateEvaluation(fine_tune);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("use CreateJob"));
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(bodies.size(), 1u);  // the refused one never left
  EXPECT_EQ(bodies[0]["type"], "evaluation");
  EXPECT_EQ(bodies[0]["candidates"][1], (json{{"name", "ft"}, {"job", "job-1"}}));
  EXPECT_EQ(bodies[0]["evaluation"]["judge"], "judge");
  EXPECT_FALSE(bodies[0].contains("training_file"));
  EXPECT_FALSE(bodies[0]["idempotency_key"].get<std::string>().empty());
}

TEST(ClientTest, DownloadReportInCheckedChunks) {
  const std::string ep = TempEndpoint("report");
  const std::string report =
      std::string(R"({"schema": "fjord.evaluation/1"})") + std::string(50, ' ');
  const std::string html = "<!doctype html><h1>report</h1>";
  std::mutex mu;
  bool corrupt = false;
  std::vector<std::string> commands;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    commands.push_back(m.command);
    if (m.command == "report.files") {
      send(protocol::OkReply(
          m.request_id,
          json{
              {"files",
               {{{"name", "report.json"}, {"bytes", report.size()}, {"sha256", Sha256Hex(report)}},
                {{"name", "report.html"}, {"bytes", html.size()}, {"sha256", Sha256Hex(html)}}}}}));
      return;
    }
    const std::string& data = m.body["name"] == "report.json" ? report : html;
    const uint64_t off = m.body["offset"];
    std::string chunk = data.substr(off, 16);
    if (corrupt && off == 0) chunk[0] = 'X';
    ServerMessage reply =
        protocol::OkReply(m.request_id, json{{"name", m.body["name"]},
                                             {"offset", off},
                                             {"bytes", chunk.size()},
                                             {"total_bytes", data.size()},
                                             {"eof", off + chunk.size() >= data.size()}});
    reply.data = chunk;
    send(reply);
  });
  std::unique_ptr<Client> c = Connect(ep);
  char tmpl[] = "/tmp/fjord-report-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  absl::StatusOr<std::vector<protocol::AdapterFile>> files =
      c->DownloadReport("job-e", dir + "/out");
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 2u);
  std::ifstream in(dir + "/out/report.json", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), report);
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(commands.front(), "report.files");
    EXPECT_EQ(std::count(commands.begin(), commands.end(), "report.download"),
              static_cast<long>((report.size() + 15) / 16 + (html.size() + 15) / 16));
    corrupt = true;
  }
  files = c->DownloadReport("job-e", dir + "/bad");
  EXPECT_EQ(files.status().code(), absl::StatusCode::kDataLoss) << files.status();
  EXPECT_THAT(files.status().message(), HasSubstr("report.json"));
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/bad"));  // no .part left
  std::filesystem::remove_all(dir);
}

TEST(ClientTest, DeleteFileReturnsItThenNotFound) {
  const std::string ep = TempEndpoint("file-delete");
  std::mutex mu;
  std::set<std::string> files = {"file-1"};
  std::vector<json> bodies;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    bodies.push_back(m.body);
    const std::string id = m.body.value("file_id", "");
    if (m.command != protocol::kFileDelete) {
      send(protocol::ErrorReply(
          m.request_id, protocol::Error(absl::StatusCode::kUnimplemented, "no", "command")));
    } else if (id == "file-busy") {
      send(protocol::ErrorReply(
          m.request_id,
          protocol::Error(absl::StatusCode::kFailedPrecondition,
                          "file file-busy is used by job job-7 (running)", "file_id")));
    } else if (files.erase(id) == 1) {
      send(protocol::OkReply(m.request_id, FileBody(id, 3)));
    } else {
      send(protocol::ErrorReply(m.request_id, protocol::Error(absl::StatusCode::kNotFound,
                                                              "no file '" + id + "'", "file_id")));
    }
  });
  std::unique_ptr<Client> c = Connect(ep);
  absl::StatusOr<protocol::FileInfo> f = c->DeleteFile("file-1");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->id, "file-1");
  EXPECT_EQ(f->bytes, 3u);
  EXPECT_EQ(f->path, "files/file-1");
  f = c->DeleteFile("file-1");  // deleted already
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_EQ(protocol::ParamOf(f.status()), "file_id");
  f = c->DeleteFile("file-busy");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr("job-7"));
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(bodies.size(), 3u);
  EXPECT_EQ(bodies[0], (json{{"file_id", "file-1"}}));
}

TEST(ClientTest, DeleteJobReturnsItThenNotFound) {
  const std::string ep = TempEndpoint("job-delete");
  std::mutex mu;
  std::map<std::string, std::string> jobs = {{"job-1", "succeeded"}, {"job-2", "running"}};
  std::vector<ClientMessage> requests;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    requests.push_back(m);
    const std::string id = m.body.value("job_id", "");
    auto it = jobs.find(id);
    if (m.command != protocol::kJobDelete) {
      send(protocol::ErrorReply(
          m.request_id, protocol::Error(absl::StatusCode::kUnimplemented, "no", "command")));
    } else if (it == jobs.end()) {
      send(protocol::ErrorReply(m.request_id, protocol::Error(absl::StatusCode::kNotFound,
                                                              "no job '" + id + "'", "job_id")));
    } else if (it->second == "running") {
      send(protocol::ErrorReply(
          m.request_id, protocol::Error(absl::StatusCode::kFailedPrecondition,
                                        "job " + id + " is running: cancel it first", "job_id")));
    } else {
      send(protocol::OkReply(m.request_id, JobBody(id, it->second)));
      jobs.erase(it);
    }
  });
  std::unique_ptr<Client> c = Connect(ep);
  absl::StatusOr<protocol::Job> j = c->DeleteJob("job-1");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->id, "job-1");
  EXPECT_EQ(j->status, protocol::JobStatus::kSucceeded);  // the job as it was
  j = c->DeleteJob("job-1");                              // deleted already
  EXPECT_EQ(j.status().code(), absl::StatusCode::kNotFound) << j.status();
  EXPECT_EQ(protocol::ParamOf(j.status()), "job_id");
  j = c->DeleteJob("job-2");
  EXPECT_EQ(j.status().code(), absl::StatusCode::kFailedPrecondition) << j.status();
  EXPECT_EQ(protocol::ParamOf(j.status()), "job_id");
  EXPECT_THAT(j.status().message(), HasSubstr("running"));
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].command, "job.delete");
  EXPECT_EQ(requests[0].body, (json{{"job_id", "job-1"}}));
  EXPECT_EQ(jobs.count("job-2"), 1u);
}

TEST(ClientTest, DeleteJobRetriedAfterALostReplyIsNotFound) {
  const std::string ep = TempEndpoint("job-delete-lost");
  std::mutex mu;
  std::set<std::string> jobs = {"job-1"};
  int requests = 0;
  ScriptedServer server(ep, [&](const ClientMessage& m, const ScriptedServer::Send& send) {
    std::lock_guard<std::mutex> l(mu);
    ++requests;
    const std::string id = m.body.value("job_id", "");
    if (jobs.erase(id) == 1) return;  // the daemon deletes, its reply is lost
    send(protocol::ErrorReply(m.request_id, protocol::Error(absl::StatusCode::kNotFound,
                                                            "no job '" + id + "'", "job_id")));
  });
  std::unique_ptr<Client> c = Connect(ep, /*timeout_ms=*/300);
  absl::Status s = c->DeleteJob("job-1").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(requests, 2);
  EXPECT_TRUE(jobs.empty());
}

TEST(ClientTest, CurveKeyRefusedIsUnauthenticated) {
  const std::string ep = TempEndpoint("curve");
  CurveKeyPair server_keys = *GenerateCurveKeyPair();
  ScriptedServer server(
      ep,
      [](const ClientMessage& m, const ScriptedServer::Send& send) {
        send(protocol::OkReply(m.request_id, json{{"protocol", 1}}));
      },
      &server_keys, /*refuse_all=*/true);
  ClientOptions o;
  o.endpoint = ep;
  o.server_public_key = server_keys.public_key;
  o.client_keys = *GenerateCurveKeyPair();
  o.timeout_ms = 3000;
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
  ASSERT_TRUE(c.ok());
  absl::Status s = (*c)->Ping().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_THAT(s.message(), HasSubstr("refused this client's CURVE key"));
}

TEST(ClientTest, CurveAccepted) {
  const std::string ep = TempEndpoint("curve-ok");
  CurveKeyPair server_keys = *GenerateCurveKeyPair();
  ScriptedServer server(
      ep,
      [](const ClientMessage& m, const ScriptedServer::Send& send) {
        send(protocol::OkReply(m.request_id, json{{"protocol", 1}, {"node", "n1"}}));
      },
      &server_keys);
  ClientOptions o;
  o.endpoint = ep;
  o.server_public_key = server_keys.public_key;
  o.client_keys = *GenerateCurveKeyPair();
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(o);
  ASSERT_TRUE(c.ok());
  absl::StatusOr<PingInfo> p = (*c)->Ping();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->node, "n1");
}

TEST(ClientTest, BadOptions) {
  ClientOptions o;
  o.endpoint = "http://x";
  EXPECT_EQ(Client::Connect(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.endpoint = "tcp://127.0.0.1:1";
  o.server_public_key = "short";
  EXPECT_THAT(Client::Connect(o).status().message(), HasSubstr("server_public_key"));
}

}  // namespace
}  // namespace fjord
