"""Allure labels and attachments for scenario results, for teams that drill down in Allure.

Loaded by the harness's pytest plugin when allure-pytest is installed; acts only with `--alluredir`.
Labels: epic and feature from the requirement category, story from the requirement id, severity from its
class (A blocker, B critical, C normal, D trivial), a link per requirement to its row in the report.
Attachments after each scenario: its plots (SVG) and an evidence excerpt (JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

SEVERITY = {"A": "blocker", "B": "critical", "C": "normal", "D": "trivial"}
_ORDER = ["A", "B", "C", "D"]


def _active(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "allure_report_dir", None))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _active(config):
        return
    from harness.pytest_plugin.run import run_key

    try:
        contract = config.stash[run_key].contract[0]
    except Exception:
        return
    for item in items:
        plan = getattr(item, "plan", None)
        if plan is None:
            continue
        reqs = [r for r in (contract.get(i) for i in plan.covers) if r is not None]
        for r in reqs:
            item.add_marker(pytest.mark.allure_label(r.category.value, label_type="epic"))
            item.add_marker(pytest.mark.allure_label(r.category.value, label_type="feature"))
            item.add_marker(pytest.mark.allure_label(r.id, label_type="story"))
            item.add_marker(
                pytest.mark.allure_link(
                    f"report.html#req-{r.id}", link_type="link", name=f"{contract.contract.id} {r.id}: {r.source}"
                )
            )
        if reqs:
            worst = min((r.severity.value for r in reqs), key=_ORDER.index)
            item.add_marker(pytest.mark.allure_label(SEVERITY[worst], label_type="severity"))
        item.add_marker(pytest.mark.allure_label(contract.contract.id, label_type="parentSuite"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield
    if not _active(item.config) or getattr(item, "plan", None) is None:
        return
    try:
        _attach(item)
    except Exception as exc:
        import allure

        allure.attach(f"attachments failed: {type(exc).__name__}: {exc}", "vtlab", allure.attachment_type.TEXT)


def _attach(item: Any) -> None:
    import allure

    from harness.acceptance import CriterionDef
    from harness.evidence import EvidenceReader
    from harness.pytest_plugin.run import run_key
    from harness.report.i18n import Lang
    from harness.report.plots import scenario_plots

    run = item.config.stash[run_key]
    if run.session is None:
        return
    plan = item.plan
    run.session.evidence.flush()
    reader = EvidenceReader(run.session.evidence.path)
    try:
        crits = [CriterionDef.of(c).to_json() for c in plan.criteria]
        for p in scenario_plots(reader, plan.id, crits, Lang("nb")):
            if p.svg:
                allure.attach(p.svg, p.title, allure.attachment_type.SVG)
            elif p.note:  # matplotlib missing: say so instead of attaching an empty picture
                allure.attach(p.note, p.title, allure.attachment_type.TEXT)
        results = dict(item.user_properties).get("vtlab_results", [])
        problems = [
            dict(r)
            for r in reader.rows(
                "SELECT metric, stimulus_cid, device, outcome, latency_ns, detail FROM matches"
                " WHERE scenario = ? AND outcome != 'ok' ORDER BY id LIMIT 50",
                (plan.id,),
            )
        ]
        excerpt = {
            "scenario": plan.id,
            "criteria": results,
            "problems (first 50)": problems,
            "observations": [dict(o) for o in reader.observations() if o["scenario"] == plan.id],
        }
        allure.attach(
            json.dumps(excerpt, ensure_ascii=False, indent=1, default=str),
            "evidence excerpt",
            allure.attachment_type.JSON,
        )
    finally:
        reader.close()
