"""The harness proves it catches failures: the same scenario passes on a fault-free lab and fails with
the right counts when the reference lab drops, duplicates, delays or reorders alarms. The lab's own
ledger of what it did is the independent truth the harness's counts are compared with."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Suite, VtlabResult, button_presses, run_vtlab

pytestmark = pytest.mark.slow


def ledger(result: VtlabResult, action: str) -> list[dict[str, Any]]:
    path = result.run_dir / "lab" / "ledger.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line for line in lines if line.get("action") == action]


def criterion(summary: dict[str, Any], metric: str, statistic: str = "count") -> dict[str, Any]:
    for scenario in summary["scenarios"]:
        for c in scenario["criteria"]:
            if c["metric"] == metric and c["statistic"] == statistic:
                return dict(c)
    raise AssertionError(f"no criterion {metric} {statistic}")


def latency(summary: dict[str, Any], stat: str) -> float:
    value = summary["scenarios"][0]["metrics"]["latency"]["alarm_latency"][stat]
    assert value is not None
    return float(value) / 1e6  # ms


@pytest.fixture(scope="module")
def presses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    suite = Suite(tmp_path_factory.mktemp("suite"))
    return suite.scenario("knapp", button_presses(repeat=200, pace="50/s"))


@pytest.fixture(scope="module")
def fault_free(presses: Path, tmp_path_factory: pytest.TempPathFactory) -> VtlabResult:
    return run_vtlab(str(presses), report_dir=tmp_path_factory.mktemp("reports"))


def test_the_scenario_passes_on_a_fault_free_lab(fault_free: VtlabResult) -> None:
    assert fault_free.rc == 0, fault_free.output
    summary = fault_free.summary
    assert summary["verdict"] == "approved"
    assert summary["deviations"] == []
    assert criterion(summary, "lost")["measured"] == 0
    assert summary["scenarios"][0]["metrics"]["stimuli"] == 200


def test_dropped_alarms_are_counted_and_named_as_the_lab_dropped_them(presses: Path, tmp_path: Path) -> None:
    result = run_vtlab(str(presses), "--fault", "drop=0.03,seed=11", report_dir=tmp_path)
    assert result.rc == 1, result.output
    dropped = {line["cid"] for line in ledger(result, "drop")}
    assert dropped, "the lab dropped nothing: the test proves nothing"
    summary = result.summary
    assert summary["verdict"] == "not_approved"
    assert criterion(summary, "lost")["measured"] == len(dropped)
    lost = next(d for d in summary["deviations"] if d["evidence"]["metric"] == "lost")
    assert set(lost["evidence"]["lost_alarms"]) == dropped
    assert lost["severity"] == "A" and lost["requirement"] == "TA-1.4"
    assert any(cid in result.stdout for cid in dropped), "the terminal summary names the lost alarms"


def test_duplicates_are_counted(presses: Path, tmp_path: Path) -> None:
    result = run_vtlab(str(presses), "--fault", "dup=0.05,seed=3", report_dir=tmp_path)
    duplicated = {line["cid"] for line in ledger(result, "dup")}
    assert duplicated
    summary = result.summary
    assert criterion(summary, "duplicates")["measured"] == len(duplicated)
    assert criterion(summary, "lost")["measured"] == 0
    # TA-1.5 is class C: duplicates alone do not block approval under the default rule
    assert summary["verdict"] == "approved"
    assert [d["severity"] for d in summary["deviations"]] == ["C"]


def test_a_delay_on_a_tenth_of_alarms_moves_the_tail_and_not_the_median(
    presses: Path, fault_free: VtlabResult, tmp_path: Path
) -> None:
    result = run_vtlab(str(presses), "--fault", "delay=400ms@0.1,seed=5", report_dir=tmp_path)
    delayed = ledger(result, "delay")
    assert 8 <= len(delayed) <= 40
    summary = result.summary
    assert latency(summary, "p99") >= 400
    assert latency(summary, "p95") >= 400 or len(delayed) < 10
    assert latency(summary, "p50") < 50
    assert latency(fault_free.summary, "p99") < 100


def test_a_fixed_delay_shifts_the_median_by_that_delay(presses: Path, fault_free: VtlabResult, tmp_path: Path) -> None:
    result = run_vtlab(str(presses), "--fault", "delay=250ms", report_dir=tmp_path)
    assert len(ledger(result, "delay")) == 200, "the lab delayed every alarm"
    assert latency(result.summary, "min") >= 250  # the delay is a floor under every alarm
    shifted = latency(result.summary, "p50")
    baseline = latency(fault_free.summary, "p50")
    # the median moves by the delay: what is left over is of the order of the fault-free median, not of the
    # delay (a ratio, so a busy machine cannot fail it the way a fixed +-2 ms window did)
    assert shifted >= 250 and (shifted - 250) < 50 * max(baseline, 0.05) and (shifted - 250) < 0.2 * 250, \
        (shifted, baseline)


def test_reordered_alarms_are_counted_out_of_order(presses: Path, tmp_path: Path) -> None:
    result = run_vtlab(str(presses), "--fault", "reorder=0.05,seed=9", report_dir=tmp_path)
    reordered = ledger(result, "reorder")
    assert reordered
    summary = result.summary
    out_of_order = criterion(summary, "out_of_order")["measured"]
    assert out_of_order == len(reordered)
    assert criterion(summary, "lost")["measured"] == 0


def test_alarms_lost_in_an_outage_window_are_counted(suite: Suite, tmp_path: Path) -> None:
    scenario = suite.scenario("knapp", button_presses(repeat=100, pace="50/s"))
    result = run_vtlab(str(scenario), "--fault", "outage=500ms@600ms", report_dir=tmp_path)
    in_outage = {line["cid"] for line in ledger(result, "outage") if line.get("kind") != "ack"}
    assert in_outage
    assert criterion(result.summary, "lost")["measured"] == len(in_outage)
    assert result.rc == 1


def test_every_stimulus_and_arrival_is_in_the_evidence_store(fault_free: VtlabResult) -> None:
    db = sqlite3.connect(fault_free.run_dir / "evidence.sqlite")
    (stimuli,) = db.execute("SELECT count(*) FROM stimuli").fetchone()
    (arrivals,) = db.execute("SELECT count(*) FROM arrivals WHERE kind = 'alarm'").fetchone()
    (verdicts,) = db.execute("SELECT count(*) FROM verdicts").fetchone()
    assert stimuli == 200 and arrivals == 200 and verdicts == 4
