"""`vtlab run --interactive` as a tester types it at a terminal: the scenario's manual step asks on that
terminal, and the answer and its timing land in the evidence; without the flag the step is skipped with
the reason. The terminal is a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.helpers import VTLAB, Suite, partial_suite_contract

pytestmark = pytest.mark.slow

SCENARIO = """
title: Alarmknapp med manuell kontroll
covers: [TA-1.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 30s}
  - manual: {instruction: "Se på operatørskjermen", expect: "Alarmen vises med brukerens navn"}
criteria:
  - {metric: alarm_latency, max: "<= 30s"}
"""


def run(suite: Suite, tmp_path: Path, *flags: str, typed: bytes = b"") -> Path:
    master, slave = os.openpty()
    try:
        os.write(master, typed)
        proc = subprocess.run(
            [str(VTLAB), "run", str(suite.scenario("s", SCENARIO)), "--report-dir", str(tmp_path), "--run-id", "r",
             "--contract", str(partial_suite_contract()), *flags],
            stdin=slave, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "VTLAB_TESTER": "testleder"},
        )
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return tmp_path / "r"


def observations(run_dir: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(run_dir / "evidence.sqlite")
    try:
        return list(db.execute("SELECT kind, text FROM observations"))
    finally:
        db.close()


def test_interactive_asks_at_the_manual_step_and_records_the_answer(suite: Suite, tmp_path: Path) -> None:
    run_dir = run(suite, tmp_path, "--interactive", typed=b"ja navnet vises\n")
    (record,) = [json.loads(t) for k, t in observations(run_dir) if k == "manual"]
    assert record["instruction"] == "Se på operatørskjermen" and record["answer"] == "yes"
    assert record["note"] == "navnet vises" and record["tester"] == "testleder"


def test_without_the_flag_the_manual_step_is_skipped_with_the_reason(suite: Suite, tmp_path: Path) -> None:
    run_dir = run(suite, tmp_path)
    kinds = [k for k, _ in observations(run_dir)]
    assert "manual" not in kinds and "skipped" in kinds
