"""Free TCP ports on loopback, for the servers the tests and benchmarks start."""

from __future__ import annotations

import random
import socket


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on the loopback interface right now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive TCP ports free on loopback right now (for a node
    with ``--workers n``, whose worker i takes ``metrics_port + i``), chosen outside the
    kernel's ephemeral range, from which connections' own ports are taken."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(p) for p in f.read().split())
    except OSError:  # not Linux: the IANA range
        low, high = 49152, 65535
    spans = [(lo, hi) for lo, hi in ((10_000, low - n), (high + 1, 65536 - n)) if lo < hi]
    for _ in range(1000):
        lo, hi = random.choice(spans or [(1024, 65536 - n)])
        start = random.randrange(lo, hi)
        sockets = [socket.socket() for _ in range(n)]
        try:
            for i, s in enumerate(sockets):
                s.bind(("127.0.0.1", start + i))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return start
    raise RuntimeError(f"no {n} consecutive free ports on loopback")
