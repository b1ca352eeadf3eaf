// Sessions: fjordd's peers (one per client connection, by ZeroMQ routing
// id), their event streams, and every message the daemon sends them.
//
// A peer is tracked from its first authenticated message until it goes
// silent for liveness x heartbeat interval or says DISCONNECT; how many are
// tracked is bounded in total, per client key, and with slots kept for
// admins (Admit). A stream (job.subscribe) gets every stored event of its
// job, then each new one, then a FINAL with the ended job.
//
// Not thread-safe: the server loop owns it (the download-chunk counters are
// atomics shared with ZeroMQ's I/O thread).
#ifndef FJORD_DAEMON_SERVER_SESSIONS_H_
#define FJORD_DAEMON_SERVER_SESSIONS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "daemon/auth/keys.h"
#include "daemon/jobs/lifecycle.h"
#include "daemon/jobs/store.h"
#include "daemon/metrics/metrics.h"
#include "daemon/protocol/codec.h"
#include "daemon/server/config.h"
#include "daemon/util/clock.h"

namespace fjord::daemon {

class Sessions {
 public:
  // None owned; each must outlive this. `router` is the daemon's ROUTER.
  Sessions(zmq::socket_t* router, Clock* clock, const DaemonConfig::Limits* limits, JobStore* store,
           JobLifecycle* jobs);

  // ---- sending ------------------------------------------------------------
  void Send(const std::string& identity, const protocol::ServerMessage& m);
  // A download chunk: handed to ZeroMQ without a copy and counted in the
  // peer's queue until ZeroMQ frees it (sent, or dropped).
  void SendChunk(const std::string& identity, const protocol::ServerMessage& m);
  // Download chunks of this peer not yet handed to the kernel.
  int64_t QueuedChunks(const std::string& identity) const;

  // ---- peers --------------------------------------------------------------
  bool Tracked(const std::string& identity) const { return peers_.count(identity) > 0; }
  // Tracks a new peer of `principal` (client key `key`) unless that would
  // pass limits.max_peers, the slots kept for admins
  // (limits.admin_reserved_peers, at most max_peers - 1) or the key's share
  // (limits.max_peers_per_key): "" when tracked, else the refusal's message.
  std::string Admit(const std::string& identity, const std::string& key,
                    const Principal& principal);
  void Heard(const std::string& identity);
  // DISCONNECT: the peer and its streams are forgotten at once.
  void Forget(const std::string& identity);
  size_t size() const { return peers_.size(); }

  // ---- streams --------------------------------------------------------------
  // Opens stream `request_id` on `job_id` from `after_seq` and sends what is
  // stored. RESOURCE_EXHAUSTED (param streams) past
  // limits.max_streams_per_peer; INVALID_ARGUMENT when the id is in use.
  absl::Status Subscribe(const std::string& identity, const std::string& request_id,
                         const std::string& job_id, int64_t after_seq);
  // CANCEL: ends the stream with a FINAL {"job": JOB}; NOT_FOUND (param
  // request_id) when no such stream is open on the connection.
  void Cancel(const std::string& identity, const std::string& request_id);
  // Sends the job's new events to its streams, and the FINAL once it ended.
  void PumpFor(const std::string& job_id);
  // Shutdown: every stream ends with `status`; every peer is forgotten.
  void EndAll(const absl::Status& status);

  // Timer: peers silent for liveness x interval are forgotten; peers with
  // streams that heard nothing for an interval get a HEARTBEAT.
  void Tick();

 private:
  struct Stream {
    std::string job_id;
    int64_t last_seq = 0;
  };
  struct Peer {
    std::string key;  // the client's public key ("plaintext" without CURVE)
    int64_t last_heard_ms = 0;
    int64_t last_sent_ms = 0;
    std::map<std::string, Stream> streams;  // by request id
    std::shared_ptr<std::atomic<int64_t>> queued_chunks = std::make_shared<std::atomic<int64_t>>(0);
  };
  void SendFrames(const std::string& identity, const protocol::Frames& frames);
  void Pump(const std::string& identity, const std::string& request_id, Stream& stream);
  std::map<std::string, Peer>::iterator Erase(std::map<std::string, Peer>::iterator it);

  zmq::socket_t* router_;
  Clock* clock_;
  const DaemonConfig::Limits* limits_;
  JobStore* store_;
  JobLifecycle* jobs_;
  std::map<std::string, Peer> peers_;
  std::map<std::string, int> peers_per_key_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_SESSIONS_H_
