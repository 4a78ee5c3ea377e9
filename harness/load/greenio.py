"""paho under gevent for thousands of connections in one process.

paho's network loop waits with `select.select()`. gevent's cooperative `select` first polls with the
original `select()`, which refuses file descriptors >= 1024 (FD_SETSIZE); paho then takes the error for a
lost connection. Each paho client holds three descriptors (its socket and a wake-up socket pair), so a
locust process stalls at about 330 devices. In the load path's locust processes only, paho's module-level
`select` is replaced by this shim, which waits with gevent's `poll` (libev watchers, no descriptor limit)
and answers as `select.select` does. The protocol code and paho itself are unchanged.
"""

from __future__ import annotations

import select as _select
from collections.abc import Sequence
from typing import Any

POLLIN, POLLOUT = _select.POLLIN, _select.POLLOUT
_READABLE = _select.POLLIN | _select.POLLHUP | _select.POLLERR | getattr(_select, "POLLNVAL", 0)
_WRITABLE = _select.POLLOUT | _select.POLLHUP | _select.POLLERR | getattr(_select, "POLLNVAL", 0)


def _fd(obj: Any) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise ValueError("file descriptor cannot be a negative integer")  # what select.select raises
    return int(fd)


def select(
    rlist: Sequence[Any], wlist: Sequence[Any], xlist: Sequence[Any], timeout: float | None = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """`select.select` semantics on gevent's poll (blocks only the calling greenlet)."""
    from gevent.select import poll

    masks: dict[int, int] = {}
    readers: dict[int, Any] = {}
    writers: dict[int, Any] = {}
    for obj in rlist:
        fd = _fd(obj)
        masks[fd] = masks.get(fd, 0) | POLLIN
        readers[fd] = obj
    for obj in wlist:
        fd = _fd(obj)
        masks[fd] = masks.get(fd, 0) | POLLOUT
        writers[fd] = obj
    p = poll()
    for fd, mask in masks.items():
        p.register(fd, mask)
    events = p.poll(None if timeout is None else max(0.0, timeout) * 1000.0)
    r = [readers[fd] for fd, ev in events if fd in readers and ev & _READABLE]
    w = [writers[fd] for fd, ev in events if fd in writers and ev & _WRITABLE]
    return r, w, []


class _SelectModule:
    """Stands in for the `select` module inside paho.mqtt.client."""

    select = staticmethod(select)
    error = OSError

    def __getattr__(self, name: str) -> Any:
        return getattr(_select, name)


def patch_paho_for_gevent() -> None:
    """Make paho's network loop use gevent's poll (call once, in a gevent-patched process)."""
    import paho.mqtt.client as client

    if not isinstance(client.select, _SelectModule):
        client.select = _SelectModule()  # type: ignore[assignment]


__all__ = ["patch_paho_for_gevent", "select"]
