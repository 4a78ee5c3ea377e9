"""Failed searches of the platform's FHIR API (the pull pattern) as evidence a tester sees in the report.

A record vtlab could not read is not silence: each failure becomes an observation, `finding` when the
platform answered wrongly or not in time, a harness fault when vtlab's own side failed (its key or CA
file), so that it is never charged to the supplier. Bounded: the first failure of a kind (resource type and
signature, e.g. `HTTP 401`) in a scenario is written in full; repeats are only counted, and the count is
written as one more line when the scenario changes or the probe closes. The texts come from `PollFailure`,
which carries no token, key or assertion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from harness.evidence import EvidenceStore, utc_now
from harness.probes.epj import PollFailure

MAX_WRITTEN = 100
"""Distinct failures written in full per probe and run; beyond it they are counted in one closing line."""


@dataclass(slots=True)
class _Run:
    """One kind of failure in one scenario: how often, first and last seen (UTC wall clock)."""

    scenario: str | None
    failure: PollFailure
    count: int
    first: str
    last: str


class PollFailureLog:
    def __init__(
        self,
        probe: str,
        evidence: EvidenceStore,
        scenario: Callable[[], str | None],
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.probe = probe
        self._evidence = evidence
        self._scenario = scenario
        self._on_fault = on_fault
        self._runs: dict[tuple[str | None, str, str, str], _Run] = {}
        self._lock = threading.Lock()
        self.written = 0
        self.unwritten = 0  # distinct failures beyond MAX_WRITTEN (counted, not written)
        self.failures = 0

    def failure(self, f: PollFailure) -> None:
        """A failed search: written if it is the first of its kind in this scenario, else counted."""
        with self._lock:
            self.failures += 1
            scenario = self._scenario()
            self._flush(keep=scenario)
            key = (scenario, f.side, f.resource_type, f.signature)
            run = self._runs.get(key)
            now = utc_now()
            if run is not None:
                run.count += 1
                run.last = now
                return
            self._runs[key] = _Run(scenario, f, 1, now, now)
            if self.written >= MAX_WRITTEN:
                self.unwritten += 1
                return
            self.written += 1
            if f.side == "harness":
                text = f"{self.probe}: vtlab could not search the platform's FHIR API: {f.text}"
                if self._on_fault is not None:
                    self._on_fault(text)
                else:
                    self._evidence.harness_fault(scenario, text)
            else:
                self._evidence.observation(
                    scenario, "finding", f"{self.probe} could not read the patient record: {f.text}"
                )

    def tick(self) -> None:
        """After each round of searches: close the counts of scenarios that have ended."""
        with self._lock:
            self._flush(keep=self._scenario())

    def close(self) -> None:
        with self._lock:
            self._flush(keep=None, everything=True)
            if self.unwritten:
                self._evidence.observation(
                    None,
                    "finding",
                    f"{self.probe}: {self.unwritten} further kind(s) of "
                    f"failed search were counted but not written (limit {MAX_WRITTEN})",
                )

    def _flush(self, keep: str | None, everything: bool = False) -> None:
        for key, run in list(self._runs.items()):
            if not everything and run.scenario == keep:
                continue
            del self._runs[key]
            if run.count < 2:
                continue
            f = run.failure
            text = (
                f"{self.probe}: the same failed search repeated {run.count} times in all ({f.message}; "
                f"{f.signature}), first at {run.first}, last at {run.last}; records recorded meanwhile are "
                f"read by the next search that succeeds, late by the time it failed"
            )
            self._evidence.observation(run.scenario, "harness_fault" if f.side == "harness" else "finding", text)
