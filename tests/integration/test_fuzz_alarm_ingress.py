"""TA-5.3 on the alarm-receiving interfaces: the `fuzz` step sends seeded, bounded streams of mutated SIA
DC-09 frames and SCAIP/SIP messages to the reference lab's DC-09 and SCAIP receivers (the addresses the
lab file's devices use) while real alarms flow over the same paths. The lab refuses the junk and keeps
routing every real alarm; a lab that stops routing (an outage fault) fails the same scenarios with lost
alarms charged to TA-5.3, so the scenarios prove something."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.evidence import EvidenceReader
from tests.helpers import ROOT, run_vtlab

pytestmark = pytest.mark.slow

SCENARIOS = [str(ROOT / "scenarios" / "security" / f) for f in ("robusthet_dc09.yaml", "robusthet_scaip.yaml")]


def _ledger(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "lab" / "ledger.jsonl").read_text().splitlines() if line]


def test_the_lab_keeps_routing_dc09_and_scaip_alarms_while_both_receivers_are_fuzzed(tmp_path: Path) -> None:
    result = run_vtlab(*SCENARIOS, report_dir=tmp_path / "r")
    summary = result.summary
    assert result.rc == 0, result.output[-3000:]
    assert not summary["deviations"] and not summary.get("harness_faults"), summary
    reader = EvidenceReader(result.run_dir)
    try:
        fuzzers = {r["via"]: r for r in (json.loads(o["text"]) for o in reader.observations() if o["kind"] == "fuzz")}
    finally:
        reader.close()
    assert set(fuzzers) == {"dc09", "scaip"}
    for via, record in fuzzers.items():
        assert record["limit"] == 250 and 0 < record["sent"] <= 250, record  # bounded: 50/s x 5s
        assert sum(record["by_mutation"].values()) == record["sent"]
        assert all(m.startswith(f"{via}:") for m in record["by_mutation"]), record["by_mutation"]
        assert record["seed"] == 7 and record["send_errors"] == 0, record
        assert record["target"].startswith("127.0.0.1:")  # the lab's own receiver, from its ready line
    ledger = _ledger(result.run_dir)
    rejected = Counter(str(e.get("via")) for e in ledger if e["action"] == "rejected")
    routed = Counter(str(e.get("via")) for e in ledger if e["action"] == "routed")
    assert rejected["dc09"] >= 50 and rejected["scaip"] >= 50, rejected  # the lab saw the junk and refused it
    assert routed["dc09"] >= 20 and routed["scaip"] >= 20, routed  # and every real alarm still went through


def test_a_lab_that_stops_routing_under_the_fuzzer_fails_ta_5_3_with_lost_alarms(tmp_path: Path) -> None:
    result = run_vtlab(*SCENARIOS, "--fault", "outage=5m@2s", report_dir=tmp_path / "r", timeout=400)
    summary = result.summary
    assert result.rc == 1, result.output[-3000:]
    assert summary["verdict"] == "not_approved"
    lost = [d for d in summary["deviations"] if d["evidence"]["metric"] == "lost"]
    # a flood that stops the platform: robustness (TA-5.3, B) and lost alarms (TA-1.4, A) in both scenarios
    assert len(lost) == 4, summary["deviations"]
    assert {(d["requirement"], d["severity"]) for d in lost} == {("TA-5.3", "B"), ("TA-1.4", "A")}
    assert not summary.get("harness_faults"), summary["harness_faults"]
