"""Links: a codec bound to a transport, as a device or a response centre uses it.

A scenario says what happens (a button press, an alarm expected at a centre); the lab file says how it
travels (`via: mqtt | memory | dc09 | scaip`). A `DeviceLink` sends a device's events in its protocol and
reports what comes back to the device; a `CentreLink` receives alarms where a response centre would and
acknowledges them in that protocol. Both hand over protocol-neutral `Incoming` records, stamped on the
thread that read them, so the tracker, the steps and the judgement never know which protocol ran.

Correlation: protocols that carry vtlab's correlation id (`cid`) are matched by it. Protocols that cannot
(a platform re-encodes SCAIP into DC-09 with its own sequence numbers) are matched by a `key` built from
what survives the trip (account, event code, zone/user number); the device link makes the key of every
alarm in flight different, and an arrival that matches two stimuli is `ambiguous`, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An event a simulated device sends (what happened on it, in vtlab's words)."""

    cid: str
    device: str
    user: str
    event: str
    code: str  # Contact ID event code
    qualifier: str = "1"
    priority: int = 1
    seq: int = 0
    battery: int = 100
    readings: Mapping[str, tuple[Decimal, str]] | None = None  # measured values with their units (meters)
    measured: str | None = None  # the meter's own time stamp of the readings


@dataclass(frozen=True, slots=True)
class Sent:
    """What a device link sent: the send stamp, the fields as evidence, and the correlation key when the
    protocol cannot carry the cid."""

    t_ns: int
    fields: Mapping[str, Any]
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a probe or a device received, decoded (or, with `defect`, what was wrong with it)."""

    t_ns: int
    fields: Mapping[str, Any]
    cid: str | None = None
    key: str | None = None
    defect: str | None = None
    evidence: Any = None  # what goes into the evidence store as the payload (fields, or the raw text)
    where: str = ""  # topic or peer, for findings
    carries: tuple[str, ...] | None = None  # the judged fields this protocol can carry (None: all of them)


@dataclass(frozen=True, slots=True)
class Refused:
    """Bytes a link could not decode at all: a finding about what the platform sent."""

    t_ns: int
    raw: str
    reason: str
    where: str = ""


IncomingHandler = Callable[[Incoming], None]
RefusedHandler = Callable[[Refused], None]


class DeviceLink(Protocol):
    """How a simulated device talks to the platform."""

    def send(self, out: Outgoing) -> Sent: ...

    def heartbeat(self, seq: int, interval_s: float, sent_text: str) -> None: ...

    def on_ack(self, handler: IncomingHandler, refused: RefusedHandler) -> None: ...

    def close(self) -> None: ...


class CentreLink(Protocol):
    """How a response-centre probe receives alarms and acknowledges them."""

    def start(self, handler: IncomingHandler, refused: RefusedHandler) -> None: ...

    def acknowledge(self, alarm: Incoming, operator: str) -> int:
        """Send the operator's acknowledgement; returns the send stamp (start of ack latency)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class KeyRing:
    """Distinguishing numbers for alarms in flight, for protocols without a cid: a zone/user number per
    stimulus cycling through 1..size (Contact ID has three digits)."""

    size: int = 999
    _next: dict[str, int] = field(default_factory=dict)

    def next(self, device: str) -> int:
        n = self._next.get(device, 0) % self.size + 1
        self._next[device] = n
        return n
