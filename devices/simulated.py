"""A simulated device: vtlab plays the device and sends its events over a link (harness.links), in
whatever protocol the lab file names for it.

Sending returns the monotonic stamp taken just before the bytes are handed to the transport, which is
where alarm latency starts. A heartbeat vtlab could not send is a harness fault (reported, never raised
on its thread), not the platform's failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from devices.model import DeviceModel, EventSpec
from harness.clock import now_ns, utc_text
from harness.errors import TargetError
from harness.links import DeviceLink, IncomingHandler, Outgoing, RefusedHandler, Sent


class SimulatedDevice:
    def __init__(
        self,
        device_id: str,
        model: DeviceModel,
        user: str,
        link: DeviceLink,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.id = device_id
        self.model = model
        self.user = user
        self.link = link
        self._on_fault = on_fault or (lambda _text: None)
        self.battery = 100
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._hb_seq = 0
        self._last_beat_ns: int | None = None
        self._hb_interval_s: float | None = None

    def send(self, spec: EventSpec, cid: str, seq: int) -> Sent:
        """Send one event; returns the send stamp (ns), the fields as sent and the correlation key."""
        return self.link.send(Outgoing(cid=cid, device=self.id, user=self.user, event=spec.event, code=spec.code,
                                       qualifier=spec.qualifier, priority=spec.priority, seq=seq,
                                       battery=self.battery))

    def listen_for_acks(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self.link.on_ack(handler, refused)

    # --- heartbeats ------------------------------------------------------------------------------
    def start_heartbeat(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
        self.stop_heartbeat()
        self._hb_interval_s = interval_s
        self._hb_stop = threading.Event()
        stop = self._hb_stop

        def beat() -> None:
            failing = False
            while True:
                self._hb_seq += 1
                try:
                    self.link.heartbeat(self._hb_seq, interval_s, utc_text())
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

    def resume_heartbeat(self) -> int:
        """Beat again at the last interval (the device is back); returns the stamp of the first heartbeat."""
        interval_s = self._hb_interval_s
        if interval_s is None:
            raise ValueError(f"device {self.id} never started heartbeats, so it cannot resume them")
        before = now_ns()
        self.start_heartbeat(interval_s)
        deadline = before + 2_000_000_000
        while now_ns() < deadline and (self._last_beat_ns is None or self._last_beat_ns < before):
            time.sleep(0.001)
        return self._last_beat_ns if self._last_beat_ns is not None and self._last_beat_ns >= before else before

    def stop_heartbeat(self) -> int:
        """Stop beating; returns the stamp of the last heartbeat sent (when the device fell silent)."""
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2)
            self._hb_thread = None
        return self._last_beat_ns if self._last_beat_ns is not None else now_ns()
