"""The publish/subscribe transport interface: the only thing devices and probes know about I/O.

Kept as small as httpx's BaseTransport so a lab can add a transport (and tests can use the in-memory
one) without touching devices, probes or steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """A message as it arrived, stamped on arrival by the transport's receiving thread."""

    topic: str
    payload: bytes
    arrived_ns: int


Handler = Callable[[Message], None]


class PubSubTransport(Protocol):
    """Connect, publish (at least once), subscribe with arrival stamps, close."""

    name: str

    def connect(self) -> None: ...

    def publish(self, topic: str, payload: bytes) -> None: ...

    def subscribe(self, topic_filter: str, handler: Handler) -> None: ...

    def close(self) -> None: ...


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest)."""
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)
