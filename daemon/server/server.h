// fjordd's server: one thread, one loop (czmq / Majordomo style).
//
// PollOnce waits on the ROUTER socket, the worker sockets and a stop pipe
// with a timeout equal to the next timer (the next heartbeat tick; at most
// 50 ms while workers run, so exits are reaped promptly), then drains every
// ready message, handles worker events and exits, runs the scheduler when
// something changed, and on each heartbeat tick sends HEARTBEATs to peers with
// open streams and expires peers that went silent.
//
// Every change of a job goes through Apply(): the state machine's table
// (daemon/jobs/state_machine.h) decides, the SQLite store commits (fsynced),
// then subscribers are told. Worker progress events are batched and
// committed once per loop iteration.
//
// Threads: the loop is single-threaded and owns everything; the ZAP handler
// and the metrics HTTP server run in their own threads and share only the
// key ring and the Metrics registry (both thread-safe). RequestStop may be
// called from any thread or a signal handler.
#ifndef FJORD_DAEMON_SERVER_SERVER_H_
#define FJORD_DAEMON_SERVER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/server/config.h"
#include "daemon/util/clock.h"

namespace fjord::daemon {

class Server {
 public:
  // Validates the config against the machine it runs on (opens the store,
  // reads keys, takes the state directory's lock). `clock` null: the real
  // clock; it must outlive the server.
  static absl::StatusOr<std::unique_ptr<Server>> Create(DaemonConfig config,
                                                        Clock* clock = nullptr);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts the ZAP handler, binds every endpoint, recovers the jobs the last
  // run left unfinished (running ones are requeued) and starts the metrics
  // exporter.
  absl::Status Start();
  // One loop iteration, waiting at most max_wait_ms.
  void PollOnce(int max_wait_ms);
  // PollOnce until RequestStop, then a graceful shutdown: new requests get
  // UNAVAILABLE, training workers get SIGTERM (checkpoint and exit, SIGKILL
  // after the grace period) and their jobs are requeued, streams end.
  absl::Status Run();
  // Async-signal-safe.
  void RequestStop();
  // Reads the keys file again on the daemon's thread (SIGHUP); a file with
  // a problem is logged and leaves the keys in use as they are. Safe from a
  // signal handler.
  void RequestKeyReload();

  std::string public_key() const;  // "" in plaintext mode
  int metrics_port() const;        // 0 when disabled

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SERVER_SERVER_H_
