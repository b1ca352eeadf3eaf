"""free_port(): a TCP port on 127.0.0.1 that nobody uses now, picked at
random below the kernel's ephemeral range (as runtime/util/net.h's
FreeLoopbackPort), so that no outgoing connection and no port-0 listener of
a test running beside this one takes it before the server it is meant for
binds it."""

import random
import socket


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _try_bind(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
        return s.getsockname()[1]


def free_port() -> int:
    low = _ephemeral_low()
    if low - 10000 >= 1000:
        for _ in range(64):
            port = _try_bind(random.randint(10000, low - 1))
            if port:
                return port
    return _try_bind(0)
