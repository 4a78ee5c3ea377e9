"""Nothing measured is lost: a run killed half-way keeps its evidence, and the summary rebuilt from the
store alone says the run is incomplete and shows what was measured."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import VTLAB, Suite, button_presses, run_vtlab

pytestmark = pytest.mark.slow


def stimuli_in(db_path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM stimuli").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_a_killed_run_yields_an_incomplete_summary_of_what_it_measured(suite: Suite, tmp_path: Path) -> None:
    scenario = suite.scenario("lang", button_presses(repeat=400, pace="20/s"))
    reports = tmp_path / "reports"
    proc = subprocess.Popen([str(VTLAB), "run", "--report-dir", str(reports), "--run-id", "killed", str(scenario)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = reports / "killed" / "evidence.sqlite"
    deadline = time.monotonic() + 60
    while stimuli_in(db) < 40:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    rebuilt = subprocess.run([str(VTLAB), "summary", str(reports / "killed")], capture_output=True, text=True,
                             timeout=120, check=False)
    assert rebuilt.returncode == 1, rebuilt.stdout + rebuilt.stderr
    summary = json.loads((reports / "killed" / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == "incomplete"
    assert summary["ended"] is None
    (scenario_summary,) = summary["scenarios"]
    assert scenario_summary["status"] == "running"
    assert scenario_summary["metrics"]["stimuli"] >= 40
    assert scenario_summary["metrics"]["latency"]["alarm_latency"]["count"] >= 30
    assert "INCOMPLETE" in rebuilt.stdout


def test_a_run_folder_is_never_overwritten(suite: Suite, tmp_path: Path) -> None:
    scenario = suite.scenario("kort", button_presses(repeat=2))
    first = run_vtlab(str(scenario), report_dir=tmp_path, run_id="same")
    assert first.rc == 0, first.output
    again = run_vtlab(str(scenario), report_dir=tmp_path, run_id="same")
    assert again.rc == 2 and "never overwritten" in again.output
    assert first.summary["verdict"] == "approved"
    assert (tmp_path / "latest").resolve() == (tmp_path / "same").resolve()


def test_sigterm_mid_run_leaves_a_finished_incomplete_run_and_no_key_files(suite: Suite, tmp_path: Path) -> None:
    """SIGTERM is what CI cancel and `timeout` send: the run ends as after Ctrl-C."""
    import re

    scenario = suite.scenario("lang", button_presses(repeat=400, pace="20/s"))
    reports = tmp_path / "reports"
    proc = subprocess.Popen([str(VTLAB), "run", "--report-dir", str(reports), "--run-id", "termed", str(scenario)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = reports / "termed" / "evidence.sqlite"
    deadline = time.monotonic() + 60
    while stimuli_in(db) < 40:
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-3000:]
    summary = json.loads((reports / "termed" / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == "incomplete" and summary["ended"] is not None
    assert summary["scenarios"][0]["metrics"]["stimuli"] >= 40  # what was measured is kept
    lab_json = (reports / "termed" / "lab" / "lab.json").read_text(encoding="utf-8")
    key_dirs = {Path(p).parent for p in re.findall(r'"(/[^"]+\.(?:key|pem))"', lab_json)}
    assert key_dirs, "the lab config names its certificate files"
    assert not any(d.exists() for d in key_dirs), f"throw-away keys left behind: {key_dirs}"
