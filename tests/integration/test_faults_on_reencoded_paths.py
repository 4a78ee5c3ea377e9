"""The spine's fault checks on the paths where no correlation id survives: the reference lab takes SCAIP
and delivers SIA DC-09 (and the other way round) with its own sequence numbers, while it duplicates, delays
or stops routing on purpose. vtlab's counts, made by content correlation alone (device, Contact ID code,
zone / dco), must equal the lab's own ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Suite, VtlabResult, run_vtlab

pytestmark = pytest.mark.slow

SCAIP_TO_DC09 = """
title: SCAIP-alarm til DC-09-alarmmottak under feil
covers: [TA-1.1, TA-1.4, TA-1.5]
user: persona/ingrid-90
devices:
  knapp: {model: safety_alarm}
repeat: 60
pace: 20/s
drain: 3s
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {at: alarmmottak_dc09, from: knapp, within: 1s}
criteria:
  - {metric: alarm_latency, p99: "<= 1s", requirement: TA-1.1}
  - {metric: lost, count: "== 0", requirement: TA-1.4}
  - {metric: duplicates, count: "== 0", requirement: TA-1.5}
  - {metric: late, count: "== 0", requirement: TA-1.1}
"""

DC09_TO_SCAIP = SCAIP_TO_DC09.replace("persona/ingrid-90", "persona/per-88").replace(
    "knapp: {model: safety_alarm}", "knapp: {model: fall_detector}").replace(
    "event: button_press", "event: fall").replace("at: alarmmottak_dc09", "at: responssenter_scaip")


def ledger(result: VtlabResult, action: str) -> list[dict[str, Any]]:
    lines = (result.run_dir / "lab" / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
    return [x for x in map(json.loads, filter(None, lines)) if x.get("action") == action and x.get("kind") != "ack"]


def measured(result: VtlabResult, metric: str) -> float:
    (c,) = [c for s in result.summary["scenarios"] for c in s["criteria"] if c["metric"] == metric]
    return float(c["measured"])


@pytest.mark.parametrize("text", [SCAIP_TO_DC09, DC09_TO_SCAIP], ids=["scaip-to-dc09", "dc09-to-scaip"])
def test_duplicates_the_lab_made_are_counted_by_content(suite: Suite, tmp_path: Path, text: str) -> None:
    result = run_vtlab(str(suite.scenario("s", text)), "--fault", "dup=0.1,seed=4", report_dir=tmp_path)
    duplicated = ledger(result, "dup")
    assert duplicated, "the lab duplicated nothing: the test proves nothing"
    assert measured(result, "duplicates") == len(duplicated)
    assert measured(result, "lost") == 0
    assert result.summary["scenarios"][0]["metrics"]["counts"].get("ambiguous", 0) == 0


def test_alarms_the_lab_delays_past_the_deadline_are_late_by_content(suite: Suite, tmp_path: Path) -> None:
    result = run_vtlab(str(suite.scenario("s", SCAIP_TO_DC09)), "--fault", "delay=1500ms@0.15,seed=6",
                       report_dir=tmp_path)
    delayed = ledger(result, "delay")
    assert delayed
    assert measured(result, "late") == len(delayed)
    assert measured(result, "lost") == 0
    assert result.rc == 1


def test_alarms_lost_in_an_outage_on_the_re_encoded_path_are_counted(suite: Suite, tmp_path: Path) -> None:
    result = run_vtlab(str(suite.scenario("s", SCAIP_TO_DC09)), "--fault", "outage=800ms@1200ms",
                       report_dir=tmp_path)
    in_outage = ledger(result, "outage")
    assert in_outage, "no alarm fell in the outage window: the test proves nothing"
    assert measured(result, "lost") == len(in_outage)
    assert result.rc == 1
