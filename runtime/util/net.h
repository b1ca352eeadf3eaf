// Loopback ports for servers a process starts itself (the launcher's
// rendezvous, test daemons). No LibTorch.
#ifndef FJORD_RUNTIME_UTIL_NET_H_
#define FJORD_RUNTIME_UTIL_NET_H_

namespace fjord {

// A TCP port on 127.0.0.1 that nobody uses now, or 0 when none could be
// had. Chosen at random below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), where no outgoing connection
// and no listener on port 0 (Gloo's, another test's) can take it between
// this call and the caller's bind; a port from the kernel (bind to port 0)
// only when that range leaves no room.
int FreeLoopbackPort();

}  // namespace fjord

#endif  // FJORD_RUNTIME_UTIL_NET_H_
