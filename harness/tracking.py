"""Correlation of stimuli and arrivals.

Probes hand every message to the tracker from their transport threads, already stamped. The tracker
writes it to the evidence store at once, then passes it to the scenario's event loop, where expectation
steps claim it. An arrival is claimed once, so a duplicate stays unclaimed and is counted as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.evidence import EvidenceStore
from harness.transports.base import Message


@dataclass(frozen=True, slots=True)
class Arrival:
    id: int
    probe: str
    kind: str  # alarm | device_ack
    cid: str | None
    payload: dict[str, Any]
    t_ns: int


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
        try:
            payload = json.loads(message.payload)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self.malformed += 1
            text = message.payload.decode("utf-8", "replace")[:500]
            self.evidence.arrival(self.scenario, None, probe, "malformed", message.arrived_ns, text)
            self.evidence.observation(
                self.scenario, "finding", f"{probe} received a malformed message on {message.topic}: {exc}: {text!r}"
            )
            return
        cid = payload.get("cid")
        cid = str(cid) if cid is not None else None
        row_id = self.evidence.arrival(self.scenario, cid, probe, kind, message.arrived_ns, payload)
        arrival = Arrival(row_id, probe, kind, cid, payload, message.arrived_ns)
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
