"""The security steps and the fuzz step through the real session and engine against the reference lab
process (the example lab file: mosquitto, TLS, client certificates, access rules): the secure lab passes
every check with its evidence and no secret in it; the fuzzer sends a bounded, seeded stream while the
scenario's real alarms keep arriving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lab_fixtures import require_mosquitto

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.evidence import EvidenceReader
from harness.labfile import load_lab
from harness.metrics import compute
from harness.outcomes import ScenarioStatus
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from tests.helpers import CONTRACT, LAB, Suite

pytestmark = pytest.mark.slow

SECURITY = """
title: Sikkerhetspakke mot referanselaben
covers: [TA-5.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
steps:
  - expect_refused: {attempt: plain_tcp}
  - expect_refused: {attempt: no_client_certificate}
  - expect_refused: {attempt: untrusted_certificate}
  - expect_refused: {attempt: tls_1_1}
  - expect_refused: {attempt: weak_cipher}
  - check_certificate: {}
  - expect_refused: {attempt: publish_as_other_device}
  - expect_refused: {attempt: read_other_centre}
  - expect_refused: {attempt: control_topic}
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 10s}
criteria:
  - {metric: insecure_accepted, count: "== 0"}
  - {metric: lost, count: "== 0"}
"""

FUZZ = """
title: Plattformen ruter alarmer mens en enhet sender søppel
covers: [TA-1.4]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 20
pace: 10/s
drain: 2s
steps:
  - fuzz: {via: mqtt, rate: 200/s, for: 2s, seed: 7, device: knapp}
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 5s}
criteria:
  - {metric: lost, count: "== 0"}
  - {metric: alarm_latency, p99: "<= 5s"}
"""


def run(suite: Suite, tmp_path: Path, name: str, text: str) -> tuple[object, EvidenceReader]:
    require_mosquitto()
    lab = load_lab(LAB)
    contract, src = load_contract(CONTRACT)
    plan = load_scenario(suite.scenario(name, text), contract, lab, name)
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports", run_id=name)
    try:
        session.start()
        outcome = run_and_judge(plan, session)
    finally:
        session.close()
    return outcome, EvidenceReader(session.run_dir)


def test_the_secure_reference_lab_refuses_every_attempt_with_evidence_and_no_secret(
    suite: Suite, tmp_path: Path
) -> None:
    outcome, reader = run(suite, tmp_path, "security", SECURITY)
    try:
        assert outcome.status is ScenarioStatus.COMPLETED, outcome.detail  # type: ignore[attr-defined]
        assert all(r.verdict == "pass" for r in outcome.results), outcome.results  # type: ignore[attr-defined]
        m = compute(reader.stimuli("security"), reader.arrivals("security"), reader.matches("security"))
        assert m.counts["insecure_accepted"] == 0 and m.counts["lost"] == 0
        matches = [dict(r) for r in reader.matches("security") if r["metric"] in ("refusal", "certificate")]
        assert [r["outcome"] for r in matches] == ["refused"] * 5 + ["ok"] + ["refused"] * 3
        records = [json.loads(o["text"]) for o in reader.observations() if o["kind"] == "security"]
        by_check = {r["check"]: r for r in records}
        assert by_check["publish_as_other_device"]["refusal"]["puback"] == "0x87 Not authorized"
        assert by_check["control_topic"]["refusal"]["puback"] == "0x87 Not authorized"
        assert by_check["tls_1_1"]["refusal"]["handshake"] == "failed"
        assert by_check["server_certificate"]["certificate"]["issuer"] == "CN=vtlab test CA,O=vtlab test"
        assert by_check["plain_tcp"]["request"]["url"].startswith("mqtt://")
        store = (
            reader.path.read_bytes() + Path(f"{reader.path}-wal").read_bytes()
            if Path(f"{reader.path}-wal").exists()
            else reader.path.read_bytes()
        )
        assert b"BEGIN PRIVATE KEY" not in store and b"BEGIN EC PRIVATE KEY" not in store
    finally:
        reader.close()


def test_a_fuzzed_reference_lab_keeps_routing_every_real_alarm(suite: Suite, tmp_path: Path) -> None:
    outcome, reader = run(suite, tmp_path, "fuzz", FUZZ)
    try:
        assert outcome.status is ScenarioStatus.COMPLETED, outcome.detail  # type: ignore[attr-defined]
        m = compute(reader.stimuli("fuzz"), reader.arrivals("fuzz"), reader.matches("fuzz"))
        assert m.counts["lost"] == 0 and m.latencies["alarm_latency"].arrived == 20
        (record,) = [json.loads(o["text"]) for o in reader.observations() if o["kind"] == "fuzz"]
        assert record["limit"] == 400 and 0 < record["sent"] <= 400
        assert record["send_errors"] == 0 and record["target"].startswith("mqtts://127.0.0.1:")
        assert sum(record["by_mutation"].values()) == record["sent"]
        rejected = [e for e in reader.lab_events("fuzz") if e["action"] in ("rejected", "refused")]
        assert rejected, "the lab saw and refused the fuzz messages"
        skipped = [s for s in reader.steps("fuzz") if s["kind"] == "fuzz" and s["outcome"] == "skipped"]
        assert len(skipped) == 19  # started once, in the first repetition
    finally:
        reader.close()
