"""Events reach the patient record: a platform pushes FHIR (VKP-shaped) to vtlab's patient-record probe
over HTTPS with a HelseID-shaped token, and `expect_record` correlates it to the stimulus and checks the
patient, the device and the code.

The platform is a MOCK written in the test (it turns each low-battery event on the in-memory bus into a
VKP DetectedIssue bundle and pushes it), standing in for a supplier's platform or the reference lab."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
import yaml

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.evidence import EvidenceReader
from harness.labfile import load_lab
from harness.metrics import ScenarioMetrics, compute
from harness.probes.epj import HelseIdTokenProvider, push_bundle
from harness.protocols import vkp
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.transports.base import Message
from tests.helpers import Suite, memory_lab, partial_suite_contract

pytestmark = pytest.mark.slow

SCENARIO = """
title: Lavt batteri når pasientjournalen
covers: [TA-6.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 5
pace: 5/s
drain: 1s
steps:
  - trigger: {device: knapp, event: low_battery}
  - expect_record: {from: knapp, kind: alert, code: "1.17", within: 5s}
criteria:
  - {metric: epj_latency, p99: "<= 5m"}
  - {metric: lost, count: "== 0"}
"""


def run(tmp_path: Path, *, patient_of: dict[str, str] | None = None, skip: int = 0) -> ScenarioMetrics:
    path = memory_lab(tmp_path / "lab", kind="external")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["probes"]["journal"] = {"kind": "epj", "epj": {"orgnr": "999888777"}}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    lab = load_lab(path)
    contract, src = load_contract(partial_suite_contract())
    plan = load_scenario(Suite(tmp_path).scenario("epj", SCENARIO), contract, lab, "epj")
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports", run_id="epj")
    session.start()
    endpoint = session.bed.records["journal"].endpoint(generate_client=True)
    assert endpoint.client is not None
    tokens = HelseIdTokenProvider(endpoint.token_url, endpoint.client, ca=endpoint.ca)
    statuses: list[int] = []
    seen = [0]

    def platform(msg: Message) -> None:
        event = json.loads(msg.payload)
        seen[0] += 1
        if seen[0] <= skip:
            return
        user = (patient_of or {}).get(event["user"], event["user"])
        bundle = vkp.low_battery(vkp.Ident(vkp.FNR_SYSTEM, user), vkp.Ident(vkp.DEVICE_SYSTEM, event["device"]),
                                 dt.datetime.now(dt.UTC))
        threading.Thread(target=lambda: statuses.append(
            push_bundle(endpoint.base_url, bundle, tokens, endpoint.ca).status), daemon=True).start()

    session.bed.memory_bus().add(lab.topic("device_event", device="+"), platform)
    try:
        run_and_judge(plan, session)
    finally:
        session.close()
    reader = EvidenceReader(tmp_path / "reports" / "epj")
    try:
        return compute(reader.stimuli("epj"), reader.arrivals("epj"), reader.matches("epj"))
    finally:
        reader.close()


def test_low_battery_reaches_the_patient_record_for_the_right_patient(tmp_path: Path) -> None:
    m = run(tmp_path)
    assert m.counts["lost"] == 0 and m.counts["misrouted"] == 0 and m.counts["altered"] == 0, m.problem_details
    assert m.latencies["epj_latency"].arrived == 5


def test_a_record_for_another_patient_is_misrouted(tmp_path: Path) -> None:
    m = run(tmp_path, patient_of={"persona/ragnhild-87": "persona/odd-79"})
    assert m.counts["misrouted"] == 5


def test_records_never_pushed_are_lost(tmp_path: Path) -> None:
    m = run(tmp_path, skip=2)
    assert m.counts["lost"] == 2 and m.latencies["epj_latency"].censored == 2
