"""Acceptance: criteria judged against metrics, requirement verdicts, deviations and the approval rule.

Pure functions over plain data, so the summary can be rebuilt from the evidence store at any time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.contract import Contract
from harness.metrics import ScenarioMetrics
from harness.scenario.plan import UNITS, Criterion
from harness.units import Dimension, Limit, parse_limit, readable_duration

PASS, MARGINAL, FAIL = "pass", "marginal", "fail"
_RANK = {PASS: 0, MARGINAL: 1, "not_run": 2, "error": 3, FAIL: 4}


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
    def of(cls, c: Criterion) -> CriterionDef:
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
    measured: float | None  # in `unit`
    unit: str
    verdict: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "statistic": self.statistic, "limit": self.limit,
            "marginal": self.marginal, "measured": self.measured, "unit": self.unit,
            "verdict": self.verdict, "detail": self.detail, "scenario": self.scenario,
        }


def judge(scenario: str, criteria: Iterable[CriterionDef], metrics: ScenarioMetrics) -> list[CriterionResult]:
    results = []
    for c in criteria:
        limit, marginal = c.limits()
        raw = metrics.value(c.metric, c.statistic)
        dim = c.dim
        if raw is None:
            verdict, detail = FAIL, f"no {c.metric} samples: nothing arrived to measure"
        elif not limit.holds(raw):
            verdict, detail = FAIL, f"{c.metric} {c.statistic} = {_human(dim, raw)}, limit {limit.text}"
        elif marginal is not None and not marginal.holds(raw):
            verdict, detail = MARGINAL, f"{c.metric} {c.statistic} = {_human(dim, raw)}, within {limit.text} " \
                                        f"but outside the marginal band {marginal.text}"
        else:
            verdict, detail = PASS, f"{c.metric} {c.statistic} = {_human(dim, raw)}"
        results.append(CriterionResult(scenario, c.requirements, c.metric, c.statistic, c.limit, c.marginal,
                                       _display(dim, raw), UNITS[dim], verdict, detail))
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
    status: str = "open"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ScenarioJudgement:
    id: str
    title: str
    status: str  # completed | error | running | skipped
    covers: list[str]
    results: list[CriterionResult]
    metrics: ScenarioMetrics | None
    detail: str | None = None


@dataclass(slots=True)
class Verdict:
    verdict: str  # approved | not_approved | incomplete
    reason: str
    requirements: list[dict[str, Any]] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # covered by the suite, but not run this time
    partial: bool = False  # incomplete only because part of the suite was not run (a retest, -k ...)


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
    elif result.metric in ("misrouted", "altered", "insecure_accepted"):
        ev["details"] = m.problem_details[:50]
    else:
        ev["samples"] = len(m.latencies[result.metric].samples) if result.metric in m.latencies else 0
        ev["lost_alarms"] = m.lost_cids
    return ev


def decide(
    contract: Contract,
    scenarios: list[ScenarioJudgement],
    run_ended: bool,
    suite: dict[str, list[str]] | None = None,
) -> Verdict:
    """Requirement verdicts, deviations and the overall verdict under the contract's approval rule.

    `suite` maps requirement ids to the scenarios of the whole suite that cover them; a requirement the
    suite covers but this run did not test is `not_run`, and a run with such requirements cannot
    approve the delivery on its own (it is `incomplete`, or `not_approved` if it found a blocking
    deviation)."""
    suite = suite or {}
    covering: dict[str, list[ScenarioJudgement]] = {r.id: [] for r in contract.requirements}
    for s in scenarios:
        for req_id in s.covers:
            covering.setdefault(req_id, []).append(s)
    deviations: list[Deviation] = []
    requirements: list[dict[str, Any]] = []
    for req in contract.requirements:
        crits: list[CriterionResult] = []
        verdict = "not_run"
        ran = [s for s in covering[req.id] if s.status != "skipped"]
        for s in ran:
            mine = [r for r in s.results if req.id in r.requirements]
            crits.extend(mine)
            for r in mine:
                verdict = _worse(verdict, r.verdict) if verdict != "not_run" else r.verdict
                if r.verdict == FAIL:
                    deviations.append(Deviation(
                        id=f"AVVIK-{len(deviations) + 1:03d}", requirement=req.id, severity=req.severity.value,
                        scenario=s.id, summary=f"{req.id} {req.title}: {r.detail} (scenario: {s.title})",
                        evidence=_evidence_for(r, s.metrics),
                    ))
            if s.status in ("error", "running"):
                verdict = "error" if verdict in ("not_run", PASS, MARGINAL) else verdict
        if not covering[req.id]:
            verdict = "not_run" if suite.get(req.id) else "not_covered"
        requirements.append({
            "id": req.id, "title": req.title, "priority": req.priority.value, "category": req.category.value,
            "severity": req.severity.value, "source": req.source, "verdict": verdict,
            "criteria": [r.to_json() for r in crits],
            "scenarios": [s.id for s in covering[req.id]] or list(suite.get(req.id, [])),
        })
    uncovered = [r["id"] for r in requirements if r["verdict"] == "not_covered"]
    not_run = [r["id"] for r in requirements if r["verdict"] == "not_run"]
    unfinished = [s.id for s in scenarios if s.status in ("error", "running")]
    blocking = {sev.value for sev in contract.approval.blocking}
    open_blocking = [d for d in deviations if d.severity in blocking and d.status == "open"]
    if not run_ended or unfinished:
        why = "the run did not finish" if not run_ended else f"scenario(s) did not complete: {', '.join(unfinished)}"
        return Verdict("incomplete", why, requirements, deviations, uncovered, not_run)
    if not scenarios:
        return Verdict("incomplete", "no scenario ran", requirements, deviations, uncovered, not_run)
    if open_blocking:
        ids = ", ".join(f"{d.id} ({d.severity})" for d in open_blocking)
        return Verdict("not_approved", f"open deviations of class {'/'.join(sorted(blocking))}: {ids}",
                       requirements, deviations, uncovered, not_run, partial=bool(not_run))
    if not_run:
        return Verdict("incomplete", f"part of the suite was not run; not tested: {', '.join(not_run)}",
                       requirements, deviations, uncovered, not_run, partial=True)
    required = {str(p) for p in contract.approval.require_tested}
    untested = [r["id"] for r in requirements if r["priority"] in required and r["verdict"] == "not_covered"]
    if untested:
        return Verdict("incomplete", f"the approval rule requires every {'/'.join(sorted(required))} requirement "
                       f"to be tested; not tested: {', '.join(untested)}", requirements, deviations, uncovered)
    return Verdict("approved", f"no open deviation of class {'/'.join(sorted(blocking))}",
                   requirements, deviations, uncovered)


def _worse(a: str, b: str) -> str:
    return a if _RANK.get(a, 0) >= _RANK.get(b, 0) else b
