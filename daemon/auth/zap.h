// The daemon's ZAP handler (ZeroMQ RFC 27): a thread with a REP socket on
// inproc://zeromq.zap.01 of the daemon's context. libzmq asks it about every
// CURVE handshake; it answers 200 with the client's Z85 public key as the
// User-Id (the server maps it to a Principal through the same KeyRing) when
// the key is in the keys file, and 400 otherwise, so an unknown key never
// completes a handshake. In plaintext mode (NULL mechanism) it accepts.
//
// The key ring can be swapped while running (Reload). Thread-safe.
#ifndef FJORD_DAEMON_AUTH_ZAP_H_
#define FJORD_DAEMON_AUTH_ZAP_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "daemon/auth/keys.h"

namespace fjord::daemon {

class ZapHandler {
 public:
  // Binds the ZAP endpoint in `context` (which must outlive this). Must be
  // created before any CURVE server socket binds.
  static absl::StatusOr<std::unique_ptr<ZapHandler>> Start(zmq::context_t& context,
                                                           std::shared_ptr<const KeyRing> keys,
                                                           bool allow_null);
  ~ZapHandler();  // stops the thread

  void Reload(std::shared_ptr<const KeyRing> keys);
  std::shared_ptr<const KeyRing> keys() const;
  int64_t refused() const { return refused_.load(); }

 private:
  ZapHandler() = default;
  void Run();

  std::unique_ptr<zmq::socket_t> socket_;
  mutable std::mutex mu_;
  std::shared_ptr<const KeyRing> keys_;
  bool allow_null_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> refused_{0};
  std::thread thread_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_AUTH_ZAP_H_
