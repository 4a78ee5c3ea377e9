"""`manual_check`: skipped with its reason in an unattended run; in an interactive one the tester is asked on a
terminal (a real pseudo-terminal here) and the answer, note and timing land in the evidence."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.scenario import device_steps
from tests.device_helpers import device_lab, device_plugins, observations, run_scenario
from tests.helpers import Suite

pytestmark = pytest.mark.timeout(60)

SCENARIO = """
title: Lokket settes på plass
covers: [TA-1.1]
devices:
  dispenser: {id: dsp-solveig}
steps:
  - manual_check: {instruction: "Sett lokket på dispenseren", expect: "Lampen slutter å blinke", device: dispenser}
criteria:
  - {metric: lost, count: "== 0"}
"""


class Nothing:
    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def plugins() -> Iterator[None]:
    with device_plugins():
        yield
    device_steps._INTERACTIVE.clear()


def steps_of(run_dir: Path) -> list[dict[str, Any]]:
    from harness.evidence import EvidenceReader

    reader = EvidenceReader(run_dir)
    try:
        return [dict(r) for r in reader.steps("s")]
    finally:
        reader.close()


def test_an_unattended_run_skips_it_and_says_why(suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VTLAB_INTERACTIVE", raising=False)
    _, run_dir = run_scenario(suite, tmp_path, device_lab(tmp_path), SCENARIO, lambda s: Nothing())
    (step,) = steps_of(run_dir)
    assert step["outcome"] == "skipped" and "unattended run" in step["detail"]
    assert any(o["kind"] == "skipped" and "Sett lokket" in o["text"] for o in observations(run_dir))


@pytest.mark.parametrize(
    "typed,outcome,finding", [(b"ja lampen er av\n", "ok", False), (b"n blinker fortsatt\n", "mismatch", True)]
)
def test_an_interactive_run_asks_the_tester_and_records_the_answer(
    suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, typed: bytes, outcome: str, finding: bool
) -> None:
    master, slave = os.openpty()
    terminal = os.fdopen(slave, "r", encoding="utf-8")
    try:
        os.write(master, typed)
        monkeypatch.setattr(sys, "stdin", terminal)
        device_steps.set_interactive(True)
        _, run_dir = run_scenario(suite, tmp_path, device_lab(tmp_path), SCENARIO, lambda s: Nothing())
    finally:
        terminal.close()
        os.close(master)
    (step,) = steps_of(run_dir)
    assert step["outcome"] == outcome
    seen = observations(run_dir)
    record = json.loads(next(o["text"] for o in seen if o["kind"] == "manual"))
    assert record["instruction"] == "Sett lokket på dispenseren" and record["device"] == "dsp-solveig"
    assert record["answer"] == ("yes" if outcome == "ok" else "no") and record["answered_after_s"] >= 0
    assert record["note"] == typed.decode().split(" ", 1)[1].strip()
    assert any(o["kind"] == "finding" for o in seen) is finding
