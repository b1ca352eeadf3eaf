#include "sdk/cpp/client.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <zmq.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/protocol.h"
#include "runtime/util/sha256.h"
#include "runtime/util/status_macros.h"

namespace fjord {

using nlohmann::json;
using protocol::ClientMessage;
using protocol::Frames;
using protocol::MessageType;
using protocol::ServerMessage;

namespace {

// One process-wide context, never destroyed (no hang at exit on a socket
// someone forgot); thread-safe per libzmq.
zmq::context_t& SharedContext() {
  static zmq::context_t* ctx = new zmq::context_t(1);
  return *ctx;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  return absl::BytesToHexString(raw);
}

absl::StatusOr<protocol::Job> JobFromReply(const ServerMessage& reply) {
  return protocol::JobFromJson(reply.body);
}

}  // namespace

struct Client::Impl {
  ClientOptions options;
  std::unique_ptr<zmq::socket_t> dealer;
  std::unique_ptr<zmq::socket_t> monitor;
  std::string monitor_endpoint;
  std::string id_prefix = RandomHex(4);
  uint64_t next_id = 1;
  uint64_t sockets_opened = 0;
  // What the current socket has seen: a transport connection, a completed
  // handshake (or any message). A timeout without a handshake means nobody
  // fjordd-like answered: retrying would not help.
  bool transport_ok = false;
  bool handshake_ok = false;
  int handshakes = 0;  // completed on this socket; a second one means ZeroMQ reconnected
  // The daemon's heartbeat interval and liveness (learn_heartbeat), once asked.
  std::optional<int64_t> daemon_heartbeat_ms;
  int64_t daemon_liveness = protocol::kHeartbeatLiveness;

  ~Impl() { CloseSocket(); }

  std::string NextRequestId() { return absl::StrCat(id_prefix, "-", next_id++); }

  void CloseSocket() {
    if (dealer) {
      zmq_socket_monitor(dealer->handle(), nullptr, 0);
      dealer->close();
      dealer.reset();
    }
    if (monitor) {
      monitor->close();
      monitor.reset();
    }
  }

  absl::Status OpenSocket() {
    CloseSocket();
    transport_ok = handshake_ok = false;
    handshakes = 0;
    try {
      dealer = std::make_unique<zmq::socket_t>(SharedContext(), zmq::socket_type::dealer);
      dealer->set(zmq::sockopt::linger, 0);
      if (!options.server_public_key.empty()) {
        dealer->set(zmq::sockopt::curve_serverkey, options.server_public_key);
        dealer->set(zmq::sockopt::curve_publickey, options.client_keys.public_key);
        dealer->set(zmq::sockopt::curve_secretkey, options.client_keys.secret_key);
      }
      static std::atomic<uint64_t> monitors{0};
      monitor_endpoint =
          absl::StrCat("inproc://fjord-client-monitor-", ::getpid(), "-", monitors++);
      ++sockets_opened;
      if (zmq_socket_monitor(dealer->handle(), monitor_endpoint.c_str(),
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_CONNECTED |
                                 ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0) {
        return absl::InternalError(absl::StrCat("zmq_socket_monitor: ", zmq_strerror(zmq_errno())));
      }
      monitor = std::make_unique<zmq::socket_t>(SharedContext(), zmq::socket_type::pair);
      monitor->set(zmq::sockopt::linger, 0);
      monitor->connect(monitor_endpoint);
      dealer->connect(options.endpoint);
    } catch (const zmq::error_t& e) {
      CloseSocket();
      return absl::InvalidArgumentError(
          absl::StrCat("cannot connect to '", options.endpoint, "': ", e.what()));
    }
    return absl::OkStatus();
  }

  // Sends by deadline_ms. While the socket has no connection to queue on
  // (still connecting, or the daemon dropped it after a failed handshake), it
  // waits for one, or for the monitor to say why there is none (a refused
  // handshake: Unauthenticated). DeadlineExceeded when neither came in time.
  absl::Status Send(const Frames& frames, int64_t deadline_ms) {
    for (size_t i = 0; i < frames.size(); ++i) {
      const auto flags =
          (i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none) |
          zmq::send_flags::dontwait;
      while (true) {
        zmq::send_result_t r;
        try {
          r = dealer->send(zmq::buffer(frames[i]), flags);
        } catch (const zmq::error_t& e) {
          return absl::UnavailableError(absl::StrCat("send to ", options.endpoint, ": ", e.what()));
        }
        if (r) break;
        const int64_t wait = deadline_ms - NowMs();
        if (wait <= 0) {
          return absl::DeadlineExceededError(absl::StrCat("no connection to ", options.endpoint,
                                                          " to send on within the timeout"));
        }
        zmq::pollitem_t items[] = {{dealer->handle(), 0, ZMQ_POLLOUT, 0},
                                   {monitor->handle(), 0, ZMQ_POLLIN, 0}};
        try {
          zmq::poll(items, 2, std::chrono::milliseconds(std::min<int64_t>(wait, 50)));
        } catch (const zmq::error_t& e) {
          if (e.num() != EINTR) return absl::UnavailableError(absl::StrCat("poll: ", e.what()));
        }
        if (items[1].revents & ZMQ_POLLIN) FJORD_RETURN_IF_ERROR(ReadMonitorEvent());
      }
    }
    return absl::OkStatus();
  }

  // A handshake failure reported by the monitor, as Unauthenticated; OK when
  // the event was something else.
  absl::Status ReadMonitorEvent() {
    zmq::message_t ev, addr;
    if (!monitor->recv(ev, zmq::recv_flags::dontwait)) return absl::OkStatus();
    if (ev.more()) (void)monitor->recv(addr, zmq::recv_flags::dontwait);
    if (ev.size() < 6) return absl::OkStatus();
    uint16_t event;
    uint32_t value;
    std::memcpy(&event, ev.data(), 2);
    std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    if (event == ZMQ_EVENT_CONNECTED) transport_ok = true;
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) handshake_ok = true, ++handshakes;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the daemon at ", options.endpoint, " refused this client's CURVE key (ZAP status ",
          value, "): the key is not in its keys file"));
    }
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
        event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
      return absl::UnauthenticatedError(
          absl::StrCat("security handshake with ", options.endpoint, " failed",
                       options.server_public_key.empty()
                           ? " (the daemon requires CURVE: set server_public_key and client keys)"
                           : " (wrong server public key, or the daemon does not use CURVE)"));
    }
    return absl::OkStatus();
  }

  // The error for a wait of waited_ms that ended without a handshake.
  absl::Status Unreachable(int64_t waited_ms) const {
    const std::string waited = absl::StrCat(static_cast<double>(waited_ms) / 1000.0, " s");
    if (transport_ok) {
      return absl::UnavailableError(absl::StrCat(
          "connected to ", options.endpoint, " but no fjord handshake within ", waited, ": ",
          options.server_public_key.empty() ? "is it fjordd, and does it allow plain connections?"
                                            : "is the server public key right, and is it fjordd?"));
    }
    return absl::UnavailableError(absl::StrCat("no reply from ", options.endpoint, " within ",
                                               waited, ": is fjordd running?"));
  }

  // The next message from the daemon, waiting until deadline_ms.
  // DeadlineExceeded when nothing came.
  absl::StatusOr<ServerMessage> Receive(int64_t deadline_ms) {
    while (true) {
      const int64_t wait = std::max<int64_t>(0, deadline_ms - NowMs());
      zmq::pollitem_t items[] = {{dealer->handle(), 0, ZMQ_POLLIN, 0},
                                 {monitor->handle(), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, std::chrono::milliseconds(wait));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        return absl::UnavailableError(absl::StrCat("poll: ", e.what()));
      }
      if (items[1].revents & ZMQ_POLLIN) FJORD_RETURN_IF_ERROR(ReadMonitorEvent());
      if (items[0].revents & ZMQ_POLLIN) {
        handshake_ok = true;  // a message proves the connection
        Frames frames;
        while (true) {
          zmq::message_t part;
          if (!dealer->recv(part, zmq::recv_flags::dontwait)) break;
          frames.push_back(part.to_string());
          if (!part.more()) break;
        }
        protocol::DecodeLimits limits;
        limits.max_message_bytes = SIZE_MAX;
        limits.max_body_bytes = SIZE_MAX;
        limits.max_data_bytes = SIZE_MAX;
        absl::StatusOr<ServerMessage> m = protocol::DecodeServerMessage(frames, limits);
        if (!m.ok()) {
          return absl::InternalError(
              absl::StrCat("malformed reply from ", options.endpoint, ": ", m.status().message()));
        }
        return m;
      }
      if (NowMs() >= deadline_ms) {
        return absl::DeadlineExceededError(absl::StrCat("no reply from ", options.endpoint,
                                                        " within ", options.timeout_ms, " ms"));
      }
    }
  }

  // The FINAL reply to request_id (other messages are dropped).
  absl::StatusOr<ServerMessage> AwaitFinal(const std::string& request_id, int64_t deadline_ms) {
    while (true) {
      FJORD_ASSIGN_OR_RETURN(ServerMessage m, Receive(deadline_ms));
      if (m.type == MessageType::kFinal && m.request_id == request_id) return m;
    }
  }

  absl::StatusOr<ServerMessage> Call(const std::string& command, json body,
                                     std::optional<std::string> data) {
    ClientMessage req;
    req.command = command;
    req.body = std::move(body);
    req.data = std::move(data);
    absl::Status last;
    for (int attempt = 0; attempt <= options.retries; ++attempt) {
      if (!dealer) FJORD_RETURN_IF_ERROR(OpenSocket());
      req.request_id = NextRequestId();
      const int64_t deadline_ms = NowMs() + options.timeout_ms;
      // A send that found no connection in time is a timeout like a missing reply.
      const absl::Status sent = Send(protocol::EncodeClientMessage(req), deadline_ms);
      absl::StatusOr<ServerMessage> reply =
          sent.ok() ? AwaitFinal(req.request_id, deadline_ms) : sent;
      if (reply.ok()) {
        FJORD_RETURN_IF_ERROR(protocol::StatusFromReply(reply->status, reply->body));
        return reply;
      }
      last = reply.status();
      if (last.code() != absl::StatusCode::kDeadlineExceeded) return last;
      if (!handshake_ok) {  // nothing is there: one timeout is enough
        absl::Status down = Unreachable(options.timeout_ms);
        CloseSocket();
        return down;
      }
      CloseSocket();  // lazy pirate: a fresh connection for the retry
    }
    return absl::DeadlineExceededError(absl::StrCat("no reply from ", options.endpoint, " to '",
                                                    command, "' within ", options.timeout_ms,
                                                    " ms, ", options.retries + 1, " attempts"));
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (sodium_init() < 0) return absl::InternalError("libsodium failed to initialise");
  if (!absl::StartsWith(options.endpoint, "tcp://") &&
      !absl::StartsWith(options.endpoint, "ipc://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "endpoint must be tcp://HOST:PORT or ipc://PATH, got '", options.endpoint, "'"));
  }
  if (!options.server_public_key.empty()) {
    if (!ValidZ85Key(options.server_public_key)) {
      return absl::InvalidArgumentError("server_public_key is not a Z85 CURVE key (40 characters)");
    }
    if (!ValidZ85Key(options.client_keys.public_key) ||
        !ValidZ85Key(options.client_keys.secret_key)) {
      return absl::InvalidArgumentError(
          "client_keys must hold a Z85 CURVE key pair with server_public_key");
    }
  }
  if (options.timeout_ms <= 0 || options.retries < 0 || options.heartbeat_interval_ms <= 0 ||
      options.heartbeat_liveness <= 0) {
    return absl::InvalidArgumentError(
        "timeout_ms, heartbeat_interval_ms, heartbeat_liveness must be > 0, retries >= 0");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  FJORD_RETURN_IF_ERROR(impl->OpenSocket());
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

absl::StatusOr<ServerMessage> Client::Call(const std::string& command, json body,
                                           std::optional<std::string> data) {
  return impl_->Call(command, std::move(body), std::move(data));
}

absl::StatusOr<PingInfo> Client::Ping() {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kPing, json::object()));
  PingInfo p;
  p.raw = r.body;
  p.protocol = r.body.value("protocol", 0);
  p.version = r.body.value("version", "");
  p.node = r.body.value("node", "");
  p.heartbeat_interval_ms = r.body.value("heartbeat_interval_ms", int64_t{0});
  if (r.body.contains("principal") && r.body["principal"].is_object()) {
    p.tenant = r.body["principal"].value("tenant", "");
    p.role = r.body["principal"].value("role", "");
  }
  return p;
}

absl::StatusOr<std::vector<std::string>> Client::ListModels() {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kModelList, json::object()));
  std::vector<std::string> names;
  if (r.body.contains("models") && r.body["models"].is_array()) {
    for (const json& m : r.body["models"]) {
      if (m.is_object() && m.contains("name") && m["name"].is_string()) names.push_back(m["name"]);
    }
  }
  return names;
}

absl::StatusOr<protocol::Job> Client::CreateJob(const protocol::JobSpec& spec) {
  protocol::JobSpec s = spec;
  if (s.idempotency_key.empty()) s.idempotency_key = RandomHex(16);
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kJobCreate, protocol::JobSpecToJson(s)));
  return JobFromReply(r);
}

absl::StatusOr<protocol::Job> Client::GetJob(const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kJobGet, json{{"job_id", job_id}}));
  return JobFromReply(r);
}

absl::StatusOr<JobPage> Client::ListJobs(const ListJobsOptions& o) {
  json body{{"limit", o.limit}};
  if (!o.statuses.empty()) {
    json st = json::array();
    for (protocol::JobStatus s : o.statuses) st.push_back(protocol::JobStatusName(s));
    body["status"] = st;
  }
  if (!o.after.empty()) body["after"] = o.after;
  if (!o.tenant.empty()) body["tenant"] = o.tenant;
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kJobList, body));
  JobPage page;
  page.has_more = r.body.value("has_more", false);
  if (r.body.contains("jobs") && r.body["jobs"].is_array()) {
    for (const json& j : r.body["jobs"]) {
      FJORD_ASSIGN_OR_RETURN(protocol::Job job, protocol::JobFromJson(j));
      page.jobs.push_back(std::move(job));
    }
  }
  return page;
}

absl::StatusOr<protocol::Job> Client::CancelJob(const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kJobCancel, json{{"job_id", job_id}}));
  return JobFromReply(r);
}

absl::StatusOr<protocol::Job> Client::PauseJob(const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kJobPause, json{{"job_id", job_id}}));
  return JobFromReply(r);
}

absl::StatusOr<protocol::Job> Client::ResumeJob(const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kJobResume, json{{"job_id", job_id}}));
  return JobFromReply(r);
}

absl::StatusOr<protocol::Job> Client::DeleteJob(const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kJobDelete, json{{"job_id", job_id}}));
  return JobFromReply(r);
}

absl::StatusOr<EventPage> Client::ListEvents(const std::string& job_id, int64_t after_seq,
                                             int limit) {
  FJORD_ASSIGN_OR_RETURN(
      ServerMessage r, Call(protocol::kJobEvents,
                            json{{"job_id", job_id}, {"after_seq", after_seq}, {"limit", limit}}));
  EventPage page;
  page.has_more = r.body.value("has_more", false);
  if (r.body.contains("events") && r.body["events"].is_array()) {
    for (const json& e : r.body["events"]) {
      FJORD_ASSIGN_OR_RETURN(protocol::JobEvent ev, protocol::JobEventFromJson(e));
      page.events.push_back(std::move(ev));
    }
  }
  return page;
}

absl::StatusOr<protocol::Job> Client::StreamEvents(
    const std::string& job_id, int64_t after_seq,
    const std::function<bool(const protocol::JobEvent&)>& on_event) {
  Impl& im = *impl_;
  int64_t interval = im.options.heartbeat_interval_ms;
  int64_t silence_limit = interval * im.options.heartbeat_liveness;
  if (im.options.learn_heartbeat) {
    if (!im.daemon_heartbeat_ms) {
      FJORD_ASSIGN_OR_RETURN(PingInfo p, Ping());
      const int64_t liveness = p.raw.value("liveness", int64_t{protocol::kHeartbeatLiveness});
      im.daemon_heartbeat_ms = p.heartbeat_interval_ms > 0 ? p.heartbeat_interval_ms
                                                           : protocol::kDefaultHeartbeatIntervalMs;
      im.daemon_liveness = liveness > 0 ? liveness : protocol::kHeartbeatLiveness;
    }
    interval = std::min(interval, *im.daemon_heartbeat_ms);
    silence_limit = *im.daemon_heartbeat_ms * im.daemon_liveness;
  }
  int64_t last_seq = after_seq;
  int resubscribes = 0;
  while (true) {
    if (!im.dealer) FJORD_RETURN_IF_ERROR(im.OpenSocket());
    ClientMessage sub;
    sub.request_id = im.NextRequestId();
    sub.command = protocol::kJobSubscribe;
    sub.body = json{{"job_id", job_id}, {"after_seq", last_seq}};
    FJORD_RETURN_IF_ERROR(
        im.Send(protocol::EncodeClientMessage(sub), NowMs() + im.options.timeout_ms));
    const int sub_handshakes = std::max(im.handshakes, 1);
    int64_t last_heard = NowMs();
    int64_t last_sent = last_heard;
    int64_t next_beat = last_heard + interval;
    bool cancelled = false;
    // The daemon no longer has this stream, though it still answers heartbeats:
    // it restarted (ZeroMQ reconnected by itself), or on_event kept us silent
    // past its peer timeout. Subscribe again, not counted as a failure.
    bool dropped = false;
    while (true) {
      const int64_t now = NowMs();
      if (now >= next_beat) {
        ClientMessage hb;
        hb.type = MessageType::kHeartbeat;
        FJORD_RETURN_IF_ERROR(
            im.Send(protocol::EncodeClientMessage(hb), NowMs() + im.options.timeout_ms));
        last_sent = now;
        next_beat = now + interval;
      }
      const int64_t deadline = std::min(next_beat, last_heard + silence_limit);
      absl::StatusOr<ServerMessage> m = im.Receive(deadline);
      if (im.handshakes > sub_handshakes) {
        dropped = true;
        break;
      }
      if (!m.ok()) {
        if (m.status().code() != absl::StatusCode::kDeadlineExceeded) return m.status();
        if (NowMs() - last_heard < silence_limit) continue;  // time to heartbeat
        break;  // the daemon went silent: resubscribe on a fresh socket
      }
      last_heard = NowMs();
      if (m->type == MessageType::kHeartbeat || m->request_id != sub.request_id) continue;
      if (m->type == MessageType::kFinal) {
        FJORD_RETURN_IF_ERROR(protocol::StatusFromReply(m->status, m->body));
        if (!m->body.contains("job")) {
          return absl::InternalError("malformed reply: the stream's FINAL has no job");
        }
        return protocol::JobFromJson(m->body["job"]);
      }
      if (cancelled || !m->body.contains("event")) continue;
      FJORD_ASSIGN_OR_RETURN(protocol::JobEvent ev, protocol::JobEventFromJson(m->body["event"]));
      if (ev.seq <= last_seq) continue;  // already seen (after a resubscribe)
      last_seq = ev.seq;
      if (!on_event(ev)) {
        ClientMessage cancel;
        cancel.type = MessageType::kCancel;
        cancel.request_id = sub.request_id;
        FJORD_RETURN_IF_ERROR(
            im.Send(protocol::EncodeClientMessage(cancel), NowMs() + im.options.timeout_ms));
        cancelled = true;
      } else if (NowMs() - last_sent >= silence_limit) {
        dropped = true;
        break;
      }
      last_heard = NowMs();  // on_event's time is not the daemon's silence
    }
    if (dropped) {
      im.CloseSocket();
      continue;
    }
    if (!im.handshake_ok) {
      absl::Status down = im.Unreachable(silence_limit);
      im.CloseSocket();
      return down;
    }
    im.CloseSocket();
    if (++resubscribes > im.options.retries) {
      return absl::UnavailableError(absl::StrCat("the daemon at ", im.options.endpoint,
                                                 " went silent for ", silence_limit,
                                                 " ms during the event stream of ", job_id));
    }
  }
}

absl::StatusOr<std::vector<protocol::CheckpointInfo>> Client::ListCheckpoints(
    const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r,
                         Call(protocol::kJobCheckpoints, json{{"job_id", job_id}}));
  std::vector<protocol::CheckpointInfo> out;
  if (r.body.contains("checkpoints") && r.body["checkpoints"].is_array()) {
    for (const json& c : r.body["checkpoints"]) {
      FJORD_ASSIGN_OR_RETURN(protocol::CheckpointInfo ci, protocol::CheckpointFromJson(c));
      out.push_back(std::move(ci));
    }
  }
  return out;
}

namespace {

// Reads [offset, offset+n) of a stream source: a file or a string.
struct UploadSource {
  const std::string* bytes = nullptr;
  std::ifstream* file = nullptr;
  absl::StatusOr<std::string> Read(uint64_t offset, size_t n) {
    if (bytes) return bytes->substr(offset, n);
    std::string buf(n, '\0');
    file->clear();
    file->seekg(static_cast<std::streamoff>(offset));
    file->read(buf.data(), static_cast<std::streamsize>(n));
    if (file->gcount() != static_cast<std::streamsize>(n)) {
      return absl::DataLossError("the local file changed size during the upload");
    }
    return buf;
  }
};

absl::StatusOr<protocol::FileInfo> Upload(Client& c, UploadSource src, uint64_t size,
                                          const std::string& sha, const std::string& filename) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage begin,
                         c.Call(protocol::kFileUploadBegin,
                                json{{"filename", filename}, {"bytes", size}, {"sha256", sha}}));
  const std::string upload_id = begin.body.value("upload_id", "");
  const uint64_t chunk =
      begin.body.value("chunk_bytes", uint64_t{protocol::kDefaultUploadChunkBytes});
  if (upload_id.empty() || chunk == 0)
    return absl::InternalError("malformed reply to file.upload.begin");
  for (uint64_t off = 0; off < size; off += chunk) {
    FJORD_ASSIGN_OR_RETURN(std::string data, src.Read(off, std::min<uint64_t>(chunk, size - off)));
    FJORD_RETURN_IF_ERROR(c.Call(protocol::kFileUploadChunk,
                                 json{{"upload_id", upload_id}, {"offset", off}}, std::move(data))
                              .status());
  }
  FJORD_ASSIGN_OR_RETURN(ServerMessage fin,
                         c.Call(protocol::kFileUploadFinish, json{{"upload_id", upload_id}}));
  return protocol::FileInfoFromJson(fin.body);
}

}  // namespace

absl::StatusOr<protocol::FileInfo> Client::UploadFile(const std::string& local_path,
                                                      const std::string& filename) {
  std::ifstream f(local_path, std::ios::binary);
  if (!f) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", local_path, ": ", std::strerror(errno)));
  }
  Sha256 h;
  uint64_t size = 0;
  std::string buf(1 << 20, '\0');
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = f.gcount();
    if (n <= 0) break;
    h.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
    size += static_cast<uint64_t>(n);
  }
  std::string name = filename;
  if (name.empty()) {
    const size_t slash = local_path.find_last_of('/');
    name = slash == std::string::npos ? local_path : local_path.substr(slash + 1);
  }
  UploadSource src;
  src.file = &f;
  return Upload(*this, src, size, h.FinalHex(), name);
}

absl::StatusOr<protocol::FileInfo> Client::UploadBytes(const std::string& bytes,
                                                       const std::string& filename) {
  UploadSource src;
  src.bytes = &bytes;
  return Upload(*this, src, bytes.size(), Sha256Hex(bytes), filename);
}

namespace {

// The files of a file.list reply.
absl::StatusOr<std::vector<protocol::FileInfo>> FilesOfListing(const json& body) {
  std::vector<protocol::FileInfo> out;
  if (body.contains("files") && body["files"].is_array()) {
    for (const json& f : body["files"]) {
      FJORD_ASSIGN_OR_RETURN(protocol::FileInfo fi, protocol::FileInfoFromJson(f));
      out.push_back(std::move(fi));
    }
  }
  return out;
}

// body[key] as a count (`what`: "byte count", "file count"): nullopt when
// absent or null (a daemon that does not report it), InternalError for
// anything but an integer >= 0.
absl::StatusOr<std::optional<uint64_t>> OptionalCount(const json& body, const char* key,
                                                      const char* what) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::optional<uint64_t>();
  if (!it->is_number_integer() || (!it->is_number_unsigned() && it->get<int64_t>() < 0)) {
    return absl::InternalError(
        absl::StrCat("malformed reply to file.list: ", key, " is ", it->dump(), ", not a ", what));
  }
  return std::optional<uint64_t>(it->get<uint64_t>());
}

// Every page of file.list (see Client::ListFiles). The first request is {}:
// its limit is the default, 1000, and a daemon older than paging refuses a
// field it does not know ("limit"); it sends no has_more, so it is never
// asked for an `after` either. with_usage: also read the four numbers (from
// each page, so the last page's are kept).
absl::StatusOr<FileListing> ListFilePages(Client& c, bool with_usage) {
  FileListing out;
  std::set<std::string> seen;
  json request = json::object();
  while (true) {
    FJORD_ASSIGN_OR_RETURN(ServerMessage r, c.Call(protocol::kFileList, request));
    FJORD_ASSIGN_OR_RETURN(std::vector<protocol::FileInfo> page, FilesOfListing(r.body));
    const std::string where =
        request.contains("after")
            ? absl::StrCat(" (the page after ", request["after"].get<std::string>(), ")")
            : std::string(" (the first page)");
    bool has_more = false;
    if (auto it = r.body.find("has_more"); it != r.body.end() && !it->is_null()) {
      if (!it->is_boolean()) {
        return absl::InternalError(absl::StrCat("malformed reply to file.list", where,
                                                ": has_more is ", it->dump(),
                                                ", not true or false"));
      }
      has_more = it->get<bool>();
    }
    if (with_usage) {
      FJORD_ASSIGN_OR_RETURN(out.usage_bytes, OptionalCount(r.body, "usage_bytes", "byte count"));
      FJORD_ASSIGN_OR_RETURN(out.quota_bytes, OptionalCount(r.body, "quota_bytes", "byte count"));
      FJORD_ASSIGN_OR_RETURN(out.usage_files, OptionalCount(r.body, "usage_files", "file count"));
      FJORD_ASSIGN_OR_RETURN(out.quota_files, OptionalCount(r.body, "quota_files", "file count"));
    }
    for (protocol::FileInfo& f : page) {
      if (!seen.insert(f.id).second) {
        return absl::InternalError(absl::StrCat("malformed reply to file.list", where, ": file ",
                                                f.id, " is listed twice"));
      }
      out.files.push_back(std::move(f));
    }
    if (!has_more) return out;
    if (page.empty()) {
      return absl::InternalError(absl::StrCat("malformed reply to file.list", where,
                                              ": has_more is true but the page has no files"));
    }
    request = json{{"after", out.files.back().id}};
  }
}

}  // namespace

absl::StatusOr<std::vector<protocol::FileInfo>> Client::ListFiles() {
  FJORD_ASSIGN_OR_RETURN(FileListing l, ListFilePages(*this, /*with_usage=*/false));
  return std::move(l.files);
}

absl::StatusOr<FileListing> Client::ListFilesWithUsage() {
  return ListFilePages(*this, /*with_usage=*/true);
}

absl::StatusOr<protocol::FileInfo> Client::DeleteFile(const std::string& file_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, Call(protocol::kFileDelete, json{{"file_id", file_id}}));
  return protocol::FileInfoFromJson(r.body);
}

namespace {

// The files `command` (adapter.files, report.files) lists for the job.
absl::StatusOr<std::vector<protocol::AdapterFile>> ListResultFiles(Client& c, const char* command,
                                                                   const std::string& job_id) {
  FJORD_ASSIGN_OR_RETURN(ServerMessage r, c.Call(command, json{{"job_id", job_id}}));
  std::vector<protocol::AdapterFile> out;
  if (!r.body.contains("files") || !r.body["files"].is_array()) {
    return absl::InternalError(absl::StrCat("malformed reply to ", command, ": no files"));
  }
  for (const json& f : r.body["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string()) {
      return absl::InternalError(
          absl::StrCat("malformed reply to ", command, ": a file without a name"));
    }
    out.push_back({f["name"], f.value("bytes", uint64_t{0}), f.value("sha256", "")});
  }
  return out;
}

// Downloads `files` into local_dir (created if missing) through `command`
// (adapter.download, report.download), chunk by chunk, each file written to
// NAME.part and renamed once it matches its size and SHA-256 (DataLoss
// otherwise, and the .part removed).
absl::Status DownloadResultFiles(Client& c, const char* command, const std::string& job_id,
                                 const std::vector<protocol::AdapterFile>& files,
                                 const std::string& local_dir) {
  if (::mkdir(local_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        absl::StrCat("mkdir ", local_dir, ": ", std::strerror(errno)));
  }
  for (const protocol::AdapterFile& af : files) {
    if (af.name.empty() || af.name.find('/') != std::string::npos || af.name == "." ||
        af.name == "..") {
      return absl::InternalError(absl::StrCat("the daemon named a file '", af.name, "'"));
    }
    const std::string path = local_dir + "/" + af.name;
    const std::string tmp = path + ".part";
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    Sha256 h;
    uint64_t offset = 0;
    absl::Status s = absl::OkStatus();
    while (true) {
      absl::StatusOr<ServerMessage> r =
          c.Call(command, json{{"job_id", job_id},
                               {"name", af.name},
                               {"offset", offset},
                               {"length", protocol::kDefaultUploadChunkBytes}});
      if (!r.ok()) {
        s = r.status();
        break;
      }
      const std::string data = r->data.value_or("");
      h.Update(data);
      out.write(data.data(), static_cast<std::streamsize>(data.size()));
      offset += data.size();
      if (r->body.value("eof", true)) break;
      if (data.empty()) {
        s = absl::InternalError(absl::StrCat(command, " returned an empty chunk before eof"));
        break;
      }
    }
    out.close();
    if (s.ok() && !out) s = absl::InternalError(absl::StrCat("cannot write ", tmp));
    if (s.ok()) {
      const std::string got = h.FinalHex();
      if (got != af.sha256 || offset != af.bytes) {
        s = absl::DataLossError(
            absl::StrCat("downloaded ", af.name, " (", offset, " bytes, sha256 ", got,
                         ") does not match the daemon's (", af.bytes, " bytes, ", af.sha256, ")"));
      }
    }
    if (!s.ok()) {
      std::remove(tmp.c_str());
      return s;
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("rename ", tmp, ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<protocol::AdapterFile>> Client::ListAdapterFiles(
    const std::string& job_id) {
  return ListResultFiles(*this, protocol::kAdapterFiles, job_id);
}

absl::StatusOr<std::vector<protocol::AdapterFile>> Client::DownloadAdapter(
    const std::string& job_id, const std::string& local_dir) {
  FJORD_ASSIGN_OR_RETURN(std::vector<protocol::AdapterFile> files, ListAdapterFiles(job_id));
  FJORD_RETURN_IF_ERROR(
      DownloadResultFiles(*this, protocol::kAdapterDownload, job_id, files, local_dir));
  return files;
}

absl::StatusOr<protocol::Job> Client::CreateEvaluation(const protocol::JobSpec& spec) {
  if (!spec.is_evaluation()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CreateEvaluation takes a spec of type evaluation, got '", spec.type, "' (use CreateJob)"));
  }
  return CreateJob(spec);
}

absl::StatusOr<std::vector<protocol::AdapterFile>> Client::ReportFiles(const std::string& job_id) {
  return ListResultFiles(*this, protocol::kReportFiles, job_id);
}

absl::StatusOr<std::vector<protocol::AdapterFile>> Client::DownloadReport(
    const std::string& job_id, const std::string& local_dir) {
  FJORD_ASSIGN_OR_RETURN(std::vector<protocol::AdapterFile> files, ReportFiles(job_id));
  FJORD_RETURN_IF_ERROR(
      DownloadResultFiles(*this, protocol::kReportDownload, job_id, files, local_dir));
  return files;
}

}  // namespace fjord
