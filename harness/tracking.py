"""Correlation of stimuli and arrivals.

Links hand every message to the tracker from their transport threads, already decoded and stamped. The tracker
writes it to the evidence store at once, then passes it to the scenario's event loop, where expectation
steps claim it. An arrival is claimed once, so a duplicate stays unclaimed and is counted as such.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.evidence import EvidenceStore
from harness.links import Incoming, Refused


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
    key: str | None = None  # correlation key, for protocols that cannot carry the cid (harness.links)
    carries: tuple[str, ...] | None = None  # the judged fields its protocol can carry (None: all)

    def field(self, name: str) -> Any:
        return self.payload.get(name)


Predicate = Callable[[Arrival], bool]


DESCRIBED_MALFORMED = 100
"""Malformed messages described one by one as findings per probe and scenario; all are kept as arrivals."""


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
    _described: dict[str, int] = field(default_factory=dict)  # probe -> malformed messages described this scenario

    def begin(self, scenario: str, loop: asyncio.AbstractEventLoop) -> None:
        self.scenario, self._loop = scenario, loop
        self._arrivals, self._claimed, self._waiters = [], set(), []
        self._described = {}

    def end(self) -> None:
        self._loop = None

    # --- transport threads ------------------------------------------------------------------------
    def on_incoming(self, probe: str, kind: str, got: Incoming) -> None:
        """Record what a probe received (decoded by its link); never raises on what the platform sent."""
        row_id = self.evidence.arrival(
            self.scenario,
            got.cid,
            probe,
            kind,
            got.t_ns,
            got.evidence if got.evidence is not None else dict(got.fields),
        )
        arrival = Arrival(row_id, probe, kind, got.cid, got.fields, got.t_ns, got.defect, got.key, got.carries)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # the loop may close in between: the arrival is in the evidence already
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, arrival)

    def on_refused(self, probe: str, refused: Refused) -> None:
        """Bytes a link could not decode at all: recorded as a malformed arrival and a finding."""
        self.malformed += 1
        self.evidence.arrival(self.scenario, None, probe, "malformed", refused.t_ns, refused.raw)
        described = self._described.get(probe, 0)
        self._described[probe] = described + 1
        if described < DESCRIBED_MALFORMED:
            raw = refused.raw if len(refused.raw) <= 200 else refused.raw[:200] + "..."
            self.evidence.observation(
                self.scenario,
                "finding",
                f"{probe} received a malformed message{' on ' + refused.where if refused.where else ''}: "
                f"{str(refused.reason)[:500]}: {raw!r}",
            )
        elif described == DESCRIBED_MALFORMED:  # a platform flooding garbage must not flood the report
            self.evidence.observation(
                self.scenario,
                "finding",
                f"{probe} received more than {DESCRIBED_MALFORMED} malformed messages in this scenario: the rest are "
                "counted (arrivals of kind malformed in the evidence) but not described one by one",
            )

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
