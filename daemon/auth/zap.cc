#include "daemon/auth/zap.h"

#include <zmq.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/util/log.h"

namespace fjord::daemon {

absl::StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(zmq::context_t& context,
                                                              std::shared_ptr<const KeyRing> keys,
                                                              bool allow_null) {
  std::unique_ptr<ZapHandler> h(new ZapHandler());
  h->keys_ = std::move(keys);
  h->allow_null_ = allow_null;
  try {
    h->socket_ = std::make_unique<zmq::socket_t>(context, zmq::socket_type::rep);
    h->socket_->set(zmq::sockopt::linger, 0);
    h->socket_->bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return absl::InternalError(absl::StrCat("cannot bind the ZAP handler: ", e.what()));
  }
  h->thread_ = std::thread([p = h.get()] { p->Run(); });
  return h;
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (socket_) socket_->close();
}

void ZapHandler::Reload(std::shared_ptr<const KeyRing> keys) {
  std::lock_guard<std::mutex> l(mu_);
  keys_ = std::move(keys);
}

std::shared_ptr<const KeyRing> ZapHandler::keys() const {
  std::lock_guard<std::mutex> l(mu_);
  return keys_;
}

void ZapHandler::Run() {
  while (!stop_.load()) {
    zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t&) {
      continue;
    }
    if (!(item.revents & ZMQ_POLLIN)) continue;
    std::vector<std::string> req;
    while (true) {
      zmq::message_t m;
      if (!socket_->recv(m)) break;
      req.push_back(m.to_string());
      if (!m.more()) break;
    }
    // version, request id, domain, address, identity, mechanism, credentials...
    std::string code = "400", text = "malformed ZAP request", user;
    if (req.size() >= 6 && req[0] == "1.0") {
      const std::string& mechanism = req[5];
      if (mechanism == "CURVE" && req.size() >= 7 && req[6].size() == 32) {
        char z85[41];
        zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(req[6].data()), 32);
        if (keys()->Find(z85)) {
          code = "200", text = "OK", user = z85;
        } else {
          text = "unknown client key";
          ++refused_;
          LogWarning("refused an unknown CURVE client key", {{"public_key", std::string(z85)}, {"peer", req[3]}});
        }
      } else if (mechanism == "NULL" && allow_null_) {
        code = "200", text = "OK", user = "plaintext";
      } else {
        text = absl::StrCat("mechanism ", mechanism, " not allowed");
        ++refused_;
      }
    }
    const std::vector<std::string> reply = {"1.0", req.size() > 1 ? req[1] : "", code, text, user, ""};
    for (size_t i = 0; i < reply.size(); ++i) {
      socket_->send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
}

}  // namespace fjord::daemon
