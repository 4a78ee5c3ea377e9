"""The engine: run one scenario plan against a session's test bed and judge it. The pytest items, `vtlab
run` and the load runner call this; nothing here knows pytest.

A scenario during which a part of vtlab failed (a connection of its own dropped, a heartbeat it could
not send, the reference lab died, evidence not written) ends `harness_fault`: it gets no criterion
verdicts and no deviations, and the run is incomplete. What vtlab could not measure is never the
supplier's fault."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from harness.acceptance import CriterionDef, CriterionResult, judge
from harness.clock import now_ns
from harness.errors import TargetError
from harness.evidence import EvidenceReader
from harness.metrics import compute
from harness.outcomes import ScenarioStatus
from harness.run.testbed import HarnessFault
from harness.scenario.plan import ScenarioPlan
from harness.scenario.runner import ScenarioRun
from harness.session import RunSession


@dataclass(slots=True)
class ScenarioOutcome:
    status: ScenarioStatus
    results: list[CriterionResult] = field(default_factory=list)
    faults: list[HarnessFault] = field(default_factory=list)
    detail: str | None = None


def time_scale_text(scale: float) -> str:
    return (f"Time compressed 1:{scale:g} on the reference lab (platform.time_scale): this scenario's heartbeat "
            f"intervals, waits and deadlines ran {scale:g} times faster than written, and every duration measured "
            f"in it is reported multiplied by {scale:g} (with the lab's and vtlab's own delays)")


def run_and_judge(plan: ScenarioPlan, session: RunSession) -> ScenarioOutcome:
    """Run `plan` (the session must be started), write everything to the evidence, judge it."""
    ev, bed = session.evidence, session.bed
    definition = plan.definition()
    definition["resolved_criteria"] = [CriterionDef.of(c).to_json() for c in plan.criteria]
    session.record_scenario_file(plan.source)
    ev.scenario_started(plan.id, str(plan.path), plan.title, plan.covers, definition)
    if plan.time_scale != 1:
        ev.observation(plan.id, "time_scale", time_scale_text(plan.time_scale))
    started = now_ns()
    try:
        asyncio.run(ScenarioRun(plan, bed, session.next_run_tag()).execute())
    except TargetError as exc:
        bed.stop_devices()
        faults = bed.faults_since(started)
        if not faults:
            ev.scenario_ended(plan.id, ScenarioStatus.ERROR, str(exc))
            raise
        detail = "; ".join(f.text for f in faults[:5]) + f" (then: {exc.problem})"
        ev.scenario_ended(plan.id, ScenarioStatus.HARNESS_FAULT, detail)
        ev.flush()
        return ScenarioOutcome(ScenarioStatus.HARNESS_FAULT, [], faults, detail)
    except BaseException as exc:
        ev.scenario_ended(plan.id, ScenarioStatus.ERROR, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        bed.stop_devices()
        bed.collect_target_events(plan.id)
    faults = bed.faults_since(started)
    if faults:
        detail = "; ".join(f.text for f in faults[:5])
        ev.scenario_ended(plan.id, ScenarioStatus.HARNESS_FAULT, detail)
        ev.flush()
        return ScenarioOutcome(ScenarioStatus.HARNESS_FAULT, [], faults, detail)
    ev.scenario_ended(plan.id, ScenarioStatus.COMPLETED)
    ev.flush()
    reader = EvidenceReader(ev.path)
    try:
        metrics = compute(reader.stimuli(plan.id), reader.arrivals(plan.id), reader.matches(plan.id), plan.time_scale)
    finally:
        reader.close()
    results = judge(plan.id, [CriterionDef.of(c) for c in plan.criteria], metrics)
    for r in results:
        for req in r.requirements:
            ev.verdict(plan.id, req, r.metric, r.statistic, r.limit, r.measured, r.unit, r.verdict, r.detail)
    return ScenarioOutcome(ScenarioStatus.COMPLETED, results)
