"""`vtlab load` observing response centres that receive over SIA DC-09 or SCAIP themselves: vtlab's
centre listens (in the probing locust process, on the socket `vtlab load` opened before the lab started),
the embedded reference lab delivers there, and every alarm is matched by `<device>:<code>:<zone>`.

Counts are checked against independent records: the lab's ledger (what its egress sent to the centre and
the reply it got, what it dropped, keyed the same way), the evidence store and the merged histograms."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.load.runner import LoadOptions, run_load
from tests.helpers import load_scenario_with
from tests.integration.test_load_protocols import EMBEDDED, merged_counts, stimulus_keys
from tests.integration.test_load_runs import CONTRACT, ROOT, criteria, ledger, need_mosquitto, run, scenario

pytestmark = pytest.mark.slow

NORDIC = ROOT / "scenarios" / "capacity" / "scaip_til_alarmmottak.yaml"
PLANNED = 60  # 10/s for 6 s
CRITERIA = """  - {metric: lost, count: "== 0"}
  - {metric: alarm_latency, p99: "<= 30s"}
  - {metric: connect_time, max: "<= 20s"}
"""


def lab_with(tmp_path: Path, probe: str, **settings: object) -> Path:
    """The embedded lab file with one centre probe's protocol settings changed."""
    data = yaml.safe_load(EMBEDDED.read_text(encoding="utf-8"))
    data["users"] = str((EMBEDDED.parent / data["users"]).resolve())
    kind = data["probes"][probe]["via"]
    data["probes"][probe][kind].update(settings)
    path = tmp_path / f"lab-{probe}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def centre_replies(run_dir: Path, via: str) -> list[dict[str, object]]:
    return [e for e in ledger(run_dir) if e["action"] == "centre_reply" and e.get("via") == via]


def test_a_scaip_fleet_reaches_the_dc09_alarm_receiving_centre_with_exact_counts(tmp_path: Path) -> None:
    need_mosquitto()
    result = run(tmp_path, NORDIC)
    assert result.status == "completed", result.faults
    crit = criteria(result)
    assert {m: c["verdict"] for m, c in crit.items()} == dict.fromkeys(crit, "pass")
    assert crit["alarm_latency"]["n"] == crit["alarm_latency"]["arrived"] == PLANNED
    keys = stimulus_keys(result.run_dir)
    assert len(keys) == len(set(keys)) == PLANNED
    replies = centre_replies(result.run_dir, "dc09")
    # the lab sent each alarm to vtlab's centre as ADM-CID and had the centre's ACK for it
    assert {e["key"] for e in replies} == set(keys) and len(replies) == PLANNED
    assert {e["reply"] for e in replies} == {"ACK"}
    assert all(str(e["adm_cid"]).startswith("#") for e in replies)
    counts = merged_counts(result.run_dir)
    assert counts["centre_frames"] == PLANNED and counts["ok"] == PLANNED
    assert counts["ingress_ack"] == PLANNED  # the SCAIP leg: each <mrs> came back
    assert not counts.get("other") and not counts.get("centre_refused")
    fleet = yaml.safe_load((result.run_dir / "load" / "fleet-lab.yaml").read_text(encoding="utf-8"))
    assert set(fleet["probes"]) == {"alarmmottak_dc09"}
    assert len(fleet["probes"]["alarmmottak_dc09"]["dc09"]["accounts"]) == 20


def test_under_drop_the_lost_keys_are_exactly_the_lab_ledgers_dropped_keys(tmp_path: Path) -> None:
    need_mosquitto()
    # a dropped alarm is lost once its limit has passed: a short one keeps the run short
    result = run(tmp_path, load_scenario_with(NORDIC, tmp_path / "scenario", within="3s"), faults="drop=0.2,seed=5")
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
    assert crit["alarm_latency"]["arrived"] == PLANNED - len(drops)
    assert len(centre_replies(result.run_dir, "dc09")) == PLANNED - len(drops)  # nothing else reached the centre


def test_sia_dcs_at_the_centre_is_read_as_the_contact_id_event_it_stands_for(tmp_path: Path) -> None:
    need_mosquitto()
    lab = lab_with(tmp_path, "alarmmottak_dc09", format="sia-dcs")
    path = scenario(
        tmp_path,
        "{shape: steady, via: scaip, centres: dc09, devices: 8, rate: 6/s, duration: 3s, heartbeat: 2s, drain: 2s}",
        CRITERIA,
    )
    result = run(tmp_path, path, lab)
    assert result.status == "completed", result.faults
    assert criteria(result)["lost"]["verdict"] == "pass"
    assert criteria(result)["alarm_latency"]["arrived"] == 18
    replies = centre_replies(result.run_dir, "dc09")
    assert len(replies) == 18 and all("sia_dcs" in e for e in replies)
    assert merged_counts(result.run_dir)["ok"] == 18


def test_a_dc09_fleet_reaches_a_scaip_centre_over_two_workers(tmp_path: Path) -> None:
    """One process (worker 0) owns the centre's socket; the other worker's alarms are handed over to it."""
    need_mosquitto()
    path = scenario(
        tmp_path,
        "{shape: steady, via: dc09, centres: scaip, devices: 10, rate: 6/s, duration: 4s, heartbeat: 2s, drain: 2s}",
        CRITERIA,
    )
    result = run(tmp_path, path, workers=2)
    assert result.status == "completed", result.faults
    crit = criteria(result)
    assert {m: c["verdict"] for m, c in crit.items()} == dict.fromkeys(crit, "pass")
    assert crit["alarm_latency"]["n"] == crit["alarm_latency"]["arrived"] == 24
    replies = centre_replies(result.run_dir, "scaip")
    assert len(replies) == 24 and {e["key"] for e in replies} == set(stimulus_keys(result.run_dir))
    merged = result.merged
    assert merged is not None and len(merged["nodes"]) == 2
    frames = [n["counts"].get("centre_frames", 0) for n in merged["nodes"]]
    assert sorted(frames) == [0, 0]  # SCAIP counts no DC-09 frames
    assert sum(n["counts"].get("foreign", 0) for n in merged["nodes"]) == 12  # the half the other worker sent
    assert merged["counts"]["ok"] == 24


def test_an_mqtt_fleet_is_refused_for_a_dc09_centre(tmp_path: Path) -> None:
    path = scenario(
        tmp_path, "{shape: steady, via: mqtt, centres: dc09, devices: 2, rate: 1/s, duration: 2s}", CRITERIA
    )
    with pytest.raises(InputError, match="zone number"):
        run_load(path, None, LoadOptions(report_dir=tmp_path / "reports", contract=CONTRACT))


def test_the_dc09_fleet_refusal_names_the_labs_connection_limit(tmp_path: Path) -> None:
    from harness.load.fleet import DC09_TCP_CONNECTIONS

    assert DC09_TCP_CONNECTIONS >= 10_000
    path = scenario(
        tmp_path,
        f"{{shape: steady, via: dc09, devices: {DC09_TCP_CONNECTIONS + 1}, rate: 1/s, duration: 2s}}",
        CRITERIA,
    )
    with pytest.raises(InputError, match=r"limits\.dc09_connections") as err:
        run_load(path, None, LoadOptions(report_dir=tmp_path / "reports", contract=CONTRACT))
    assert "protocol: udp" in (err.value.fix or "")
