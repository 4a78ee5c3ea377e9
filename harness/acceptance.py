"""Acceptance: criteria judged against metrics, requirement verdicts, deviations and the approval rule.

Pure functions over plain data, so the summary can be rebuilt from the evidence store at any time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.contract import ApprovalRule, Contract, Priority
from harness.metrics import ScenarioMetrics
from harness.outcomes import (
    CriterionVerdict,
    Reason,
    ReasonCode,
    RequirementVerdict,
    RunVerdict,
    ScenarioStatus,
)
from harness.units import DISPLAY_UNITS, Dimension, Limit, parse_limit, readable_duration

PASS, MARGINAL, FAIL = CriterionVerdict.PASS, CriterionVerdict.MARGINAL, CriterionVerdict.FAIL
_RANK = {RequirementVerdict.PASS: 0, RequirementVerdict.MARGINAL: 1, RequirementVerdict.NOT_RUN: 2,
         RequirementVerdict.ERROR: 3, RequirementVerdict.FAIL: 4}


@dataclass(frozen=True, slots=True)
class CriterionDef:
    """A criterion as stored in the evidence (no source positions)."""

    metric: str
    statistic: str
    limit: str
    marginal: str | None
    dimension: str
    requirements: tuple[str, ...]

    @classmethod
    def of(cls, c: Any) -> CriterionDef:
        """From a loaded criterion (harness.scenario.plan.Criterion)."""
        return cls(c.metric, c.statistic, c.limit.text, c.marginal.text if c.marginal else None,
                   c.dimension.value, c.requirements)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CriterionDef:
        return cls(d["metric"], d["statistic"], d["limit"], d.get("marginal"), d["dimension"],
                   tuple(d["requirements"]))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "requirements": list(self.requirements)}

    @property
    def dim(self) -> Dimension:
        return Dimension(self.dimension)

    def limits(self) -> tuple[Limit, Limit | None]:
        lim = parse_limit(self.limit, self.dim)
        return lim, parse_limit(self.marginal, self.dim) if self.marginal else None


def _display(dim: Dimension, value: float | None) -> float | None:
    if value is None:
        return None
    if dim is Dimension.TIME:
        return round(value / 1e6, 3)
    if dim is Dimension.RATIO:
        return round(value * 100.0, 4)
    return round(value, 3)


@dataclass(frozen=True, slots=True)
class CriterionResult:
    scenario: str
    requirements: tuple[str, ...]
    metric: str
    statistic: str
    limit: str
    marginal: str | None
    measured: float | None  # in `unit`; None when nothing was measured or the value is censored
    unit: str
    verdict: CriterionVerdict
    detail: str
    n: int | None = None  # latency criteria: every expectation the scenario made (the denominator)
    arrived: int | None = None  # ... of which arrived in place within their step's `within`
    not_arrived: int | None = None  # ... lost, misrouted, late or never tried (censored above any limit)

    @property
    def censored(self) -> bool:
        """The statistic falls among alarms that did not arrive: it is above any limit."""
        return self.measured is None and bool(self.not_arrived)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "statistic": self.statistic, "limit": self.limit,
            "marginal": self.marginal, "measured": self.measured, "unit": self.unit,
            "verdict": self.verdict.value, "detail": self.detail, "scenario": self.scenario,
            "n": self.n, "arrived": self.arrived, "not_arrived": self.not_arrived, "censored": self.censored,
        }


def judge(scenario: str, criteria: Iterable[CriterionDef], metrics: ScenarioMetrics) -> list[CriterionResult]:
    """Each criterion against the scenario's metrics. A latency statistic is over every expectation the
    scenario made: alarms that did not arrive in place and in time are censored samples above any limit."""
    results = []
    for c in criteria:
        limit, marginal = c.limits()
        raw = metrics.value(c.metric, c.statistic)
        dim = c.dim
        lat = metrics.latencies.get(c.metric)
        n = arrived = missing = None
        population = ""
        if lat is not None and dim is Dimension.TIME:
            n, arrived, missing = lat.n, lat.arrived, lat.censored
            population = f" over {n} expected ({arrived} arrived in time, {missing} did not: {lat.why_censored()})" \
                if missing else f" over {n} expected, all arrived in time"
        if raw is None:
            what = "no expectation of this metric was evaluated" if lat is None else "no sample"
            verdict, detail = FAIL, f"no {c.metric} to judge: {what}"
        elif math.isinf(raw):
            verdict = FAIL
            detail = f"{c.metric} {c.statistic} is among the alarms that did not arrive in time{population}; " \
                     f"limit {limit.text}"
        elif not limit.holds(raw):
            verdict, detail = FAIL, f"{c.metric} {c.statistic} = {_human(dim, raw)}{population}, limit {limit.text}"
        elif marginal is not None and not marginal.holds(raw):
            verdict, detail = MARGINAL, f"{c.metric} {c.statistic} = {_human(dim, raw)}{population}, within " \
                                        f"{limit.text} but outside the marginal band {marginal.text}"
        else:
            verdict, detail = PASS, f"{c.metric} {c.statistic} = {_human(dim, raw)}{population}"
        shown = None if raw is None or math.isinf(raw) else _display(dim, raw)
        results.append(CriterionResult(scenario, c.requirements, c.metric, c.statistic, c.limit, c.marginal,
                                       shown, DISPLAY_UNITS[dim], verdict, detail, n, arrived, missing))
    return results


def _human(dim: Dimension, value: float) -> str:
    if dim is Dimension.TIME:
        return readable_duration(value)
    if dim is Dimension.RATIO:
        return f"{value * 100:.3g}%"
    if dim is Dimension.RATE:
        return f"{value:.1f}/s"
    return f"{value:g}"


@dataclass(slots=True)
class Deviation:
    """An avvik: a failed criterion against a requirement, with the requirement's severity class."""

    id: str
    requirement: str
    severity: str
    scenario: str
    summary: str
    evidence: dict[str, Any]
    status: str = "open"  # open | retested

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ScenarioJudgement:
    id: str
    title: str
    status: ScenarioStatus
    covers: list[str]
    results: list[CriterionResult]
    metrics: ScenarioMetrics | None
    detail: str | None = None


@dataclass(slots=True)
class Verdict:
    verdict: RunVerdict
    reason: Reason
    requirements: list[dict[str, Any]] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # covered by the suite, but not run this time
    partial: bool = False  # part of the suite was not run (a retest, -k ...)


def _evidence_for(result: CriterionResult, m: ScenarioMetrics | None) -> dict[str, Any]:
    ev: dict[str, Any] = {"scenario": result.scenario, "metric": result.metric, "statistic": result.statistic,
                          "measured": result.measured, "unit": result.unit, "limit": result.limit}
    if m is None:
        return ev
    if result.metric == "lost":
        ev["lost_alarms"] = m.lost_cids
    elif result.metric == "duplicates":
        ev["duplicated_alarms"] = m.duplicate_cids
    elif result.metric == "out_of_order":
        ev["out_of_order_alarms"] = m.out_of_order_cids
    elif result.metric in ("misrouted", "altered", "insecure_accepted", "ambiguous", "unexpected"):
        ev["details"] = m.problem_details[:50]
    else:
        ev.update(n=result.n, arrived=result.arrived, not_arrived=result.not_arrived)
        ev["lost_alarms"] = m.lost_cids
        if m.problem_details:
            ev["details"] = m.problem_details[:50]
    return ev


@dataclass(frozen=True, slots=True)
class RunState:
    """What the approval rule needs to know about the run(s) besides requirements and deviations."""

    ended: bool
    scenarios_run: int
    unfinished: tuple[str, ...] = ()  # scenarios that errored or stayed running
    harness_faults: tuple[str, ...] = ()  # scenarios where vtlab's own part failed
    partial: bool = False  # part of the suite was deselected


def approve(rule: ApprovalRule, requirements: list[dict[str, Any]], deviations: list[dict[str, Any]],
            state: RunState) -> tuple[RunVerdict, Reason]:
    """THE approval rule: the one place that turns requirement verdicts and deviations into the run's
    verdict. `vtlab run`'s exit code, summary.json and the signed report all come from here.

    Order: a run that did not finish, or whose scenarios did not complete, is incomplete; open blocking
    deviations make it not approved; untested must-requirements (or any priority the contract lists)
    and requirements the suite covers but no run has tested keep it incomplete; otherwise approved."""
    blocking = tuple(sorted(s.value for s in rule.blocking))
    if not state.ended:
        return RunVerdict.INCOMPLETE, Reason(ReasonCode.RUN_NOT_FINISHED)
    if state.harness_faults:
        return RunVerdict.INCOMPLETE, Reason(ReasonCode.HARNESS_FAULT, state.harness_faults)
    if state.unfinished:
        return RunVerdict.INCOMPLETE, Reason(ReasonCode.SCENARIOS_UNFINISHED, state.unfinished)
    if state.scenarios_run == 0:
        return RunVerdict.INCOMPLETE, Reason(ReasonCode.NO_SCENARIO)
    open_blocking = [d for d in deviations if d["status"] == "open" and d["severity"] in blocking]
    if open_blocking:
        ids = tuple(f"{d['id']} ({d['severity']})" for d in open_blocking)
        return RunVerdict.NOT_APPROVED, Reason(ReasonCode.OPEN_BLOCKING, ids, blocking)
    not_run = tuple(r["id"] for r in requirements if r["verdict"] == RequirementVerdict.NOT_RUN)
    if not_run:
        return RunVerdict.INCOMPLETE, Reason(ReasonCode.PART_NOT_RUN, not_run)
    required = {str(p) for p in rule.require_tested}
    untested = tuple(r["id"] for r in requirements
                     if r["priority"] in required and r["verdict"] in (RequirementVerdict.NOT_COVERED,
                                                                        RequirementVerdict.ERROR))
    if untested:
        return RunVerdict.INCOMPLETE, Reason(ReasonCode.UNTESTED_REQUIRED, untested, tuple(sorted(required)))
    retested = tuple(d["id"] for d in deviations if d["status"] == "retested")
    return RunVerdict.APPROVED, Reason(ReasonCode.NO_OPEN_BLOCKING, (), blocking, retested)


def requirement_row(req: Any, verdict: RequirementVerdict, criteria: list[CriterionResult],
                    scenarios: list[str]) -> dict[str, Any]:
    row = {
        "id": req.id, "title": req.title, "priority": req.priority.value, "category": req.category.value,
        "severity": req.severity.value, "source": req.source, "verdict": verdict.value,
        "criteria": [r.to_json() for r in criteria], "scenarios": scenarios,
    }
    if req.verified_by is not None:
        row["verified_by"] = req.verified_by.model_dump(mode="json")
    return row


def run_state(scenarios: list[tuple[str, str]], ended: bool, partial: bool) -> RunState:
    """RunState from (scenario id, status) pairs, as stored in evidence and summary.json."""
    return RunState(
        ended=ended,
        scenarios_run=len([1 for _, st in scenarios if st != ScenarioStatus.SKIPPED]),
        unfinished=tuple(i for i, st in scenarios if st in (ScenarioStatus.ERROR, ScenarioStatus.RUNNING)),
        harness_faults=tuple(i for i, st in scenarios if st == ScenarioStatus.HARNESS_FAULT),
        partial=partial,
    )


def decide(
    contract: Contract,
    scenarios: list[ScenarioJudgement],
    run_ended: bool,
    suite: dict[str, list[str]] | None = None,
) -> Verdict:
    """Requirement verdicts and deviations of this run, and its verdict under `approve`.

    `suite` maps requirement ids to the scenarios of the whole suite that cover them; a requirement the
    suite covers but this run did not test is `not_run`. A scenario that did not complete (a harness
    fault, an error) gives its requirements no verdict and no deviation: what vtlab could not measure
    is never charged to the supplier."""
    suite = suite or {}
    covering: dict[str, list[ScenarioJudgement]] = {r.id: [] for r in contract.requirements}
    for s in scenarios:
        for req_id in s.covers:
            covering.setdefault(req_id, []).append(s)
    deviations: list[Deviation] = []
    requirements: list[dict[str, Any]] = []
    for req in contract.requirements:
        crits: list[CriterionResult] = []
        verdict: RequirementVerdict | None = None
        ran = [s for s in covering[req.id] if s.status is not ScenarioStatus.SKIPPED]
        for s in ran:
            if s.status.unfinished:
                verdict = RequirementVerdict.ERROR if verdict is None else _worse(verdict, RequirementVerdict.ERROR)
                continue
            mine = [r for r in s.results if req.id in r.requirements]
            crits.extend(mine)
            for r in mine:
                rv = RequirementVerdict(r.verdict.value)
                verdict = rv if verdict is None else _worse(verdict, rv)
                if r.verdict is FAIL:
                    deviations.append(Deviation(
                        id=f"AVVIK-{len(deviations) + 1:03d}", requirement=req.id, severity=req.severity.value,
                        scenario=s.id, summary=f"{req.id} {req.title}: {r.detail} (scenario: {s.title})",
                        evidence=_evidence_for(r, s.metrics),
                    ))
        if verdict is None:
            if covering[req.id] or suite.get(req.id):
                verdict = RequirementVerdict.NOT_RUN
            elif req.verified_by is not None:
                verdict = RequirementVerdict.VERIFIED_OTHERWISE
            else:
                verdict = RequirementVerdict.NOT_COVERED
        requirements.append(requirement_row(req, verdict, crits,
                                            [s.id for s in covering[req.id]] or list(suite.get(req.id, []))))
    uncovered = [r["id"] for r in requirements if r["verdict"] == RequirementVerdict.NOT_COVERED]
    not_run = [r["id"] for r in requirements if r["verdict"] == RequirementVerdict.NOT_RUN]
    state = run_state([(s.id, s.status) for s in scenarios], run_ended, bool(not_run))
    verdict_, reason = approve(contract.approval, requirements, [d.to_json() for d in deviations], state)
    return Verdict(verdict_, reason, requirements, deviations, uncovered, not_run, partial=bool(not_run))


def _worse(a: RequirementVerdict, b: RequirementVerdict) -> RequirementVerdict:
    return a if _RANK.get(a, 0) >= _RANK.get(b, 0) else b


def reason_text(reason: Reason) -> str:
    """The reason in English, for terminals and logs (the report words it per language)."""
    items = ", ".join(reason.items)
    classes = "/".join(reason.classes)
    return {
        ReasonCode.RUN_NOT_FINISHED: "the run did not finish",
        ReasonCode.HARNESS_FAULT: f"a part of vtlab failed during scenario(s) {items}: their figures are not "
                                  "the supplier's; run them again",
        ReasonCode.SCENARIOS_UNFINISHED: f"scenario(s) did not complete: {items}",
        ReasonCode.NO_SCENARIO: "no scenario ran",
        ReasonCode.OPEN_BLOCKING: f"open deviations of class {classes}: {items}",
        ReasonCode.PART_NOT_RUN: f"part of the suite has not been run; not tested: {items}",
        ReasonCode.UNTESTED_REQUIRED: f"the approval rule requires every {classes} requirement to be tested; "
                                      f"not tested: {items}",
        ReasonCode.NO_OPEN_BLOCKING: f"no open deviation of class {classes}"
                                     + (f" (retested: {', '.join(reason.retested)})" if reason.retested else ""),
    }[reason.code]


__all__ = [
    "FAIL", "MARGINAL", "PASS", "CriterionDef", "CriterionResult", "Deviation", "Priority", "RunState",
    "ScenarioJudgement", "Verdict", "approve", "decide", "judge", "reason_text",
]
