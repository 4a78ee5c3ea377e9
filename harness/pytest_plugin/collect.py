"""Scenario files as pytest items: one YAML file, one scenario, one test item."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from harness.acceptance import FAIL, CriterionDef, CriterionResult, judge
from harness.errors import TargetError, VtlabError
from harness.evidence import EvidenceReader
from harness.metrics import compute
from harness.pytest_plugin.run import VtlabRun, run_key
from harness.scenario.loader import load_scenario
from harness.scenario.plan import ScenarioPlan
from harness.scenario.runner import ScenarioRun


class CriteriaFailed(Exception):
    def __init__(self, results: list[CriterionResult]):
        self.results = results
        super().__init__(format_results(results))


def format_results(results: list[CriterionResult]) -> str:
    lines = ["acceptance criteria:"]
    for r in results:
        measured = "-" if r.measured is None else f"{r.measured:g} {r.unit}"
        lines.append(f"  {r.verdict.upper():9} {r.metric} {r.statistic} {r.limit:>10}  measured {measured}"
                     f"  [{', '.join(r.requirements)}]")
        if r.verdict == FAIL:
            lines.append(f"            {r.detail}")
    return "\n".join(lines)


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        run: VtlabRun = self.config.stash[run_key]
        contract, _ = run.contract
        scenario_id = self.path.relative_to(self.config.rootpath).as_posix() \
            if self.path.is_relative_to(self.config.rootpath) else str(self.path)
        plan = load_scenario(self.path, contract, run.lab, scenario_id)
        item = ScenarioItem.from_parent(self, name=self.path.stem, plan=plan)
        registered = self.config.getini("markers")
        for req in plan.covers:
            if not any(m.split(":")[0] == req for m in registered):
                self.config.addinivalue_line("markers", f"{req}: covers contract requirement {req}")
            item.add_marker(pytest.mark.requirement(req))
            item.add_marker(req)
        for marker in plan.spec.markers:
            item.add_marker(marker)
        yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, VtlabError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ScenarioItem(pytest.Item):
    def __init__(self, *, plan: ScenarioPlan, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def runtest(self) -> None:
        run: VtlabRun = self.config.stash[run_key]
        try:
            session = run.start()
        except VtlabError as exc:
            if run.session is not None:
                run.session.evidence.observation(None, "error", f"the run could not start: {exc}")
            pytest.exit(str(exc), returncode=2)
        plan = self.plan
        run.scenario_count += 1
        definition = plan.definition()
        definition["resolved_criteria"] = [CriterionDef.of(c).to_json() for c in plan.criteria]
        ev = session.evidence
        session.record_scenario_file(plan.source)
        ev.scenario_started(plan.id, str(plan.path), plan.title, plan.covers, definition)
        tag = f"{session.run_id[-4:]}-s{run.scenario_count}"
        try:
            asyncio.run(ScenarioRun(plan, session, tag).execute())
        except TargetError as exc:
            ev.scenario_ended(plan.id, "error", str(exc))
            raise
        except BaseException as exc:
            ev.scenario_ended(plan.id, "error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            session.stop_devices()
            session.collect_lab_events(plan.id)
        ev.scenario_ended(plan.id, "completed")
        ev.flush()
        reader = EvidenceReader(ev.path)
        try:
            metrics = compute(reader.stimuli(plan.id), reader.arrivals(plan.id), reader.matches(plan.id))
        finally:
            reader.close()
        results = judge(plan.id, [CriterionDef.of(c) for c in plan.criteria], metrics)
        for r in results:
            for req in r.requirements:
                ev.verdict(plan.id, req, r.metric, r.statistic, r.limit, r.measured, r.unit, r.verdict, r.detail)
        self.user_properties.append(("vtlab_results", [r.to_json() for r in results]))
        if any(r.verdict == FAIL for r in results):
            raise CriteriaFailed(results)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CriteriaFailed | VtlabError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"scenario: {self.plan.title}"
