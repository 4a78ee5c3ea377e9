"""Helpers for the lab and broker integration tests: a paho peer that records what arrives and the
broker's reason codes (SUBACK, PUBACK), and the rule for tests that need mosquitto.

A raw paho client on purpose: the tests must see exactly what the broker answers, independently of
vtlab's own MqttClient wrapper."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.lab.broker import find_mosquitto

NOT_AUTHORIZED = 0x87
"""MQTT 5 reason code `Not authorized` (SUBACK, PUBACK)."""


def require_mosquitto() -> None:
    """Skip when mosquitto is missing, but fail under CI (where tools/bootstrap.py installs it)."""
    if find_mosquitto() is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is required in CI (tools/system-packages.txt) but is not installed")
        pytest.skip("mosquitto is not installed (apt install mosquitto)")


@dataclass(frozen=True, slots=True)
class Arrival:
    topic: str
    payload: bytes
    at_ns: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Peer:
    """A paho client playing a device or a response centre; records arrivals with monotonic stamps."""

    def __init__(
        self,
        url: str,
        *,
        subscribe: list[str] | tuple[str, ...] = (),
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        v5: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        u = urlparse(url)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"peer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(100)
        if u.scheme == "mqtts":
            self.client.tls_set(
                ca_certs=str(ca) if ca else None,
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
            )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.arrivals: list[Arrival] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._filters = list(subscribe)
        self._pending = 0
        self.connect_rc: Any = None
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.dropped = False
        self.suback: list[int] = []
        self.puback: dict[int, int] = {}
        self.disconnect_reason: str | None = None
        self.client.on_publish = self._on_publish
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(timeout_s):
            self.close()
            raise TimeoutError(f"peer not connected/subscribed at {url} (rc={self.connect_rc})")
        if self.dropped and self.connect_rc is None:
            self.close()
            raise ConnectionResetError(f"connection to {url} closed before CONNACK")
        if self.connect_rc is not None and self.connect_rc.is_failure:
            self.close()
            raise ConnectionRefusedError(f"CONNACK {self.connect_rc}")

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any = None) -> None:
        self.connect_rc = rc
        if rc.is_failure or not self._filters:
            self._ready.set()
            return
        c.subscribe([(t, 1) for t in self._filters])

    def _on_disconnect(self, c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any = None) -> None:
        with self._cond:
            self.disconnect_reason = str(rc)
            self._cond.notify_all()
        if self.connect_rc is None:
            self.dropped = True
            self._ready.set()

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any = None) -> None:
        with self._cond:
            self.suback.extend(int(getattr(rc, "value", rc)) for rc in rcs)
            self._cond.notify_all()
        self._ready.set()

    def _on_publish(self, c: mqtt.Client, u: Any, mid: int, rc: Any, p: Any = None) -> None:
        with self._cond:
            self.puback[mid] = int(getattr(rc, "value", rc))
            self._cond.notify_all()

    def subscribe(self, topic_filter: str, timeout_s: float = 5.0) -> int:
        """Subscribe once more; returns the broker's SUBACK reason code."""
        with self._cond:
            seen = len(self.suback)
        self.client.subscribe(topic_filter, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.suback) > seen, timeout_s):
                raise AssertionError(f"no SUBACK for {topic_filter} within {timeout_s}s")
            return self.suback[seen]

    def publish_rc(self, topic: str, payload: dict[str, Any] | bytes, timeout_s: float = 5.0) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 or 16 accepted, 0x87 not authorized)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self.puback, timeout_s):
                raise AssertionError(f"no PUBACK for {topic} within {timeout_s}s")
            return self.puback[info.mid]

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.arrivals.append(Arrival(msg.topic, bytes(msg.payload), time.monotonic_ns()))
            self._cond.notify_all()

    def publish(self, topic: str, payload: dict[str, Any] | bytes, *, wait: bool = True) -> int:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = time.monotonic_ns()
        info = self.client.publish(topic, data, qos=1)
        if wait:
            info.wait_for_publish(timeout=5)
        return sent

    def wait_for(self, pred: Callable[[list[Arrival]], bool], timeout_s: float = 5.0) -> list[Arrival]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not pred(self.arrivals):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met within {timeout_s}s; got {len(self.arrivals)} arrivals")
                self._cond.wait(left)
            return list(self.arrivals)

    def wait_count(self, n: int, timeout_s: float = 5.0, topic_part: str = "") -> list[Arrival]:
        got = self.wait_for(lambda a: sum(1 for x in a if topic_part in x.topic) >= n, timeout_s)
        return [x for x in got if topic_part in x.topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(pred: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """For files written by another process (the ledger): re-check at short intervals, with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(0.01)
