"""Free TCP port discovery on the loopback interface.

Ports are only *probably* free when returned: nothing stops another process from
grabbing one between our probe and the server binding it. The callers start their
servers right away, and the servers fail loudly (and we report the log tail) if a
port was lost to such a race.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack

HOST = "127.0.0.1"

# Redis Cluster derives each node's cluster-bus port as client port + 10000.
REDIS_BUS_OFFSET = 10000
_MAX_PORT = 65535
# Linux default when /proc is unreadable (net.ipv4.ip_local_port_range).
_DEFAULT_EPHEMERAL = (32768, 60999)
# Lowest port we hand out for Redis: stay clear of well-known/registered low ports.
_REDIS_MIN_PORT = 10000


def free_ports(n: int, host: str = HOST) -> list[int]:
    """Return ``n`` distinct TCP ports that were free on ``host`` at call time.

    All sockets are held open until every port is collected, so the kernel cannot
    hand out the same port twice within one call.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for automatically assigned (outgoing) local ports."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


def _try_bind(stack: ExitStack, host: str, port: int) -> bool:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        sock.bind((host, port))
    except OSError:
        return False
    return True


def free_redis_ports(n: int, host: str = HOST) -> list[int]:
    """Return ``n`` ports ``p`` such that both ``p`` and ``p + 10000`` are free.

    Candidates are drawn at random from *below* the kernel's ephemeral range, with
    the bus port also below it when possible. Why: the cluster nodes constantly open
    outgoing connections to each other, and those take ephemeral local ports; a node
    restarted by a failover test could otherwise find its port (or bus port) taken
    by an outgoing connection of another node.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    eph_low, _eph_high = ephemeral_port_range()
    # Prefer p and p+10000 both below the ephemeral range; fall back to anything
    # valid if the ephemeral range starts too low for that to exist.
    high = eph_low - REDIS_BUS_OFFSET
    if high - _REDIS_MIN_PORT < 10 * max(n, 1):
        high = _MAX_PORT - REDIS_BUS_OFFSET + 1
    rng = random.SystemRandom()
    with ExitStack() as stack:
        chosen: list[int] = []
        taken: set[int] = set()
        for _ in range(2000):
            if len(chosen) == n:
                break
            p = rng.randrange(_REDIS_MIN_PORT, high)
            # Also keep client ports away from other nodes' bus ports in this batch.
            if {p, p + REDIS_BUS_OFFSET} & taken:
                continue
            if _try_bind(stack, host, p) and _try_bind(stack, host, p + REDIS_BUS_OFFSET):
                chosen.append(p)
                taken.update((p, p + REDIS_BUS_OFFSET))
        if len(chosen) < n:
            raise RuntimeError(f"could not find {n} free Redis port pairs on {host}")
        return chosen
