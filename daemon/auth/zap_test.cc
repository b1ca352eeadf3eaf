#include "daemon/auth/zap.h"

#include <zmq.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/util/clock.h"
#include "daemon/util/log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;

constexpr char kUnknownKeyLine[] = "refused an unknown CURVE client key";
constexpr char kMechanismLine[] = "refused a handshake: mechanism not allowed";
constexpr char kSummaryLine[] = "refused handshakes (summary of a 60 s window)";

// 32 bytes that differ for each i: a public key as ZAP sees it (the handler
// never checks that it is a point of the curve).
std::string RawKey(int i) {
  std::string key(32, '\x5a');
  for (int b = 0; b < 4; ++b) key[b] = static_cast<char>((i >> (8 * b)) & 0xff);
  return key;
}

std::string Z85(const std::string& raw) {
  char z85[41];
  zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
  return z85;
}

std::string Raw(const std::string& z85) {
  std::string raw(32, '\0');
  zmq_z85_decode(reinterpret_cast<uint8_t*>(raw.data()), z85.c_str());
  return raw;
}

// A ZAP request (RFC 27) as libzmq sends it for a handshake.
std::vector<std::string> ZapRequest(const std::string& mechanism, const std::string& address,
                                    const std::string& credentials = "") {
  std::vector<std::string> r = {"1.0", "req-1", "fjordd", address, "", mechanism};
  if (!credentials.empty()) r.push_back(credentials);
  return r;
}

// A handler on a context of its own, its clock, and the log lines it writes
// (the daemon's log sent to a file).
class ZapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    known_ = *GenerateCurveKeyPair();
    keys_ = std::make_shared<const KeyRing>(
        std::map<std::string, Principal>{{known_.public_key, Principal{"ci", "acme", false}}});
    log_path_ =
        absl::StrCat(::testing::TempDir(), "/",
                     ::testing::UnitTest::GetInstance()->current_test_info()->name(), ".log");
    std::remove(log_path_.c_str());
    ASSERT_TRUE(SetLogOutput(log_path_));
    absl::StatusOr<std::unique_ptr<ZapHandler>> zap =
        ZapHandler::Start(ctx_, keys_, /*allow_null=*/false, &clock_);
    ASSERT_TRUE(zap.ok()) << zap.status();
    zap_ = std::move(*zap);
  }
  void TearDown() override {
    zap_.reset();
    SetLogOutput("");
  }

  std::vector<json> Lines() const {
    std::vector<json> lines;
    std::ifstream f(log_path_);
    for (std::string line; std::getline(f, line);) lines.push_back(json::parse(line));
    return lines;
  }
  std::vector<std::string> Messages() const {
    std::vector<std::string> m;
    for (const json& l : Lines()) m.push_back(l["msg"]);
    return m;
  }

  zmq::context_t ctx_;
  FakeClock clock_;
  CurveKeyPair known_;
  std::shared_ptr<const KeyRing> keys_;
  std::string log_path_;
  std::unique_ptr<ZapHandler> zap_;
};

// A CURVE server socket on loopback that asks the handler (as fjordd's does).
class CurveServer {
 public:
  explicit CurveServer(zmq::context_t& ctx) : socket_(ctx, zmq::socket_type::router) {
    keys_ = *GenerateCurveKeyPair();
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::curve_server, 1);
    socket_.set(zmq::sockopt::curve_secretkey, keys_.secret_key);
    socket_.set(zmq::sockopt::zap_domain, "fjordd");
    socket_.bind("tcp://127.0.0.1:*");
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
  }
  // A client socket with `keys` that makes one handshake and never retries.
  std::unique_ptr<zmq::socket_t> Connect(zmq::context_t& ctx, const CurveKeyPair& keys) {
    auto c = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
    c->set(zmq::sockopt::linger, 0);
    c->set(zmq::sockopt::reconnect_ivl, -1);
    c->set(zmq::sockopt::curve_serverkey, keys_.public_key);
    c->set(zmq::sockopt::curve_publickey, keys.public_key);
    c->set(zmq::sockopt::curve_secretkey, keys.secret_key);
    c->connect(endpoint_);
    return c;
  }
  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
  CurveKeyPair keys_;
  std::string endpoint_;
};

bool WaitFor(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// The hostile-tenant probe: 300 handshakes with a key the daemon does not
// know wrote 300 warnings. Now: one line for the key, and once the window
// closes one summary with the count.
TEST_F(ZapTest, RepeatedRefusedHandshakesLogOneLineAndOneSummary) {
  CurveServer server(ctx_);
  zmq::context_t client_ctx;
  const CurveKeyPair stranger = *GenerateCurveKeyPair();
  for (int i = 1; i <= 300; ++i) {
    std::unique_ptr<zmq::socket_t> c = server.Connect(client_ctx, stranger);
    ASSERT_TRUE(WaitFor([&] { return zap_->refused() >= i; })) << "handshake " << i;
  }
  EXPECT_EQ(zap_->refused(), 300);
  EXPECT_THAT(Messages(), ElementsAre(kUnknownKeyLine));
  EXPECT_EQ(Lines()[0]["public_key"], stranger.public_key);
  EXPECT_EQ(Lines()[0]["peer"], "127.0.0.1");
  EXPECT_EQ(Lines()[0]["level"], "warning");

  clock_.Advance(ZapHandler::kRefusalWindowMs);
  zap_->Tick();
  ASSERT_THAT(Messages(), ElementsAre(kUnknownKeyLine, kSummaryLine));
  const json summary = Lines()[1];
  EXPECT_EQ(summary["refused"], 300);
  EXPECT_EQ(summary["not_logged"], 299);
  EXPECT_EQ(summary["keys"], 1);
  EXPECT_EQ(summary["addresses"], 1);
  EXPECT_EQ(summary["untracked"], 0);
  EXPECT_EQ(summary["window_ms"], ZapHandler::kRefusalWindowMs);
  zap_->Tick();  // once per window
  EXPECT_EQ(Lines().size(), 2u);
}

TEST_F(ZapTest, KnownKeyCompletesTheHandshakeWithItsKeyAsUserId) {
  CurveServer server(ctx_);
  zmq::context_t client_ctx;
  std::unique_ptr<zmq::socket_t> c = server.Connect(client_ctx, known_);
  c->send(zmq::str_buffer("hello"));
  server.socket().set(zmq::sockopt::rcvtimeo, 10000);
  zmq::message_t routing_id, body;
  ASSERT_TRUE(server.socket().recv(routing_id));
  ASSERT_TRUE(server.socket().recv(body));
  EXPECT_EQ(body.to_string(), "hello");
  EXPECT_EQ(std::string(body.gets("User-Id")), known_.public_key);
  EXPECT_EQ(zap_->refused(), 0);
  EXPECT_TRUE(Lines().empty());
}

// A client without a key can make a new one for every handshake: the lines
// stop at kMaxRefusalLinesPerWindow, the summary counts the keys.
TEST_F(ZapTest, InventedKeysLogAFewLinesAndTheSummaryCountsThem) {
  for (int i = 0; i < 300; ++i) {
    EXPECT_THAT(
        zap_->Handle(ZapRequest("CURVE", absl::StrCat("10.0.", i / 256, ".", i % 256), RawKey(i))),
        ElementsAre("1.0", "req-1", "400", "unknown client key", "", ""));
  }
  EXPECT_EQ(zap_->refused(), 300);
  std::vector<json> lines = Lines();
  ASSERT_EQ(lines.size(), static_cast<size_t>(ZapHandler::kMaxRefusalLinesPerWindow));
  for (int i = 0; i < ZapHandler::kMaxRefusalLinesPerWindow; ++i) {
    EXPECT_EQ(lines[i]["msg"], kUnknownKeyLine);
    EXPECT_EQ(lines[i]["public_key"], Z85(RawKey(i)));
  }
  clock_.Advance(ZapHandler::kRefusalWindowMs + 5);
  zap_->Tick();
  lines = Lines();
  ASSERT_EQ(lines.size(), ZapHandler::kMaxRefusalLinesPerWindow + 1u);
  EXPECT_EQ(lines.back()["msg"], kSummaryLine);
  EXPECT_EQ(lines.back()["refused"], 300);
  EXPECT_EQ(lines.back()["not_logged"], 300 - ZapHandler::kMaxRefusalLinesPerWindow);
  EXPECT_EQ(lines.back()["keys"], 300);
  EXPECT_EQ(lines.back()["addresses"], 300);
  EXPECT_EQ(lines.back()["untracked"], 0);
  EXPECT_EQ(lines.back()["window_ms"], ZapHandler::kRefusalWindowMs + 5);
}

// The bookkeeping of a window is bounded however many keys and addresses
// come: past kMaxTrackedRefusals, refusals are counted as untracked.
TEST_F(ZapTest, TrackedKeysAndAddressesAreBounded) {
  constexpr int kN = 3000;
  for (int i = 0; i < kN; ++i) {
    zap_->Handle(ZapRequest("CURVE", absl::StrCat("fd00::", i), RawKey(i)));
  }
  EXPECT_EQ(zap_->refused(), kN);
  clock_.Advance(ZapHandler::kRefusalWindowMs);
  zap_->Tick();
  const std::vector<json> lines = Lines();
  ASSERT_EQ(lines.size(), ZapHandler::kMaxRefusalLinesPerWindow + 1u);
  const json& summary = lines.back();
  EXPECT_EQ(summary["msg"], kSummaryLine);
  EXPECT_EQ(summary["refused"], kN);
  EXPECT_EQ(summary["not_logged"], kN - ZapHandler::kMaxRefusalLinesPerWindow);
  EXPECT_EQ(summary["keys"], ZapHandler::kMaxTrackedRefusals);
  EXPECT_EQ(summary["addresses"], ZapHandler::kMaxTrackedRefusals);
  EXPECT_EQ(summary["untracked"], kN - ZapHandler::kMaxTrackedRefusals);
}

// Each window starts afresh: a key is logged again in the next one, and a
// window whose refusals were all logged writes no summary.
TEST_F(ZapTest, WindowsAreIndependent) {
  const std::string key = RawKey(7);
  zap_->Handle(ZapRequest("CURVE", "192.0.2.1", key));
  clock_.Advance(ZapHandler::kRefusalWindowMs);
  zap_->Tick();
  EXPECT_THAT(Messages(), ElementsAre(kUnknownKeyLine));  // nothing left to summarise

  zap_->Handle(ZapRequest("CURVE", "192.0.2.1", key));
  zap_->Handle(ZapRequest("CURVE", "192.0.2.1", key));
  clock_.Advance(ZapHandler::kRefusalWindowMs - 1);
  zap_->Tick();
  EXPECT_THAT(Messages(), ElementsAre(kUnknownKeyLine, kUnknownKeyLine));
  // A refusal after the window is over closes it first (no Tick needed).
  clock_.Advance(1);
  zap_->Handle(ZapRequest("CURVE", "192.0.2.1", key));
  EXPECT_THAT(Messages(),
              ElementsAre(kUnknownKeyLine, kUnknownKeyLine, kSummaryLine, kUnknownKeyLine));
  EXPECT_EQ(Lines()[2]["refused"], 2);
  EXPECT_EQ(Lines()[2]["not_logged"], 1);
  EXPECT_EQ(zap_->refused(), 4);
}

TEST_F(ZapTest, RefusedMechanismsAreCountedAndLoggedOncePerAddress) {
  EXPECT_THAT(zap_->Handle(ZapRequest("PLAIN", "192.0.2.1", "user")),
              ElementsAre("1.0", "req-1", "400", "mechanism PLAIN not allowed", "", ""));
  zap_->Handle(ZapRequest("PLAIN", "192.0.2.1", "user"));
  zap_->Handle(ZapRequest("NULL", "192.0.2.1"));  // not allowed without allow_null
  zap_->Handle(ZapRequest("PLAIN", "192.0.2.2", "user"));
  EXPECT_EQ(zap_->refused(), 4);
  EXPECT_THAT(Messages(), ElementsAre(kMechanismLine, kMechanismLine, kMechanismLine));
  EXPECT_EQ(Lines()[0]["mechanism"], "PLAIN");
  EXPECT_EQ(Lines()[1]["mechanism"], "NULL");
  EXPECT_EQ(Lines()[2]["peer"], "192.0.2.2");
  clock_.Advance(ZapHandler::kRefusalWindowMs);
  zap_->Tick();
  ASSERT_EQ(Lines().size(), 4u);
  EXPECT_EQ(Lines()[3]["refused"], 4);
  EXPECT_EQ(Lines()[3]["keys"], 0);
  EXPECT_EQ(Lines()[3]["addresses"], 2);
}

TEST_F(ZapTest, MalformedRequestsAndKnownKeys) {
  EXPECT_THAT(zap_->Handle({"2.0", "r", "fjordd", "192.0.2.1", "", "CURVE", RawKey(1)}),
              ElementsAre("1.0", "r", "400", "malformed ZAP request", "", ""));
  EXPECT_THAT(zap_->Handle({}), ElementsAre("1.0", "", "400", "malformed ZAP request", "", ""));
  EXPECT_THAT(zap_->Handle(ZapRequest("CURVE", "192.0.2.1", Raw(known_.public_key))),
              ElementsAre("1.0", "req-1", "200", "OK", known_.public_key, ""));
  EXPECT_EQ(zap_->refused(), 0);
  EXPECT_TRUE(Lines().empty());
}

// Shutting down does not lose the count of a window still open.
TEST_F(ZapTest, StoppingWritesTheSummaryOfTheOpenWindow) {
  for (int i = 0; i < 5; ++i) zap_->Handle(ZapRequest("CURVE", "192.0.2.1", RawKey(1)));
  clock_.Advance(10);
  zap_.reset();
  ASSERT_THAT(Messages(), ElementsAre(kUnknownKeyLine, kSummaryLine));
  EXPECT_EQ(Lines()[1]["refused"], 5);
  EXPECT_EQ(Lines()[1]["not_logged"], 4);
  EXPECT_EQ(Lines()[1]["window_ms"], 10);
}

TEST(ZapPlaintextTest, NullMechanismIsAcceptedWhenAllowed) {
  zmq::context_t ctx;
  absl::StatusOr<std::unique_ptr<ZapHandler>> zap =
      ZapHandler::Start(ctx, std::make_shared<const KeyRing>(std::map<std::string, Principal>{}),
                        /*allow_null=*/true);
  ASSERT_TRUE(zap.ok()) << zap.status();
  EXPECT_THAT((*zap)->Handle(ZapRequest("NULL", "127.0.0.1")),
              ElementsAre("1.0", "req-1", "200", "OK", "plaintext", ""));
  EXPECT_EQ((*zap)->refused(), 0);
}

}  // namespace
}  // namespace fjord::daemon
