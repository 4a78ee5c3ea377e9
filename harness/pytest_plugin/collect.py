"""Scenario files as pytest items: one YAML file, one scenario, one test item."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.acceptance import FAIL, CriterionResult
from harness.engine import run_and_judge
from harness.errors import InputError, VtlabError
from harness.outcomes import ScenarioStatus
from harness.pytest_plugin.run import VtlabRun, run_key
from harness.scenario.loader import load_scenario
from harness.scenario.plan import ScenarioPlan
from harness.yamlfile import load_yaml


class CriteriaFailed(Exception):
    def __init__(self, results: list[CriterionResult]):
        self.results = results
        super().__init__(format_results(results))


def format_results(results: list[CriterionResult]) -> str:
    lines = ["acceptance criteria:"]
    for r in results:
        measured = "not arrived" if r.censored else "-" if r.measured is None else f"{r.measured:g} {r.unit}"
        if r.n is not None:
            measured += f" (n={r.n}, arrived {r.arrived}, not {r.not_arrived})"
        lines.append(f"  {r.verdict.value.upper():9} {r.metric} {r.statistic} {r.limit:>10}  measured {measured}"
                     f"  [{', '.join(r.requirements)}]")
        if r.verdict == FAIL:
            lines.append(f"            {r.detail}")
    return "\n".join(lines)


def is_load_scenario(path: Path) -> bool:
    """A scenario file with a top-level `load:` describes a capacity run for `vtlab load`."""
    src = load_yaml(path, "scenario")
    return isinstance(src.data, dict) and "load" in src.data


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        run: VtlabRun = self.config.stash[run_key]
        if is_load_scenario(self.path):
            return  # a capacity scenario: `vtlab load` runs it (harness/load), not the functional suite
        contract, _ = run.contract
        scenario_id = self.path.relative_to(self.config.rootpath).as_posix() \
            if self.path.is_relative_to(self.config.rootpath) else str(self.path)
        plan = load_scenario(self.path, contract, run.lab, scenario_id)
        earlier = run.titles.setdefault(plan.title, self.path)
        if earlier != self.path:
            raise InputError(f"the title `{plan.title}` is already used by {earlier}",
                             place=plan.source.place("title"),
                             fix="give every scenario its own title: the report and the deviations name them by it")
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


class HarnessFaulted(Exception):
    """The scenario is incomplete: a part of vtlab failed while it ran (not the supplier's failure)."""


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
        session.bed.progress_sink = self._terminal_line
        outcome = run_and_judge(self.plan, session)
        self.user_properties.append(("vtlab_results", [r.to_json() for r in outcome.results]))
        if outcome.status is ScenarioStatus.HARNESS_FAULT:
            raise HarnessFaulted(f"INCOMPLETE (harness fault, not charged to the supplier): {outcome.detail}")
        if any(r.verdict is FAIL for r in outcome.results):
            raise CriteriaFailed(outcome.results)

    def _terminal_line(self, text: str) -> None:
        """A progress line on the terminal while output is captured (called from the run's event loop)."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None:
            return
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            tr.write_line(f"  ... {text}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CriteriaFailed | VtlabError | HarnessFaulted):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"scenario: {self.plan.title}"
