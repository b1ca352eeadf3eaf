#include "daemon/server/sessions.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/protocol.h"
#include "daemon/util/log.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::Job;
using protocol::JobEvent;
using protocol::MessageType;
using protocol::ServerMessage;

namespace {

// A download chunk in ZeroMQ's hands: freed (and uncounted) by its I/O
// thread once sent, or at once when dropped.
struct QueuedChunk {
  std::string bytes;
  std::shared_ptr<std::atomic<int64_t>> counter;
};
void FreeQueuedChunk(void*, void* hint) {
  std::unique_ptr<QueuedChunk> chunk(static_cast<QueuedChunk*>(hint));
  chunk->counter->fetch_sub(1);
}

}  // namespace

Sessions::Sessions(zmq::socket_t* router, Clock* clock, const DaemonConfig::Limits* limits,
                   JobStore* store, JobLifecycle* jobs)
    : router_(router), clock_(clock), limits_(limits), store_(store), jobs_(jobs) {}

// ---- sending ------------------------------------------------------------------

void Sessions::SendFrames(const std::string& identity, const protocol::Frames& frames) {
  try {
    router_->send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    for (size_t i = 0; i < frames.size(); ++i) {
      router_->send(zmq::buffer(frames[i]),
                    (i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none) |
                        zmq::send_flags::dontwait);
    }
  } catch (const zmq::error_t& e) {
    LogWarning("send failed", {{"error", e.what()}});
  }
  auto it = peers_.find(identity);
  if (it != peers_.end()) it->second.last_sent_ms = clock_->NowMs();
}

void Sessions::Send(const std::string& identity, const ServerMessage& m) {
  SendFrames(identity, protocol::EncodeServerMessage(m));
}

void Sessions::SendChunk(const std::string& identity, const ServerMessage& m) {
  auto peer = peers_.find(identity);
  protocol::Frames frames = protocol::EncodeServerMessage(m);
  if (peer == peers_.end() || frames.empty()) return SendFrames(identity, frames);
  auto chunk = std::make_unique<QueuedChunk>(
      QueuedChunk{std::move(frames.back()), peer->second.queued_chunks});
  frames.pop_back();
  chunk->counter->fetch_add(1);
  QueuedChunk* raw = chunk.release();
  zmq::message_t last(raw->bytes.data(), raw->bytes.size(), &FreeQueuedChunk, raw);
  try {
    router_->send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    for (const std::string& f : frames) {
      router_->send(zmq::buffer(f), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    }
    router_->send(last, zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    LogWarning("send failed", {{"error", e.what()}});
  }
  peer->second.last_sent_ms = clock_->NowMs();
}

int64_t Sessions::QueuedChunks(const std::string& identity) const {
  auto it = peers_.find(identity);
  return it == peers_.end() ? 0 : it->second.queued_chunks->load();
}

// ---- peers ----------------------------------------------------------------------

std::string Sessions::Admit(const std::string& identity, const std::string& key,
                            const Principal& p) {
  const int total = static_cast<int>(peers_.size());
  const int reserved = std::min(limits_->admin_reserved_peers, limits_->max_peers - 1);
  if (total >= limits_->max_peers || (!p.admin && total >= limits_->max_peers - reserved)) {
    return absl::StrCat("the daemon serves at most ", limits_->max_peers, " connections (",
                        reserved, " of them kept for admins); try later");
  }
  int& of_key = peers_per_key_[key];
  if (of_key >= limits_->max_peers_per_key) {
    return absl::StrCat("client key '", p.key_name, "' has ", of_key,
                        " connections open, the most one key may hold (", "at most ",
                        limits_->max_peers_per_key,
                        " connections per key); close some or try later");
  }
  ++of_key;
  Peer peer;
  peer.key = key;
  peers_.emplace(identity, std::move(peer));
  return "";
}

void Sessions::Heard(const std::string& identity) {
  auto it = peers_.find(identity);
  if (it != peers_.end()) it->second.last_heard_ms = clock_->NowMs();
}

void Sessions::Forget(const std::string& identity) {
  auto it = peers_.find(identity);
  if (it != peers_.end()) Erase(it);
}

std::map<std::string, Sessions::Peer>::iterator Sessions::Erase(
    std::map<std::string, Peer>::iterator it) {
  auto k = peers_per_key_.find(it->second.key);
  if (k != peers_per_key_.end() && --k->second <= 0) peers_per_key_.erase(k);
  return peers_.erase(it);
}

// ---- streams ----------------------------------------------------------------------

absl::Status Sessions::Subscribe(const std::string& identity, const std::string& request_id,
                                 const std::string& job_id, int64_t after_seq) {
  Peer& peer = peers_[identity];
  if (static_cast<int>(peer.streams.size()) >= limits_->max_streams_per_peer) {
    return protocol::Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("at most ", limits_->max_streams_per_peer, " streams per connection"),
        "streams");
  }
  if (peer.streams.count(request_id)) {
    return protocol::InvalidArgument("a stream with this request id is already open", "request_id");
  }
  peer.streams[request_id] = Stream{job_id, after_seq};
  PumpFor(job_id);
  return absl::OkStatus();
}

void Sessions::Cancel(const std::string& identity, const std::string& request_id) {
  auto peer = peers_.find(identity);
  if (peer == peers_.end()) return;
  auto s = peer->second.streams.find(request_id);
  if (s == peer->second.streams.end()) {
    Send(identity, protocol::ErrorReply(
                       request_id, protocol::Error(absl::StatusCode::kNotFound,
                                                   absl::StrCat("no stream '", request_id,
                                                                "' is open on this connection"),
                                                   "request_id")));
    return;
  }
  absl::StatusOr<Job> j = jobs_->Load(s->second.job_id);
  peer->second.streams.erase(s);
  Send(identity, j.ok() ? protocol::OkReply(request_id, json{{"job", jobs_->ToJson(*j)}})
                        : protocol::ErrorReply(request_id, j.status()));
}

void Sessions::Pump(const std::string& identity, const std::string& request_id, Stream& st) {
  while (true) {
    absl::StatusOr<std::vector<JobEvent>> events = store_->ListEvents(st.job_id, st.last_seq, 500);
    if (!events.ok() || events->empty()) break;
    for (const JobEvent& e : *events) {
      Send(identity, protocol::OkReply(request_id, json{{"event", protocol::JobEventToJson(e)}},
                                       MessageType::kPartial));
      st.last_seq = e.seq;
    }
    if (events->size() < 500) break;
  }
}

void Sessions::PumpFor(const std::string& job_id) {
  std::optional<Job> final_job;
  for (auto& [identity, peer] : peers_) {
    for (auto it = peer.streams.begin(); it != peer.streams.end();) {
      if (it->second.job_id != job_id) {
        ++it;
        continue;
      }
      Pump(identity, it->first, it->second);
      if (!jobs_->live().count(job_id)) {
        if (!final_job) {
          absl::StatusOr<Job> j = store_->GetJob(job_id);
          if (j.ok()) final_job = *j;
        }
        if (final_job) {
          Send(identity, protocol::OkReply(it->first, json{{"job", jobs_->ToJson(*final_job)}}));
          it = peer.streams.erase(it);
          continue;
        }
      }
      ++it;
    }
  }
}

void Sessions::EndAll(const absl::Status& status) {
  for (auto& [identity, peer] : peers_) {
    for (const auto& [request_id, stream] : peer.streams)
      Send(identity, protocol::ErrorReply(request_id, status));
  }
  peers_.clear();
  peers_per_key_.clear();
}

void Sessions::Tick() {
  const int64_t now = clock_->NowMs();
  const int64_t interval = limits_->heartbeat_interval_ms;
  const int64_t expiry = interval * protocol::kHeartbeatLiveness;
  ServerMessage hb;
  hb.type = MessageType::kHeartbeat;
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (now - it->second.last_heard_ms > expiry) {
      if (!it->second.streams.empty())
        LogInfo("peer expired", {{"streams", it->second.streams.size()}});
      it = Erase(it);
      continue;
    }
    if (!it->second.streams.empty() && now - it->second.last_sent_ms >= interval)
      Send(it->first, hb);
    ++it;
  }
}

}  // namespace fjord::daemon
