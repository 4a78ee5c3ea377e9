"""An in-process message bus with the PubSubTransport interface: the mock beside the real MQTT one.

For unit tests of devices, probes and the tracker; never used against a system under test.
"""

from __future__ import annotations

import threading

from harness.clock import now_ns
from harness.transports.base import Handler, Message, topic_matches


class MemoryBus:
    def __init__(self) -> None:
        self._subs: list[tuple[str, Handler]] = []
        self._lock = threading.Lock()
        self.published: list[tuple[str, bytes]] = []

    def deliver(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.published.append((topic, payload))
            subs = [h for f, h in self._subs if topic_matches(f, topic)]
        for handler in subs:
            handler(Message(topic, payload, now_ns()))

    def add(self, topic_filter: str, handler: Handler) -> None:
        with self._lock:
            self._subs.append((topic_filter, handler))

    def remove(self, handlers: list[Handler]) -> None:
        with self._lock:
            self._subs = [(f, h) for f, h in self._subs if h not in handlers]


class MemoryTransport:
    def __init__(self, bus: MemoryBus, name: str = "memory") -> None:
        self.bus = bus
        self.name = name
        self._handlers: list[Handler] = []
        self.connected = False

    def connect(self) -> None:
        self.connected = True

    def publish(self, topic: str, payload: bytes) -> None:
        self.bus.deliver(topic, payload)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        self._handlers.append(handler)
        self.bus.add(topic_filter, handler)

    def close(self) -> None:
        self.bus.remove(self._handlers)
        self.connected = False
