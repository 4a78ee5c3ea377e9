"""`vtlab load` with fleets that speak SIA DC-09 and SCAIP to the embedded reference lab (its own DC-09 and
SCAIP receivers), the lab delivering to the response centres' MQTT topics.

Neither protocol carries vtlab's correlation id, so every alarm is matched at the centre by
`<device>:<Contact ID code>:<zone>`. The counts are checked against independent records: the lab's ledger
(what its receivers took in, routed and dropped, keyed the same way), the evidence store and the merged
histograms."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.load.runner import LoadOptions, run_load
from tests.helpers import load_scenario_with
from tests.integration.test_load_runs import CONTRACT, ROOT, criteria, evidence, ledger, need_mosquitto, run, scenario

pytestmark = pytest.mark.slow

DC09_SCENARIO = ROOT / "scenarios" / "capacity" / "dc09_flate.yaml"
SCAIP_STORM = ROOT / "scenarios" / "capacity" / "scaip_storm.yaml"
EMBEDDED = ROOT / "fixtures" / "labs" / "embedded.yaml"
CRITERIA = """  - {metric: lost, count: "== 0"}
  - {metric: alarm_latency, p99: "<= 30s"}
  - {metric: connect_time, max: "<= 20s"}
"""


def stimulus_keys(run_dir: Path, where: str = "") -> list[str]:
    rows = evidence(run_dir, f"SELECT s.payload FROM stimuli s {where}")
    return [json.loads(p)["key"] for (p,) in rows]


def merged_counts(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = json.loads((run_dir / "load" / "merged.json").read_text())["counts"]
    return counts


def lab_with_scaip_transport(tmp_path: Path, transport: str) -> Path:
    """The embedded lab file with its SCAIP device on another transport (the fleet copies it)."""
    data = yaml.safe_load(EMBEDDED.read_text(encoding="utf-8"))
    data["users"] = str((EMBEDDED.parent / data["users"]).resolve())
    data["devices"]["sa-ingrid"]["scaip"]["transport"] = transport
    path = tmp_path / f"lab-scaip-{transport}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_a_dc09_fleet_passes_with_every_alarm_matched_by_its_content_key(tmp_path: Path) -> None:
    need_mosquitto()
    result = run(tmp_path, DC09_SCENARIO)
    assert result.status == "completed", result.faults
    crit = criteria(result)
    assert {m: c["verdict"] for m, c in crit.items()} == dict.fromkeys(crit, "pass")
    assert crit["alarm_latency"]["n"] == crit["alarm_latency"]["arrived"] == 80
    assert crit["connect_time"]["n"] == 30
    keys = stimulus_keys(result.run_dir)
    assert len(keys) == len(set(keys)) == 80  # every alarm in flight distinguishable
    entries = ledger(result.run_dir)
    received = [e for e in entries if e["action"] == "received"]
    assert len(received) == 80 and {e["ingress"] for e in received} == {"dc09"}  # the lab's DC-09 receiver
    routed = {e["key"] for e in entries if e["action"] == "routed"}
    assert routed == set(keys)  # the lab routed exactly the alarms the fleet sent, keyed the same way
    ok = evidence(result.run_dir, "SELECT count(*) FROM matches WHERE metric = 'alarm_latency' AND outcome = 'ok'")
    assert ok[0][0] == 80
    counts = merged_counts(result.run_dir)
    assert counts["ingress_ack"] == 80 and counts.get("ingress_unanswered", 0) == 0  # each ACK came back
    assert counts["heartbeats"] > 0 and not counts.get("platform_raised")  # NULL link tests kept supervision
    sequences = [json.loads(p)["sequence"] for (p,) in evidence(result.run_dir, "SELECT payload FROM stimuli")]
    assert min(sequences) == 1 and max(sequences) > 1  # each account numbers its own messages


def test_dropped_dc09_alarms_are_exactly_the_lab_ledgers_dropped_ones(tmp_path: Path) -> None:
    need_mosquitto()
    # a dropped alarm is lost once its limit has passed: a short one keeps the run short
    short = load_scenario_with(DC09_SCENARIO, tmp_path / "scenario", within="3s")
    result = run(tmp_path, short, faults="drop=0.2,seed=11")
    assert result.status == "completed", result.faults
    drops = {e["key"] for e in ledger(result.run_dir) if e["action"] == "drop"}
    assert drops
    lost = stimulus_keys(
        result.run_dir,
        "JOIN matches m ON m.stimulus_cid = s.cid WHERE m.outcome = 'lost' AND m.metric = 'alarm_latency'",
    )
    assert set(lost) == drops and len(lost) == len(drops)
    crit = criteria(result)
    assert crit["lost"]["verdict"] == "fail" and crit["lost"]["measured"] == len(drops)
    assert crit["alarm_latency"]["arrived"] == 80 - len(drops)
    # the platform's receiver took every alarm in (ACK), so the loss is the platform's routing, not the link
    assert merged_counts(result.run_dir)["ingress_ack"] == 80


def test_a_scaip_storm_over_two_workers_is_correlated_by_the_worker_that_sent_each_alarm(tmp_path: Path) -> None:
    need_mosquitto()
    result = run(tmp_path, SCAIP_STORM, workers=2)
    assert result.status == "completed", result.faults
    crit = criteria(result)
    assert {m: c["verdict"] for m, c in crit.items()} == dict.fromkeys(crit, "pass")
    planned = 40 + 30  # background 5/s for 8 s, and one low-battery alarm from each of the 30 devices
    assert crit["alarm_latency"]["n"] == crit["alarm_latency"]["arrived"] == planned
    received = [e for e in ledger(result.run_dir) if e["action"] == "received"]
    assert len(received) == planned and {e["ingress"] for e in received} == {"scaip"}
    codes = Counter(e["key"].split(":")[1] for e in received)
    assert codes == {"101": 40, "302": 30}  # button presses, and the storm's low-battery alarms (SCAIP stc 0016)
    merged = result.merged
    assert merged is not None and len(merged["nodes"]) == 2
    assert [n["counts"]["sent"] for n in merged["nodes"]] == [35, 35]
    # one probe (worker 0) received every alarm; half were handed over to worker 1, which matched them
    assert sum(n["counts"].get("foreign", 0) for n in merged["nodes"]) == 35
    assert sum(n["alarm"]["count"] for n in merged["nodes"]) == merged["alarm"]["count"] == planned
    assert merged["counts"]["ingress_ack"] == planned  # each <mrs> came back with snu 0


def test_a_scaip_fleet_over_sip_tls_as_the_lab_file_says(tmp_path: Path) -> None:
    need_mosquitto()
    lab = lab_with_scaip_transport(tmp_path, "tls")
    path = scenario(
        tmp_path,
        "{shape: steady, via: scaip, devices: 12, rate: 6/s, duration: 4s, heartbeat: 2s, drain: 2s}",
        CRITERIA,
    )
    result = run(tmp_path, path, lab)
    assert result.status == "completed", result.faults
    assert criteria(result)["lost"]["verdict"] == "pass"
    assert criteria(result)["alarm_latency"]["arrived"] == 24
    fleet = yaml.safe_load((result.run_dir / "load" / "fleet-lab.yaml").read_text(encoding="utf-8"))
    assert {d["scaip"]["transport"] for d in fleet["devices"].values()} == {"tls"}
    received = [e for e in ledger(result.run_dir) if e["action"] == "received"]
    assert len(received) == 24 and merged_counts(result.run_dir)["ingress_ack"] == 24


def test_ack_latency_is_refused_for_a_dc09_fleet(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        "{shape: steady, via: dc09, devices: 2, rate: 1/s, duration: 2s}",
        '  - {metric: ack_latency, p99: "<= 10s"}\n',
    )
    with pytest.raises(InputError, match="ack_latency"):
        run_load(path, None, LoadOptions(report_dir=tmp_path / "reports", contract=CONTRACT))
