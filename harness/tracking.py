"""Correlation of stimuli and arrivals.

Probes hand every message to the tracker from their transport threads, already stamped. The tracker
writes it to the evidence store at once, then passes it to the scenario's event loop, where expectation
steps claim it. An arrival is claimed once, so a duplicate stays unclaimed and is counted as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.evidence import EvidenceStore
from harness.protocols import ProtocolError
from harness.protocols.wire_json import DeviceAck, RoutedAlarm, WireMessage, decode
from harness.transports.base import Message

KINDS: dict[str, type[WireMessage]] = {"alarm": RoutedAlarm, "device_ack": DeviceAck}


@dataclass(frozen=True, slots=True)
class Arrival:
    """What a probe received, as decoded; `defect` says what was wrong with it when the codec refused it
    but it still named a correlation id (judged `altered`, never silently dropped)."""

    id: int
    probe: str
    kind: str  # alarm | device_ack
    cid: str | None
    payload: Mapping[str, Any]  # the fields as received
    t_ns: int
    defect: str | None = None

    def field(self, name: str) -> Any:
        return self.payload.get(name)


Predicate = Callable[[Arrival], bool]


@dataclass(slots=True)
class _Waiter:
    probes: frozenset[str] | None
    predicate: Predicate
    future: asyncio.Future[Arrival]


@dataclass(slots=True)
class Tracker:
    evidence: EvidenceStore
    scenario: str | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _arrivals: list[Arrival] = field(default_factory=list)
    _claimed: set[int] = field(default_factory=set)
    _waiters: list[_Waiter] = field(default_factory=list)
    malformed: int = 0

    def begin(self, scenario: str, loop: asyncio.AbstractEventLoop) -> None:
        self.scenario, self._loop = scenario, loop
        self._arrivals, self._claimed, self._waiters = [], set(), []

    def end(self) -> None:
        self._loop = None

    # --- transport threads ------------------------------------------------------------------------
    def on_message(self, probe: str, kind: str, message: Message) -> None:
        """Record what a probe received; never raises on what the platform sent."""
        payload: Mapping[str, Any] | None = None
        defect = None
        try:
            payload = decode(message.payload, KINDS[kind]).to_json()
        except ProtocolError as exc:
            defect = exc.reason
            try:  # a JSON object with a cid is still an arrival of that alarm: judged, not dropped
                raw = json.loads(message.payload) if len(message.payload) <= 65536 else None
            except (ValueError, RecursionError):
                raw = None
            if isinstance(raw, dict) and isinstance(raw.get("cid"), str) and 0 < len(raw["cid"]) <= 256:
                payload = {k: v for k, v in raw.items() if isinstance(k, str) and len(k) <= 64}
        if payload is None:
            self.malformed += 1
            text = message.payload[:500].decode("utf-8", "replace")
            self.evidence.arrival(self.scenario, None, probe, "malformed", message.arrived_ns, text)
            self.evidence.observation(
                self.scenario, "finding", f"{probe} received a malformed message on {message.topic}: {defect}: {text!r}"
            )
            return
        cid = str(payload["cid"])
        row_id = self.evidence.arrival(self.scenario, cid, probe, kind, message.arrived_ns,
                                       {**payload, "_defect": defect} if defect else payload)
        arrival = Arrival(row_id, probe, kind, cid, payload, message.arrived_ns, defect)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # the loop may close in between: the arrival is in the evidence already
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, arrival)

    # --- event loop -------------------------------------------------------------------------------
    def _dispatch(self, arrival: Arrival) -> None:
        self._arrivals.append(arrival)
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            if (waiter.probes is None or arrival.probe in waiter.probes) and waiter.predicate(arrival):
                self._claimed.add(arrival.id)
                waiter.future.set_result(arrival)
                return

    def find(self, predicate: Predicate, probes: frozenset[str] | None = None, claim: bool = True) -> Arrival | None:
        for arrival in self._arrivals:
            if arrival.id in self._claimed:
                continue
            if (probes is None or arrival.probe in probes) and predicate(arrival):
                if claim:
                    self._claimed.add(arrival.id)
                return arrival
        return None

    async def expect(self, predicate: Predicate, probes: frozenset[str] | None, timeout_s: float) -> Arrival | None:
        """The first unclaimed arrival matching, waiting at most `timeout_s`; None on timeout."""
        found = self.find(predicate, probes)
        if found is not None or timeout_s <= 0:
            return found
        loop = asyncio.get_running_loop()
        waiter = _Waiter(probes, predicate, loop.create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
        except TimeoutError:
            if waiter.future.done():  # matched in the same tick as the timeout
                return waiter.future.result()
            waiter.future.cancel()
            return None
        finally:
            self._waiters.remove(waiter)
