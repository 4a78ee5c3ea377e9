"""The example suite's SCAIP and SIA DC-09 scenarios against the embedded reference lab: they pass on a
fault-free lab and, with alarms dropped, fail with lost alarms that are exactly the ones the lab's own
ledger says it dropped (matched by the content key, as no correlation id survives re-encoding)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_vtlab

pytestmark = pytest.mark.slow

SUITE = [str(ROOT / "scenarios" / "protocols")]


def test_scaip_and_dc09_paths_pass_on_a_fault_free_lab(tmp_path: Path) -> None:
    result = run_vtlab(*SUITE, report_dir=tmp_path)
    assert result.rc == 0, result.output[-3000:]
    assert result.summary["verdict"] == "approved"
    assert {s["id"].split("/")[-1] for s in result.summary["scenarios"]} == {
        "scaip_til_dc09.yaml", "dc09_til_scaip.yaml", "scaip_hjerteslag_dc09.yaml", "dc09_hjerteslag_scaip.yaml",
        "dc09_avvisning.yaml", "scaip_avvisning.yaml"}


def test_supervision_runs_compressed_and_is_reported_in_operational_time(tmp_path: Path) -> None:
    """Heartbeats of 60 s on a lab with time_scale 60: the loss of supervision (2 missed intervals) arrives
    after 1-2 s of real time and is reported as 60-150 s; the summary and the report say time was scaled."""
    scenarios = [str(ROOT / "scenarios" / "protocols" / "dc09_hjerteslag_scaip.yaml"),
                 str(ROOT / "scenarios" / "protocols" / "scaip_hjerteslag_dc09.yaml")]
    result = run_vtlab(*scenarios, report_dir=tmp_path)
    assert result.rc == 0, result.output[-3000:]
    for s in result.summary["scenarios"]:
        assert s["status"] == "completed" and s["time_scale"] == 60, s
        (latency,) = [c for c in s["criteria"] if c["metric"] == "supervision_latency"]
        assert latency["verdict"] in ("pass", "marginal"), latency
        assert 60_000 <= latency["measured"] <= 150_000, latency  # ms of operational time, not ~2 s of lab time
    html = (result.run_dir / "report.html").read_text()
    assert "komprimert tid" in html or "compressed time" in html


def test_alarms_the_lab_drops_on_re_encoded_paths_are_the_ones_counted_lost(tmp_path: Path) -> None:
    result = run_vtlab(*SUITE, "--fault", "drop=0.2,seed=3", report_dir=tmp_path)
    assert result.rc == 1, result.output[-3000:]
    ledger = [json.loads(x) for x in (result.run_dir / "lab" / "ledger.jsonl").read_text().splitlines() if x]
    dropped = {x["key"] for x in ledger if x.get("action") == "drop" and x.get("key")}
    assert dropped, "the lab dropped nothing: the test proves nothing"
    db = sqlite3.connect(result.run_dir / "evidence.sqlite")
    key_of = {cid: json.loads(payload).get("_key") for cid, payload in db.execute("SELECT cid, payload FROM stimuli")}
    lost = {key_of[row[0]] for row in db.execute("SELECT stimulus_cid FROM matches WHERE outcome = 'lost'")}
    db.close()
    assert lost == dropped
    assert all(d["severity"] == "A" for d in result.summary["deviations"])
