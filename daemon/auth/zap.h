// The daemon's ZAP handler (ZeroMQ RFC 27): a thread with a REP socket on
// inproc://zeromq.zap.01 of the daemon's context. libzmq asks it about every
// CURVE handshake; it answers 200 with the client's Z85 public key as the
// User-Id (the server maps it to a Principal through the same KeyRing) when
// the key is in the keys file, and 400 otherwise, so an unknown key never
// completes a handshake. In plaintext mode (NULL mechanism) it accepts.
//
// Refused handshakes are logged so that no client can flood the log (a client
// without a key can invent a new one for every handshake). Refusals are
// grouped in windows of kRefusalWindowMs (60 s, opened by the first refusal
// after the previous window closed). In a window, the first refusal of each
// public key (of each mechanism and address, for a mechanism not allowed) is
// logged on its own line, for at most kMaxRefusalLinesPerWindow keys; the
// rest are counted. When the window closes, one summary line ("refused
// handshakes (summary of a 60 s window)") gives the refusals of the window,
// how many were not logged on their own line, and from how many keys and
// addresses; it is written only when some refusal was not logged on its own.
// At most kMaxTrackedRefusals keys and as many addresses are remembered per
// window: beyond that, refusals are still counted (`untracked` in the
// summary) and the key and address counts are lower bounds.
//
// The key ring can be swapped while running (Reload). Thread-safe.
#ifndef FJORD_DAEMON_AUTH_ZAP_H_
#define FJORD_DAEMON_AUTH_ZAP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/auth/keys.h"
#include "daemon/util/clock.h"

namespace fjord::daemon {

class ZapHandler {
 public:
  static constexpr int64_t kRefusalWindowMs = 60'000;
  static constexpr int64_t kMaxRefusalLinesPerWindow = 16;
  static constexpr size_t kMaxTrackedRefusals = 1024;

  // Binds the ZAP endpoint in `context` (which must outlive this). Must be
  // created before any CURVE server socket binds. `clock` (not owned, must
  // outlive this) times the refusal log's windows.
  static absl::StatusOr<std::unique_ptr<ZapHandler>> Start(zmq::context_t& context,
                                                           std::shared_ptr<const KeyRing> keys,
                                                           bool allow_null,
                                                           Clock* clock = Clock::Real());
  ~ZapHandler();  // stops the thread; logs the summary of a window still open

  void Reload(std::shared_ptr<const KeyRing> keys);
  std::shared_ptr<const KeyRing> keys() const;

  // Handshakes refused since Start: unknown CURVE keys and mechanisms not
  // allowed (a malformed ZAP request is not counted). Never decreases: export
  // it as a Prometheus counter. Thread-safe.
  int64_t refused() const { return refused_.load(); }

  // Answers one ZAP request (its frames: version, request id, domain,
  // address, identity, mechanism, credentials...) with the reply's frames
  // (version, request id, status code, status text, user id, metadata), and
  // logs a refusal as above. The thread calls it for each request; tests may
  // call it directly.
  std::vector<std::string> Handle(const std::vector<std::string>& request);

  // Closes the refusal window when kRefusalWindowMs have passed since it
  // opened, writing its summary line if one is due. The thread calls it at
  // least every 100 ms; tests call it after advancing their clock.
  void Tick();

 private:
  ZapHandler() = default;
  void Run();
  // Counts and logs one refused handshake: an unknown CURVE `key` (Z85), or
  // (key "") a `mechanism` not allowed; `address` is the peer's.
  void Refuse(const std::string& key, const std::string& mechanism, const std::string& address);
  // Require refusal_mu_. CloseWindow writes the summary line if one is due
  // and forgets the window.
  void CloseWindowIfDue(int64_t now_ms);
  void CloseWindow(int64_t now_ms);

  std::unique_ptr<zmq::socket_t> socket_;
  mutable std::mutex mu_;
  std::shared_ptr<const KeyRing> keys_;
  bool allow_null_ = false;
  Clock* clock_ = nullptr;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> refused_{0};
  std::thread thread_;

  // The open refusal window (window_start_ms_ < 0: none). Lines are written
  // while holding refusal_mu_, so a Tick that returns has seen any summary
  // another thread wrote.
  std::mutex refusal_mu_;
  int64_t window_start_ms_ = -1;
  int64_t window_refused_ = 0;
  int64_t window_lines_ = 0;                    // refusals logged on their own line
  int64_t window_untracked_ = 0;                // refusals whose key or address was not remembered
  int64_t window_keys_ = 0;                     // distinct public keys among subjects_
  absl::flat_hash_set<std::string> subjects_;   // at most kMaxTrackedRefusals
  absl::flat_hash_set<std::string> addresses_;  // at most kMaxTrackedRefusals
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_AUTH_ZAP_H_
