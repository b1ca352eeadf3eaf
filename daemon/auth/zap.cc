#include "daemon/auth/zap.h"

#include <zmq.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/util/log.h"

namespace fjord::daemon {

absl::StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(zmq::context_t& context,
                                                              std::shared_ptr<const KeyRing> keys,
                                                              bool allow_null, Clock* clock) {
  std::unique_ptr<ZapHandler> h(new ZapHandler());
  h->keys_ = std::move(keys);
  h->allow_null_ = allow_null;
  h->clock_ = clock;
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
  std::lock_guard<std::mutex> l(refusal_mu_);
  if (window_start_ms_ >= 0) CloseWindow(clock_->NowMs());
}

void ZapHandler::Reload(std::shared_ptr<const KeyRing> keys) {
  std::lock_guard<std::mutex> l(mu_);
  keys_ = std::move(keys);
}

std::shared_ptr<const KeyRing> ZapHandler::keys() const {
  std::lock_guard<std::mutex> l(mu_);
  return keys_;
}

std::vector<std::string> ZapHandler::Handle(const std::vector<std::string>& req) {
  // version, request id, domain, address, identity, mechanism, credentials...
  std::string code = "400", text = "malformed ZAP request", user;
  if (req.size() >= 6 && req[0] == "1.0") {
    const std::string& address = req[3];
    const std::string& mechanism = req[5];
    if (mechanism == "CURVE" && req.size() >= 7 && req[6].size() == 32) {
      char z85[41];
      zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(req[6].data()), 32);
      if (keys()->Find(z85)) {
        code = "200", text = "OK", user = z85;
      } else {
        text = "unknown client key";
        Refuse(z85, mechanism, address);
      }
    } else if (mechanism == "NULL" && allow_null_) {
      code = "200", text = "OK", user = "plaintext";
    } else {
      text = absl::StrCat("mechanism ", mechanism, " not allowed");
      Refuse("", mechanism, address);
    }
  }
  return {"1.0", req.size() > 1 ? req[1] : "", code, text, user, ""};
}

void ZapHandler::Refuse(const std::string& key, const std::string& mechanism,
                        const std::string& address) {
  ++refused_;
  std::lock_guard<std::mutex> l(refusal_mu_);
  const int64_t now = clock_->NowMs();
  CloseWindowIfDue(now);
  if (window_start_ms_ < 0) window_start_ms_ = now;
  ++window_refused_;
  // Z85 has no spaces, so a key never equals a mechanism's subject.
  const std::string subject =
      key.empty() ? absl::StrCat("mechanism ", mechanism, " from ", address) : key;
  bool first = false, untracked = false;
  if (!subjects_.contains(subject)) {
    if (subjects_.size() < kMaxTrackedRefusals) {
      subjects_.insert(subject);
      first = true;
      if (!key.empty()) ++window_keys_;
    } else {
      untracked = true;
    }
  }
  if (!addresses_.contains(address)) {
    if (addresses_.size() < kMaxTrackedRefusals) {
      addresses_.insert(address);
    } else {
      untracked = true;
    }
  }
  if (untracked) ++window_untracked_;
  if (!first || window_lines_ >= kMaxRefusalLinesPerWindow) return;
  ++window_lines_;
  if (!key.empty()) {
    LogWarning("refused an unknown CURVE client key", {{"public_key", key}, {"peer", address}});
  } else {
    LogWarning("refused a handshake: mechanism not allowed",
               {{"mechanism", mechanism}, {"peer", address}});
  }
}

void ZapHandler::Tick() {
  std::lock_guard<std::mutex> l(refusal_mu_);
  CloseWindowIfDue(clock_->NowMs());
}

void ZapHandler::CloseWindowIfDue(int64_t now_ms) {
  if (window_start_ms_ >= 0 && now_ms - window_start_ms_ >= kRefusalWindowMs) CloseWindow(now_ms);
}

void ZapHandler::CloseWindow(int64_t now_ms) {
  if (window_refused_ > window_lines_) {
    LogWarning("refused handshakes (summary of a 60 s window)",
               {{"refused", window_refused_},
                {"not_logged", window_refused_ - window_lines_},
                {"keys", window_keys_},
                {"addresses", addresses_.size()},
                {"untracked", window_untracked_},
                {"window_ms", now_ms - window_start_ms_}});
  }
  window_start_ms_ = -1;
  window_refused_ = window_lines_ = window_untracked_ = window_keys_ = 0;
  subjects_.clear();
  addresses_.clear();
}

void ZapHandler::Run() {
  while (!stop_.load()) {
    Tick();
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
    const std::vector<std::string> reply = Handle(req);
    for (size_t i = 0; i < reply.size(); ++i) {
      socket_->send(zmq::buffer(reply[i]),
                    i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
}

}  // namespace fjord::daemon
