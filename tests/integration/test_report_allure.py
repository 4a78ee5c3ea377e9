"""A small real run with allure-pytest: every scenario result carries vtlab's labels, links and attachments;
`vtlab allure` builds one offline HTML file from them; the run's report renders after the run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.session import ROOT
from tests.helpers import partial_suite_contract

# Kept outside any `scenarios/` folder so that running vtlab's own tests does not collect it as a scenario;
# the fixture copies it into one.
SCENARIO_SOURCE = Path(__file__).parent / "report_scenarios" / "kort_alarm.yaml"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reports = tmp_path_factory.mktemp("reports")
    scenario = tmp_path_factory.mktemp("suite") / "scenarios" / "kort_alarm.yaml"
    scenario.parent.mkdir()
    scenario.write_text(SCENARIO_SOURCE.read_text(encoding="utf-8"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(scenario), "--report-dir", str(reports), "--run-id", "r1",
         "--alluredir", str(reports / "allure-results"), "-p", "no:cacheprovider", "-q",
         "--contract", str(partial_suite_contract())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return reports / "r1"


def test_allure_results_carry_labels_links_and_attachments(real_run: Path) -> None:
    results = [json.loads(p.read_text()) for p in (real_run.parent / "allure-results").glob("*-result.json")]
    assert len(results) == 1
    labels = {(lab["name"], lab["value"]) for lab in results[0]["labels"]}
    assert {("epic", "functional"), ("feature", "functional"), ("story", "TA-1.1"), ("story", "TA-1.4"),
            ("severity", "blocker")} <= labels
    assert any(lk["url"] == "report.html#req-TA-1.1" for lk in results[0]["links"])
    names = [a["name"] for a in results[0]["attachments"]]
    assert "evidence excerpt" in names and any("alarm_latency" in n for n in names)


def test_vtlab_allure_builds_one_offline_file(real_run: Path) -> None:
    assert main(["allure", str(real_run), "--results", str(real_run.parent / "allure-results")]) == 0
    page = (real_run / "allure-report.html").read_text(encoding="utf-8")
    assert "TA-1.1" in page and "blocker" in page and "data:image/svg+xml;base64," in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert not re.search(r"googletagmanager|google-analytics|gtag\(", page, re.I)


def test_report_of_the_real_run(real_run: Path) -> None:
    from harness.report.commands import after_run

    after_run(real_run)
    assert (real_run / "report.html").exists() and (real_run / "report.pdf").exists()
    assert not (real_run / "evidence.sqlite-wal").exists()  # sealed before hashing
    assert main(["report", str(real_run), "--lang", "en", "--no-pdf"]) == 0  # uncovered: not blocking
    assert "Requirements not covered by any scenario" in (real_run / "report.html").read_text(encoding="utf-8")
