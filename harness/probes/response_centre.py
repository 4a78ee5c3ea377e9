"""ResponseCentreProbe: receives alarms where the platform delivers them to a response centre, in the
centre's protocol (its link), and acknowledges them as an operator would."""

from __future__ import annotations

from harness.links import CentreLink, Incoming
from harness.tracking import Arrival, Tracker


class ResponseCentreProbe:
    def __init__(self, name: str, centre: str, link: CentreLink, tracker: Tracker) -> None:
        self.name = name
        self.centre = centre
        self.link = link
        self._tracker = tracker

    def start(self) -> None:
        self.link.start(lambda got: self._tracker.on_incoming(self.name, "alarm", got),
                        lambda bad: self._tracker.on_refused(self.name, bad))

    def acknowledge(self, alarm: Arrival, operator: str = "vtlab-operator") -> int:
        """Send the operator's acknowledgement; returns the send stamp (start of ack latency)."""
        return self.link.acknowledge(Incoming(alarm.t_ns, alarm.payload, alarm.cid, alarm.key, alarm.defect,
                                              carries=alarm.carries), operator)
