"""What every real device vtlab observes has in common, whatever carries it (serial line, BLE): its events
become `device_event` arrivals, a test step can wait for one (`observe_event`), its findings wait until
someone listens, and vtlab cannot make it send anything (a tester can, after `manual_check`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from harness.errors import TargetError
from harness.links import Incoming, IncomingHandler, Outgoing, Refused, RefusedHandler, Sent
from harness.links.gateway import GatewayEvent

KEPT_EVENTS = 10_000
"""Events kept for `wait_event` (the oldest half is dropped beyond it): a real device observed for days must
not grow vtlab's memory; the test bed has recorded every one as it came."""


class ObservedDevice:
    """The event buffer and handlers of an observed device; subclasses start the gateway that reads it and
    call `_on_event` / `_on_finding` from it."""

    device_id: str
    what: str = "a real device"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seen: list[Incoming] = []
        self._pending_findings: list[Refused] = []
        self._event_handler: IncomingHandler | None = None
        self._refused: RefusedHandler | None = None

    def _where(self) -> str:
        return self.device_id

    def _on_event(self, event: GatewayEvent) -> None:
        got = event.incoming(where=self._where())
        with self._cond:
            self._seen.append(got)
            if len(self._seen) > KEPT_EVENTS:
                del self._seen[: KEPT_EVENTS // 2]
            handler = self._event_handler
            self._cond.notify_all()
        if handler is not None:
            handler(got)

    def _on_finding(self, finding: Refused) -> None:
        with self._cond:
            handler = self._refused
            if handler is None:
                self._pending_findings.append(finding)
        if handler is not None:
            handler(finding)

    def send(self, out: Outgoing) -> Sent:
        raise TargetError(
            f"device `{self.device_id}` is {self.what} that vtlab observes: it cannot make it send `{out.event}`",
            fix="ask the tester with `manual_check`, then wait for the device with `observe_event`",
        )

    def heartbeat(self, seq: int, interval_s: float, sent_text: str) -> None:
        """A real device beats (or advertises) by itself."""

    def on_ack(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self.on_findings(refused)

    def on_findings(self, refused: RefusedHandler) -> None:
        with self._cond:
            self._refused = refused
            pending, self._pending_findings = self._pending_findings, []
        for finding in pending:
            refused(finding)

    def on_event(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        """Every event the device reports, as it arrives (the test bed records them as `device_event`)."""
        with self._cond:
            self._event_handler = handler
            seen = list(self._seen)
        for got in seen:
            handler(got)
        self.on_findings(refused)

    def wait_event(self, predicate: Callable[[Incoming], bool], timeout_s: float, after_ns: int = 0) -> Incoming | None:
        """The first event at or after `after_ns` that `predicate` accepts, waiting up to `timeout_s`."""

        def found() -> Incoming | None:
            return next((g for g in self._seen if g.t_ns >= after_ns and predicate(g)), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout_s)
            return found()
