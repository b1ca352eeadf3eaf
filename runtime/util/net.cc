#include "runtime/util/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

namespace fjord {
namespace {

// Whether `port` (0: any) can be bound on 127.0.0.1 now; the bound port.
int TryBind(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof a;
  int got = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    got = ntohs(a.sin_port);
  }
  ::close(fd);
  return got;
}

}  // namespace

int FreeLoopbackPort() {
  int ephemeral_low = 32768;  // Linux's default range is 32768-60999
  {
    std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
    int lo = 0, hi = 0;
    if (f >> lo >> hi && lo > 0) ephemeral_low = lo;
  }
  constexpr int kLowest = 10000;  // above the well-known and most registered services
  if (ephemeral_low - kLowest >= 1000) {
    std::random_device rd;
    std::uniform_int_distribution<int> pick(kLowest, ephemeral_low - 1);
    for (int attempt = 0; attempt < 64; ++attempt) {
      if (const int port = TryBind(pick(rd)); port != 0) return port;
    }
  }
  return TryBind(0);
}

}  // namespace fjord
