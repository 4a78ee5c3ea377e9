"""Socket options every vtlab MQTT client sets."""

from __future__ import annotations

import contextlib
import socket


def no_delay(sock: object) -> None:
    """Turn Nagle's algorithm off: a small publish right after a PUBACK would otherwise wait for the
    peer's delayed TCP ACK (about 40 ms on Linux) and the harness would add latency it then measures."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is None:
        return
    with contextlib.suppress(OSError):
        setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
