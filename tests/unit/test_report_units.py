"""Pure parts of the report: language conventions, the evidence manifest, retest history, SVG plots."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.errors import InputError
from harness.report.history import apply_history
from harness.report.i18n import Lang
from harness.report.manifest import compare, compute_manifest


def test_numbers_and_dates_per_language() -> None:
    nb, en = Lang("nb"), Lang("en")
    assert nb.quantity(1.6, "ms") == "1,6\u00a0ms"
    assert en.quantity(1.6, "ms") == "1.6\u00a0ms"
    assert nb.number(12345) == "12\u00a0345" and en.number(12345) == "12,345"
    assert nb.number(2002.8) == "2\u00a0002,8"
    assert nb.date("2026-11-23T17:19:04.123Z") == "23.11.2026 kl. 17:19 UTC"
    assert en.date("2026-11-23T17:19:04.123Z") == "23 Nov 2026 17:19 UTC"
    assert nb.t("approved") == "Leveransen er godkjent."
    assert nb.t("incomplete") == "Testen er ufullstendig – ingen godkjenning kan gis."
    with pytest.raises(InputError, match="unknown report language"):
        Lang("sv")


def test_manifest_detects_changed_missing_and_added_files(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    (tmp_path / "evidence.sqlite").write_bytes(b"db")
    (tmp_path / "lab" / "ledger.jsonl").write_text("{}\n")
    (tmp_path / "report.pdf").write_bytes(b"%PDF")  # the report is not part of its own bundle
    m = compute_manifest(tmp_path)
    assert set(m["files"]) == {"evidence.sqlite", "lab/ledger.jsonl"}
    assert compare(m, tmp_path) == ([], [])
    (tmp_path / "evidence.sqlite").write_bytes(b"dB")
    (tmp_path / "lab" / "ledger.jsonl").unlink()
    (tmp_path / "extra.txt").write_text("x")
    problems, notes = compare(m, tmp_path)
    assert problems[:2] == ["evidence.sqlite: changed (SHA-256 differs from the manifest)", "lab/ledger.jsonl: missing"]
    assert len(problems) == 3 and problems[2].startswith("extra.txt: not in the manifest") and notes == []


def _summary(run_id: str, started: str, *, lost: bool, scenarios: tuple[str, ...] = ("s1",)) -> dict[str, Any]:
    crit = {"metric": "lost", "statistic": "count", "limit": "== 0", "measured": 2.0 if lost else 0.0,
            "unit": "count", "verdict": "fail" if lost else "pass", "scenario": "s1", "detail": ""}
    reqs = [
        {"id": "R1", "title": "t", "priority": "må", "category": "functional", "severity": "A", "source": "x",
         "verdict": ("fail" if lost else "pass") if "s1" in scenarios else "not_run",
         "criteria": [crit] if "s1" in scenarios else [], "scenarios": ["s1"]},
        {"id": "R2", "title": "t", "priority": "må", "category": "functional", "severity": "C", "source": "x",
         "verdict": "pass" if "s2" in scenarios else "not_run",
         "criteria": [{**crit, "scenario": "s2", "verdict": "pass", "measured": 0.0}] if "s2" in scenarios else [],
         "scenarios": ["s2"]},
    ]
    devs = [{"id": "AVVIK-001", "requirement": "R1", "severity": "A", "scenario": "s1", "summary": "lost",
             "evidence": {"metric": "lost"}, "status": "open"}] if lost else []
    return {"run_id": run_id, "started": started, "ended": started, "verdict": "not_approved" if lost else "approved",
            "reason": "", "contract": {"id": "K1", "blocking": ["A", "B"]}, "requirements": reqs,
            "deviations": devs, "uncovered": [],
            "scenarios": [{"id": sc, "status": "completed"} for sc in scenarios]}


def _write(report_dir: Path, s: dict[str, Any]) -> Path:
    import json

    d = report_dir / s["run_id"]
    d.mkdir(parents=True)
    (d / "evidence.sqlite").write_bytes(b"")
    (d / "summary.json").write_text(json.dumps(s))
    return d


def test_retest_closes_deviation_and_verdict_uses_latest_run(tmp_path: Path) -> None:
    _write(tmp_path, _summary("a", "2026-01-01T10:00:00Z", lost=True, scenarios=("s1", "s2")))
    retest = _summary("b", "2026-01-02T10:00:00Z", lost=False, scenarios=("s1",))  # only the failing scenario
    d = _write(tmp_path, retest)
    eff = apply_history(d, retest)
    assert eff["verdict"] == "approved"
    (dev,) = eff["deviations"]
    assert dev["status"] == "retested" and dev["found_in"] == "a"
    assert [h["run_id"] for h in dev["history"]] == ["a", "b"]
    r1, r2 = eff["requirements"]
    assert r1["decided_by"] == "b" and r2["decided_by"] == "a" and r2["verdict"] == "pass"


def test_deviation_still_failing_stays_open(tmp_path: Path) -> None:
    _write(tmp_path, _summary("a", "2026-01-01T10:00:00Z", lost=True))
    again = _summary("b", "2026-01-02T10:00:00Z", lost=True)
    eff = apply_history(_write(tmp_path, again), copy.deepcopy(again))
    assert eff["verdict"] == "not_approved"
    assert [d["status"] for d in eff["deviations"]] == ["open"]
    assert [h["verdict"] for h in eff["deviations"][0]["history"]] == ["fail", "fail"]


def test_other_contracts_and_later_runs_are_not_history(tmp_path: Path) -> None:
    other = _summary("x", "2026-01-01T10:00:00Z", lost=True)
    other["contract"]["id"] = "OTHER"
    _write(tmp_path, other)
    _write(tmp_path, _summary("z", "2026-02-01T10:00:00Z", lost=True))
    now = _summary("b", "2026-01-02T10:00:00Z", lost=False, scenarios=("s1", "s2"))
    eff = apply_history(_write(tmp_path, now), now)
    assert eff["history"] == [] and eff["deviations"] == [] and eff["verdict"] == "approved"


def test_plot_limit_drawn_only_when_it_fits() -> None:
    from harness.report.plots import _latency_distribution

    near = _latency_distribution("alarm_latency", [1.0, 2.0, 3.0, 4.0], [("p99 <= 5ms", 5.0)], Lang("en"))
    assert near.note == "" and near.svg.startswith("<svg") and "<metadata>" not in near.svg
    far = _latency_distribution("alarm_latency", [1.0, 2.0, 3.0, 4.0], [("p99 <= 30s", 30000.0)], Lang("nb"))
    assert "p99 <= 30s" in far.note and "ikke tegnet inn" in far.note
