"""Runs a scenario plan: repetitions paced on a schedule, each a sequence of steps, then a drain that
settles every expectation still open as late, misrouted or lost. Everything lands in the evidence store.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from harness.evidence import EvidenceStore
from harness.tracking import Arrival, Predicate, Tracker
from harness.transports.base import now_ns

if TYPE_CHECKING:
    from devices.model import EventSpec
    from devices.simulated import SimulatedDevice
    from harness.labfile import Lab
    from harness.probes.response_centre import ResponseCentreProbe
    from harness.scenario.plan import ScenarioPlan, StepPlan
    from harness.transports.mqtt import MqttSettings

DEFAULT_DRAIN_NS = 2_000_000_000


class Testbed(Protocol):
    """What a scenario runs against: the session's connected devices and probes."""

    evidence: EvidenceStore
    tracker: Tracker
    lab: Lab
    probes: dict[str, ResponseCentreProbe]

    def device(self, device_id: str) -> SimulatedDevice: ...

    def next_seq(self, device_id: str) -> int: ...

    def mqtt_settings(self) -> MqttSettings: ...


@dataclass(frozen=True, slots=True)
class Stimulus:
    cid: str
    device_id: str
    alias: str
    spec: EventSpec
    seq: int
    t_ns: int


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
    check: Callable[[Arrival], tuple[str, str | None]]


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


class ScenarioRun:
    def __init__(self, plan: ScenarioPlan, bed: Testbed, run_tag: str) -> None:
        self.plan = plan
        self.bed = bed
        self.run_tag = run_tag
        self.pending: list[Pending] = []
        self._cids = itertools.count(1)

    def new_cid(self, iteration: int) -> str:
        return f"{self.run_tag}-{iteration:05d}-{next(self._cids):06d}"

    async def execute(self) -> None:
        tracker = self.bed.tracker
        tracker.begin(self.plan.id, asyncio.get_running_loop())
        try:
            await self._iterations()
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
                continue
            await step.kind.run(it, step)

    async def _drain(self) -> None:
        if not self.pending:
            return
        drain = self.plan.drain_ns if self.plan.drain_ns is not None else DEFAULT_DRAIN_NS
        deadline = now_ns() + drain
        ev, tracker = self.bed.evidence, self.bed.tracker
        for p in self.pending:
            remaining = max(0.0, (deadline - now_ns()) / 1e9)
            arrival = await tracker.expect(p.predicate, frozenset({p.probe}), remaining)
            stim = p.stimulus
            if arrival is not None:
                outcome, detail = p.check(arrival)
                outcome = "late" if outcome == "ok" else outcome
                for metric, origin in zip(p.metrics, p.origins, strict=True):
                    ev.match(self.plan.id, p.iteration, p.step, metric, stim.cid, stim.device_id, stim.seq,
                             arrival.id, arrival.t_ns - origin, outcome, detail or "arrived after `within`")
                continue
            elsewhere = tracker.find(p.predicate, None, claim=True)
            if elsewhere is not None:
                detail = f"arrived at {elsewhere.probe} instead of {p.probe}"
                ev.match(self.plan.id, p.iteration, p.step, p.metrics[0], stim.cid, stim.device_id, stim.seq,
                         elsewhere.id, None, "misrouted", detail)
                continue
            ev.match(self.plan.id, p.iteration, p.step, p.metrics[0], stim.cid, stim.device_id, stim.seq,
                     None, None, "lost", f"nothing arrived at {p.probe}")
