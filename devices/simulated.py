"""A simulated device: vtlab plays the device and sends its events on a transport.

Encodes events per docs/wire.md. Sending returns the monotonic stamp taken just before the bytes are
handed to the transport, which is where alarm latency starts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from devices.model import DeviceModel, EventSpec
from harness.transports.base import Message, PubSubTransport, now_ns


def _wall() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimulatedDevice:
    def __init__(
        self,
        device_id: str,
        model: DeviceModel,
        user: str,
        transport: PubSubTransport,
        topics: Callable[..., str],
    ) -> None:
        self.id = device_id
        self.model = model
        self.user = user
        self.transport = transport
        self._topic = topics
        self.battery = 100
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._hb_seq = 0
        self._last_beat_ns: int | None = None

    def encode(self, spec: EventSpec, cid: str, seq: int) -> dict[str, Any]:
        return {
            "v": 1,
            "cid": cid,
            "device": self.id,
            "user": self.user,
            "event": spec.event,
            "code": spec.code,
            "qualifier": spec.qualifier,
            "priority": spec.priority,
            "seq": seq,
            "battery": self.battery,
            "sent": _wall(),
        }

    def send(self, spec: EventSpec, cid: str, seq: int) -> tuple[dict[str, Any], int]:
        """Send one event; returns the payload and the send stamp (ns)."""
        payload = self.encode(spec, cid, seq)
        body = json.dumps(payload).encode()
        t = now_ns()
        self.transport.publish(self._topic("device_event", device=self.id), body)
        return payload, t

    def listen_for_acks(self, handler: Callable[[Message], None]) -> None:
        self.transport.subscribe(self._topic("device_ack", device=self.id), handler)

    # --- heartbeats ------------------------------------------------------------------------------
    def start_heartbeat(self, interval_s: float) -> None:
        self.stop_heartbeat()
        self._hb_stop = threading.Event()
        stop = self._hb_stop

        def beat() -> None:
            while True:
                self._hb_seq += 1
                body = {"v": 1, "device": self.id, "seq": self._hb_seq, "interval_s": interval_s, "sent": _wall()}
                self._last_beat_ns = now_ns()
                self.transport.publish(self._topic("device_heartbeat", device=self.id), json.dumps(body).encode())
                if stop.wait(interval_s):
                    return

        self._hb_thread = threading.Thread(target=beat, name=f"heartbeat-{self.id}", daemon=True)
        self._hb_thread.start()

    def stop_heartbeat(self) -> int:
        """Stop beating; returns the stamp of the last heartbeat sent (when the device fell silent)."""
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2)
            self._hb_thread = None
        return self._last_beat_ns if self._last_beat_ns is not None else now_ns()
