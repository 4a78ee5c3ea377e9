"""Runs a scenario plan: repetitions paced on a schedule, each a sequence of steps, then a drain that
settles every expectation still open as late, misrouted or lost. Everything lands in the evidence store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from harness.clock import now_ns
from harness.evidence import EvidenceStore, Match
from harness.outcomes import Outcome
from harness.tracking import Arrival, Predicate, Tracker

if TYPE_CHECKING:
    from devices.model import EventSpec
    from devices.simulated import SimulatedDevice
    from harness.labfile import Lab
    from harness.probes.response_centre import ResponseCentreProbe
    from harness.scenario.plan import ScenarioPlan, StepPlan
    from harness.transports.mqtt import MqttSettings

DEFAULT_DRAIN_NS = 2_000_000_000
PROGRESS_AFTER_S = 15.0  # a wait longer than this shows a progress line (real-time supervision runs take minutes)
PROGRESS_EVERY_S = 10.0


class Testbed(Protocol):
    """What a scenario runs against: the session's connected devices and probes."""

    evidence: EvidenceStore
    tracker: Tracker
    lab: Lab
    probes: dict[str, ResponseCentreProbe]

    def device(self, device_id: str) -> SimulatedDevice: ...

    def next_seq(self, device_id: str) -> int: ...

    def mqtt_settings(self, identity: str = "harness") -> MqttSettings: ...

    def endpoint(self, role: str, name: str) -> Any: ...

    def harness_fault(self, text: str) -> None:
        """Record a failure of vtlab's own part: the scenario becomes a harness fault, charged to no one."""
        ...

    def progress(self, text: str) -> None:
        """Show the tester what a long wait is waiting for (a line on the terminal; nothing is recorded)."""
        ...


@dataclass(frozen=True, slots=True)
class Stimulus:
    cid: str
    device_id: str
    alias: str
    spec: EventSpec
    seq: int
    t_ns: int
    key: str | None = None  # correlation key where the protocol cannot carry the cid (harness.links)


@dataclass(slots=True)
class Pending:
    """An expectation whose `within` ran out; settled by the drain."""

    iteration: int
    step: int
    metrics: tuple[str, ...]  # first is the primary metric; the rest share its latency origin list
    origins: tuple[int, ...]  # latency start stamp per metric
    stimulus: Stimulus
    probe: str
    predicate: Predicate
    check: Callable[[Arrival], tuple[Outcome, str | None]]


@dataclass(slots=True)
class Iteration:
    run: ScenarioRun
    index: int
    stimuli: dict[str, Stimulus] = field(default_factory=dict)
    alarms: dict[str, tuple[Arrival, Stimulus]] = field(default_factory=dict)  # by probe
    acked: dict[str, tuple[str, int, Stimulus]] = field(default_factory=dict)  # by device alias
    stopped: str | None = None

    @property
    def plan(self) -> ScenarioPlan:
        return self.run.plan

    @property
    def bed(self) -> Testbed:
        return self.run.bed

    def device_id(self, alias: str) -> str:
        return self.plan.devices[alias].id_for(self.index)

    def record(self, step: StepPlan, outcome: str, detail: str | None = None) -> None:
        self.bed.evidence.step(self.plan.id, self.index, step.index, step.kind.name, outcome, detail, now_ns())

    def stop(self, reason: str) -> None:
        self.stopped = reason

    def match(self, step: int, metric: str, stim: Stimulus, outcome: Outcome, arrival: Arrival | None = None,
              latency_ns: int | None = None, detail: str | None = None) -> None:
        self.bed.evidence.match(Match(self.plan.id, self.index, step, metric, stim.cid, stim.device_id, stim.seq,
                                      outcome, arrival.id if arrival else None, latency_ns, detail))

    async def await_arrival(
        self, step: StepPlan, stim: Stimulus, probe: str, predicate: Predicate,
        check: Callable[[Arrival], tuple[Outcome, str | None]], deadline_ns: int,
        metrics: tuple[str, ...], origins: tuple[int, ...], *, what: str, within: str, stop: bool = True,
    ) -> Arrival | None:
        """Wait for the arrival an expectation step names until its deadline. On timeout the expectation is
        left to the drain (late, misrouted or lost), the step is recorded `timeout`, and, with `stop`, the
        repetition's later steps are not tried (censored samples of their metrics)."""
        wait_s = (deadline_ns - now_ns()) / 1e9
        async with self.progress(f"{what} from {stim.alias} at {probe}, within {within}", wait_s):
            arrival = await self.bed.tracker.expect(predicate, frozenset({probe}), wait_s)
        if arrival is None:
            self.run.pending.append(Pending(self.index, step.index, metrics, origins, stim, probe, predicate, check))
            self.record(step, "timeout", f"no {what} for {stim.cid} at {probe} within {within}")
            if stop:
                self.stop(f"{what} {stim.cid} did not arrive within {within}")
        return arrival

    @contextlib.asynccontextmanager
    async def progress(self, what: str, wait_s: float) -> AsyncIterator[None]:
        """While a long wait runs, a progress line every few seconds: a real-time supervision run against a
        supplier's platform waits minutes for one alarm, and the tester must see that it is alive."""
        if wait_s < PROGRESS_AFTER_S:
            yield
            return
        started = now_ns()
        scale = self.plan.time_scale

        async def tick() -> None:
            while True:
                await asyncio.sleep(PROGRESS_EVERY_S)
                waited = (now_ns() - started) / 1e9
                shown = f" (x{scale:g}: {waited * scale:.0f} s operational)" if scale != 1 else ""
                self.bed.progress(f"{self.plan.path.name} #{self.index + 1}: waiting for {what}: "
                                  f"{waited:.0f} s of {wait_s:.0f} s{shown}")

        task = asyncio.create_task(tick())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def settle(self, step: StepPlan, metric: str, stim: Stimulus, arrival: Arrival,
               check: Callable[[Arrival], tuple[Outcome, str | None]]) -> tuple[Outcome, str | None]:
        """Judge an arrival that came in time, record the match and the step; returns the outcome."""
        outcome, detail = check(arrival)
        self.match(step.index, metric, stim, outcome, arrival, arrival.t_ns - stim.t_ns, detail)
        self.record(step, "ok" if outcome is Outcome.OK else "mismatch", detail)
        return outcome, detail

    def not_reached(self, step: StepPlan) -> None:
        """An expectation not tried because an earlier step failed: a censored sample of its metrics
        (latency percentiles are over every stimulus sent), never a count of `lost`."""
        names = step.kind.metrics(step.args) if step.kind.metrics else []
        if not names or not self.stimuli:
            return
        alias = getattr(step.args, "device", None) or getattr(step.args, "from_", None)
        stim = self.stimuli.get(alias) if alias else None
        stim = stim or next(reversed(self.stimuli.values()))
        for metric in names:
            self.match(step.index, metric, stim, Outcome.NOT_REACHED, detail=self.stopped)


class ScenarioRun:
    def __init__(self, plan: ScenarioPlan, bed: Testbed, run_tag: str) -> None:
        """`run_tag` makes correlation ids unique across runs: the run's random nonce and the scenario's
        number in the run (a platform that merges repeats across runs must not see the same id twice)."""
        self.plan = plan
        self.bed = bed
        self.run_tag = run_tag
        self.pending: list[Pending] = []
        self.keys_in_flight: Counter[str] = Counter()  # correlation keys of alarms not yet settled
        self._cids = itertools.count(1)

    def new_cid(self, iteration: int) -> str:
        return f"{self.run_tag}-{iteration:05d}-{next(self._cids):06d}"

    async def execute(self) -> None:
        tracker = self.bed.tracker
        tracker.begin(self.plan.id, asyncio.get_running_loop())
        try:
            await self._iterations()
            from harness.scenario.fuzz import stop_fuzzers

            await stop_fuzzers(self)  # a background fuzzer ends with the steps, and records what it sent
            await self._drain()
        finally:
            tracker.end()

    async def _iterations(self) -> None:
        plan = self.plan
        if plan.pace_per_s is None:
            for i in range(plan.spec.repeat):
                await self._iteration(i)
            return
        start = asyncio.get_running_loop().time()
        interval = 1.0 / plan.pace_per_s
        tasks = []
        for i in range(plan.spec.repeat):
            delay = start + i * interval - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._iteration(i)))
        await asyncio.gather(*tasks)

    async def _iteration(self, index: int) -> None:
        it = Iteration(self, index)
        for step in self.plan.steps:
            if it.stopped is not None:
                it.record(step, "skipped", it.stopped)
                it.not_reached(step)
                continue
            await step.kind.run(it, step)

    async def _drain(self) -> None:
        if not self.pending:
            return
        drain = self.plan.run_ns(self.plan.drain_ns) if self.plan.drain_ns is not None else DEFAULT_DRAIN_NS
        deadline = now_ns() + drain
        tracker = self.bed.tracker
        for p in self.pending:
            remaining = max(0.0, (deadline - now_ns()) / 1e9)
            arrival = await tracker.expect(p.predicate, frozenset({p.probe}), remaining)
            stim = p.stimulus
            it = Iteration(self, p.iteration)
            if arrival is not None:
                outcome, detail = p.check(arrival)
                outcome = Outcome.LATE if outcome is Outcome.OK else outcome
                for metric, origin in zip(p.metrics, p.origins, strict=True):
                    it.match(p.step, metric, stim, outcome, arrival, arrival.t_ns - origin,
                             detail or "arrived after `within`")
                continue
            elsewhere = tracker.find(p.predicate, None, claim=True)
            for metric in p.metrics:
                if elsewhere is not None:
                    it.match(p.step, metric, stim, Outcome.MISROUTED, elsewhere, None,
                             f"arrived at {elsewhere.probe} instead of {p.probe}")
                else:
                    it.match(p.step, metric, stim, Outcome.LOST, None, None, f"nothing arrived at {p.probe}")
