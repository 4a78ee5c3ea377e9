"""ResponseCentreProbe: receives alarms where the platform delivers them to a response centre, and
acknowledges them as an operator would."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from harness.tracking import Arrival, Tracker
from harness.transports.base import PubSubTransport, now_ns


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
        body = {
            "v": 1,
            "cid": alarm.cid,
            "device": alarm.payload.get("device"),
            "centre": self.centre,
            "operator": operator,
            "action": "acknowledged",
            "sent": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        data = json.dumps(body).encode()
        t = now_ns()
        self.transport.publish(self._topic("centre_ack", centre=self.centre), data)
        return t
