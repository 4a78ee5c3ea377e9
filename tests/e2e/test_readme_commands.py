"""The README's first command on this checkout, and the example suite under dropped alarms."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.helpers import CONTRACT, ROOT, run_vtlab

pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "the README opens with a sh block of set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_setup_commands() -> None:
    first, second = readme_commands()
    assert "vtlab run" in first
    assert "pytest" in second
    assert second in (ROOT / ".ci" / "run").read_text(encoding="utf-8"), "CI runs the README's test command"


@pytest.mark.timeout(1800)
def test_the_first_readme_command_writes_an_approved_summary_and_can_be_run_again() -> None:
    latest = ROOT / "reports" / "latest"
    seen = {latest.resolve()} if latest.exists() else set()
    for _ in range(2):  # twice in a row: the second run must not trip over what the first left behind
        proc = subprocess.run(["bash", "-c", readme_commands()[0]], cwd=ROOT, capture_output=True, text=True,
                              timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
        assert latest.resolve() not in seen, "a new run folder each time"
        seen.add(latest.resolve())
    summary = json.loads((latest / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == "approved"
    for key in ("run_id", "lab", "started", "ended", "requirements", "deviations", "uncovered"):
        assert key in summary
    assert {r["id"] for r in summary["requirements"]} >= {"TA-1.1", "TA-2.1", "TA-3.1", "TA-4.1"}
    assert summary["uncovered"] == [r["id"] for r in summary["requirements"] if r["verdict"] == "not_covered"]
    assert "verdict: APPROVED" in proc.stdout


@pytest.mark.timeout(1800)  # lost alarms and records are waited for up to their `within`
def test_the_example_suite_under_5_percent_drops_is_not_approved_and_names_the_lost_alarms(tmp_path: Path) -> None:
    result = run_vtlab("--fault", "drop=0.05", report_dir=tmp_path, timeout=1700, contract=CONTRACT)
    assert result.rc == 1, result.output[-5000:]
    summary = result.summary
    assert summary["verdict"] == "not_approved"
    ledger = [json.loads(x) for x in (result.run_dir / "lab" / "ledger.jsonl").read_text().splitlines() if x]
    drops = [x for x in ledger if x.get("action") == "drop"]
    assert drops, "the lab dropped nothing: the test proves nothing"
    # what the scenarios expected at a centre, by cid (vtlab's JSON) and by content key (DC-09, SCAIP,
    # gateway devices); an alarm nobody expects at a centre (a low-battery report the journal scenario
    # only expects in the patient record) may be dropped without being an expected one
    db = sqlite3.connect(result.run_dir / "evidence.sqlite")
    key_of = {cid: json.loads(p).get("_key") for cid, p in db.execute("SELECT cid, payload FROM stimuli")}
    expected = {r[0] for r in db.execute("SELECT DISTINCT stimulus_cid FROM matches WHERE metric = 'alarm_latency'")}
    lost = {r[0] for r in db.execute("SELECT stimulus_cid FROM matches WHERE outcome = 'lost' "
                                     "AND metric = 'alarm_latency'")}
    db.close()
    by_key = {key: cid for cid, key in key_of.items() if key}
    dropped = {x["cid"] if "cid" in x else by_key.get(x.get("key", ""), x.get("key")) for x in drops}
    assert lost == dropped & expected, (sorted(lost ^ (dropped & expected)))[:10]
    named = {cid for d in summary["deviations"] for cid in d["evidence"].get("lost_alarms", [])}
    assert lost <= named  # the deviations name every lost alarm by its stimulus
    assert any(d["severity"] == "A" for d in summary["deviations"])
