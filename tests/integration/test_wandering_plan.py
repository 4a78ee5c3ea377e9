"""Kari's wandering plan (persona `wandering: {night: "22:00-07:00", events: [door_open]}`) through `vtlab run`
and the embedded reference lab, with the lab's clock set by the lab file (`platform.local_time`): at 03:00 her
door sensor's openings (BLE, read by the lab's home gateway) are alarms at her centre; at 14:00 the lab records
them in its ledger with the reason and no alarm reaches any probe. Both scenarios run on both clocks, so each
run shows one passing and one failing for the reason the clock gives."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import LAB, ROOT, run_vtlab

pytestmark = pytest.mark.slow

NIGHT = ROOT / "scenarios" / "devices" / "dor_om_natten.yaml"
DAY = """\
# Kari har vandringsplan for natten (22:00-07:00). Om dagen skal en døråpning registreres, ikke gi alarm.
title: Dør åpnet om dagen gir ingen alarm
covers: [TA-8.2]
user: persona/kari-92
devices:
  dor: {model: door_sensor}
repeat: 3
pace: 1/s
steps:
  - trigger: {device: dor, event: door_open}
  - expect_no_alarm: {from: dor, within: 10s}
criteria:
  - {metric: unexpected, count: "== 0"}
"""


def _lab_at(tmp_path: Path, local_time: str) -> Path:
    """The example lab file with its clock at `local_time` (the one line changed; users found from tmp_path)."""
    text = LAB.read_text(encoding="utf-8")
    assert text.count('local_time: "03:00"') == 1
    text = text.replace('local_time: "03:00"', f'local_time: "{local_time}"')
    text = text.replace("users: ../users/personas.yaml", f"users: {LAB.parent.parent / 'users' / 'personas.yaml'}")
    path = tmp_path / f"lab-{local_time.replace(':', '')}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(tmp_path: Path, local_time: str) -> tuple[Any, dict[str, dict[str, Any]], list[dict[str, Any]]]:
    day = tmp_path / "scenarios" / "dor_om_dagen.yaml"
    day.parent.mkdir(parents=True, exist_ok=True)
    day.write_text(DAY, encoding="utf-8")
    # the example's 60 s limit, shortened: at 14:00 the night scenario waits its limit for alarms that never come
    night_text = NIGHT.read_text(encoding="utf-8")
    assert night_text.count("within: 60s") == 1
    night = tmp_path / "scenarios" / NIGHT.name
    night.write_text(night_text.replace("within: 60s", "within: 5s"), encoding="utf-8")
    result = run_vtlab("--lab", str(_lab_at(tmp_path, local_time)), str(night), str(day),
                       report_dir=tmp_path / "reports", run_id=f"at-{local_time.replace(':', '')}")
    assert result.rc in (0, 1), result.output[-3000:]
    by_file = {Path(s["file"]).name: s for s in result.summary["scenarios"]}
    assert set(by_file) == {"dor_om_natten.yaml", "dor_om_dagen.yaml"}
    assert all(s["status"] == "completed" for s in by_file.values()), by_file
    ledger = [json.loads(x) for x in (result.run_dir / "lab" / "ledger.jsonl").read_text().splitlines() if x]
    return result, by_file, ledger


def _door_arrivals(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    con = sqlite3.connect(run_dir / "evidence.sqlite")
    try:
        rows = list(con.execute("SELECT probe, payload FROM arrivals WHERE kind = 'alarm'"))
    finally:
        con.close()
    return [(p, x) for p, raw in rows if (x := json.loads(raw)).get("device") == "dor-kari"]


def _verdicts(scenario: dict[str, Any]) -> dict[str, str]:
    return {c["metric"]: c["verdict"] for c in scenario["criteria"]}


def test_at_night_the_door_raises_an_alarm_and_the_day_scenario_finds_it_unexpected(tmp_path: Path) -> None:
    result, by_file, ledger = _run(tmp_path, "03:00")
    assert "03:00" in result.summary["target"]["lab_clock"] and "local_time" in result.summary["target"]["lab_clock"]
    report = (result.run_dir / "report.html").read_text(encoding="utf-8")
    assert "laboratoriets klokke" in report and "set to 03:00" in report  # the report says the clock was set
    night, day = by_file["dor_om_natten.yaml"], by_file["dor_om_dagen.yaml"]
    assert set(_verdicts(night).values()) == {"pass"} and night["metrics"]["counts"]["lost"] == 0
    assert _verdicts(day) == {"unexpected": "fail"} and day["metrics"]["counts"]["unexpected"] == 3
    doors = _door_arrivals(result.run_dir)
    assert len(doors) == 6 and {p for p, _ in doors} == {"response_centre_ost"}  # Kari's centre, rs-ost
    assert all(x["event"] == "door_open" and x["user"] == "persona/kari-92" for _, x in doors)
    assert not [x for x in ledger if x["action"] == "recorded" and x.get("device") == "dor-kari"]
    assert result.summary["verdict"] == "not_approved"  # the day scenario's expectation fails, as it must


def test_in_the_day_the_door_is_recorded_not_alarmed(tmp_path: Path) -> None:
    result, by_file, ledger = _run(tmp_path, "14:00")
    assert "14:00" in result.summary["target"]["lab_clock"]
    night, day = by_file["dor_om_natten.yaml"], by_file["dor_om_dagen.yaml"]
    assert _verdicts(day) == {"unexpected": "pass"} and day["metrics"]["counts"]["unexpected"] == 0
    assert night["metrics"]["counts"]["lost"] == 3 and _verdicts(night)["lost"] == "fail"
    assert _door_arrivals(result.run_dir) == []  # no probe saw an alarm from the door
    recorded = [x for x in ledger if x["action"] == "recorded" and x.get("device") == "dor-kari"]
    assert len(recorded) == 6, ledger
    assert all(x["reason"] == "outside the wandering plan's night" and x["night"] == "22:00-07:00"
               and x["local_time"].startswith("14:0") and x["event"] == "door_open" for x in recorded)
    assert not [x for x in ledger if x["action"] == "routed" and x.get("device") == "dor-kari"]
    assert result.summary["verdict"] == "not_approved"
