"""A simulated device: vtlab plays the device and sends its events on a transport.

Encodes events with the wire codec (docs/wire.md). Sending returns the monotonic stamp taken just
before the bytes are handed to the transport, which is where alarm latency starts. A heartbeat vtlab
could not send is a harness fault (reported, never raised on its thread), not the platform's failure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from devices.model import DeviceModel, EventSpec
from harness.clock import now_ns, utc_text
from harness.errors import TargetError
from harness.protocols.wire_json import DeviceEvent, Heartbeat, encode
from harness.transports.base import Message, PubSubTransport


class SimulatedDevice:
    def __init__(
        self,
        device_id: str,
        model: DeviceModel,
        user: str,
        transport: PubSubTransport,
        topics: Callable[..., str],
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.id = device_id
        self.model = model
        self.user = user
        self.transport = transport
        self._topic = topics
        self._on_fault = on_fault or (lambda _text: None)
        self.battery = 100
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._hb_seq = 0
        self._last_beat_ns: int | None = None

    def encode(self, spec: EventSpec, cid: str, seq: int) -> DeviceEvent:
        return DeviceEvent(cid=cid, device=self.id, user=self.user, event=spec.event, code=spec.code,
                           qualifier=spec.qualifier, priority=spec.priority, seq=seq, battery=self.battery,
                           sent=utc_text())

    def send(self, spec: EventSpec, cid: str, seq: int) -> tuple[dict[str, Any], int]:
        """Send one event; returns the payload (as fields) and the send stamp (ns)."""
        event = self.encode(spec, cid, seq)
        body = encode(event)
        t = now_ns()
        self.transport.publish(self._topic("device_event", device=self.id), body)
        return event.to_json(), t

    def listen_for_acks(self, handler: Callable[[Message], None]) -> None:
        self.transport.subscribe(self._topic("device_ack", device=self.id), handler)

    # --- heartbeats ------------------------------------------------------------------------------
    def start_heartbeat(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
        self.stop_heartbeat()
        self._hb_stop = threading.Event()
        stop = self._hb_stop
        topic = self._topic("device_heartbeat", device=self.id)

        def beat() -> None:
            failing = False
            while True:
                self._hb_seq += 1
                body = encode(Heartbeat(device=self.id, interval_s=interval_s, seq=self._hb_seq, sent=utc_text()))
                try:
                    self.transport.publish(topic, body)
                    self._last_beat_ns = now_ns()
                    failing = False
                except (TargetError, OSError, ValueError) as exc:
                    if not failing:  # once per outage, not once per beat
                        self._on_fault(f"simulated device {self.id} could not send its heartbeat: {exc}")
                    failing = True
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
