"""ResponseCentreProbe: receives alarms where the platform delivers them to a response centre, and
acknowledges them as an operator would."""

from __future__ import annotations

from collections.abc import Callable

from harness.clock import now_ns, utc_text
from harness.protocols.wire_json import CentreAck, encode
from harness.tracking import Arrival, Tracker
from harness.transports.base import PubSubTransport


class ResponseCentreProbe:
    def __init__(
        self, name: str, centre: str, transport: PubSubTransport, topic: Callable[..., str], tracker: Tracker
    ) -> None:
        self.name = name
        self.centre = centre
        self.transport = transport
        self._topic = topic
        self._tracker = tracker

    def start(self) -> None:
        self.transport.subscribe(
            self._topic("centre_alarm", centre=self.centre),
            lambda msg: self._tracker.on_message(self.name, "alarm", msg),
        )

    def acknowledge(self, alarm: Arrival, operator: str = "vtlab-operator") -> int:
        """Send the operator's acknowledgement; returns the send stamp (start of ack latency)."""
        device = alarm.field("device")
        ack = CentreAck(cid=str(alarm.cid), centre=self.centre, device=device if isinstance(device, str) else None,
                        operator=operator, sent=utc_text())
        data = encode(ack)
        t = now_ns()
        self.transport.publish(self._topic("centre_ack", centre=self.centre), data)
        return t
