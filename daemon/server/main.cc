// fjordd: the per-node fjord daemon.
//
//   fjordd --config /etc/fjordd/fjordd.yaml          run
//   fjordd --config ... --check-config               check the config and what it names, then exit
//   fjordd --keygen PREFIX                           write a CURVE key pair PREFIX.key (0600) /
//   PREFIX.pub
//
// SIGTERM/SIGINT: graceful shutdown (workers checkpoint, jobs are requeued).
// SIGHUP: read the keys file again (add or revoke clients without a restart).
// Exit codes: 0 clean stop; 1 runtime failure; 2 bad usage or config.
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "daemon/protocol/curve_keys.h"
#include "daemon/server/config.h"
#include "daemon/server/server.h"

namespace {

fjord::daemon::Server* g_server = nullptr;
void OnSignal(int) {
  if (g_server) g_server->RequestStop();
}
void OnHangup(int) {
  if (g_server) g_server->RequestKeyReload();
}

int Usage() {
  std::fprintf(stderr,
               "usage: fjordd --config FILE [--check-config]\n"
               "       fjordd --keygen PREFIX\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, keygen;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" && i + 1 < argc)
      config_path = argv[++i];
    else if (a == "--check-config")
      check = true;
    else if (a == "--keygen" && i + 1 < argc)
      keygen = argv[++i];
    else if (a == "--version") {
      std::printf("fjordd 0.1.0 (protocol FJD01)\n");
      return 0;
    } else {
      return Usage();
    }
  }
  if (!keygen.empty()) {
    auto keys = fjord::GenerateCurveKeyPair();
    if (!keys.ok()) {
      std::fprintf(stderr, "fjordd: %s\n", std::string(keys.status().message()).c_str());
      return 1;
    }
    if (auto s = fjord::WriteCurveKeyFiles(keygen, *keys); !s.ok()) {
      std::fprintf(stderr, "fjordd: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::printf("%s\n", keys->public_key.c_str());
    return 0;
  }
  if (config_path.empty()) return Usage();
  auto config = fjord::daemon::LoadDaemonConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "fjordd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  if (check) {
    absl::Status s = fjord::daemon::CheckConfig(*config);
    if (!s.ok()) {
      std::fprintf(stderr, "fjordd: %s: problems found:\n%s\n", config_path.c_str(),
                   std::string(s.message()).c_str());
      return 2;
    }
    std::printf("fjordd: %s is valid\n", config_path.c_str());
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  auto server = fjord::daemon::Server::Create(*config);
  if (!server.ok()) {
    std::fprintf(stderr, "fjordd: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  g_server = server->get();
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  struct sigaction hup {};
  hup.sa_handler = OnHangup;
  sigemptyset(&hup.sa_mask);
  hup.sa_flags = SA_RESTART;
  sigaction(SIGHUP, &hup, nullptr);
  if (auto s = (*server)->Start(); !s.ok()) {
    std::fprintf(stderr, "fjordd: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  absl::Status s = (*server)->Run();
  g_server = nullptr;
  return s.ok() ? 0 : 1;
}
