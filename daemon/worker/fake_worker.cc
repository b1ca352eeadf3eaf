// A stand-in for fjord-train in daemon tests: speaks the worker protocol
// (JSON events and heartbeats over a ZeroMQ PUSH socket) without training.
//
//   fake_worker --report ENDPOINT [--events N] [--exit-code C] [--silent]
//               [--hang] [--ignore-sigterm]
// --silent: no heartbeats; --hang: never exit on its own; on SIGTERM (unless
// --ignore-sigterm) it sends a checkpoint event and exits 75, like fjord-train.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <zmq.hpp>

namespace {
std::atomic<bool> g_term{false};
void OnTerm(int) { g_term.store(true); }
}  // namespace

int main(int argc, char** argv) {
  std::string endpoint;
  int events = 0, exit_code = 0;
  bool silent = false, hang = false, ignore_term = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--report" && i + 1 < argc) endpoint = argv[++i];
    else if (a == "--events" && i + 1 < argc) events = std::stoi(argv[++i]);
    else if (a == "--exit-code" && i + 1 < argc) exit_code = std::stoi(argv[++i]);
    else if (a == "--silent") silent = true;
    else if (a == "--hang") hang = true;
    else if (a == "--ignore-sigterm") ignore_term = true;
  }
  signal(SIGTERM, ignore_term ? SIG_IGN : OnTerm);
  zmq::context_t ctx;
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 2000);
  push.connect(endpoint);
  auto send = [&](const std::string& s) { push.send(zmq::buffer(s), zmq::send_flags::none); };
  for (int i = 1; i <= events; ++i) {
    send("{\"type\":\"step\",\"step\":" + std::to_string(i) + ",\"total_steps\":" + std::to_string(events) + "}");
  }
  auto last_beat = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  while (hang || g_term.load()) {
    if (g_term.load()) {
      send("{\"type\":\"checkpoint\",\"step\":1}");
      return 75;
    }
    if (!silent && std::chrono::steady_clock::now() - last_beat > std::chrono::milliseconds(200)) {
      send("{\"type\":\"heartbeat\"}");
      last_beat = std::chrono::steady_clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code;
}
