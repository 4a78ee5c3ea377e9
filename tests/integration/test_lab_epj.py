"""The reference lab records in the patient record as a platform does through VKP: an alarm acknowledged at a
centre becomes DetectedIssue + Encounter + Composition with the operator, low battery becomes 1.17, loss of
supervision the lab file's code, a missed dose 1.1 and a taken dose a MedicationDispense. Pushed over HTTPS
with a HelseID-shaped token to vtlab's EpjProbe (its own client key registered), every push a ledger line
with its HTTP status; a push the probe refuses is a ledger line with the refusal."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import Peer, require_mosquitto, wait_until

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.pki import make_pki
from harness.probes.epj import EpjProbe, RequestSummary
from harness.protocols import vkp
from harness.protocols.vkp import ResourceSummary

ORG = "921234560"
HANDLED = "9.101"
SUPERVISION = "9.356"
EXTRA = {HANDLED: "Trygghetsalarm håndtert", SUPERVISION: "Mistet tilsyn"}
WRITE = vkp.scopes_of(["DetectedIssue", "Encounter", "Composition", "MedicationDispense", "Observation"], "write")


@dataclass
class Seen:
    resources: list[ResourceSummary]
    refused: list[tuple[RequestSummary, int, str]]
    cond: threading.Condition

    def wait(self, n: int, timeout_s: float = 10.0) -> list[ResourceSummary]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.resources) >= n, timeout_s), self.resources
            return list(self.resources)


@dataclass
class Bed:
    lab: LabProcess
    seen: Seen
    centre: Peer
    device: Peer

    def ledger(self, action: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.lab.ledger() if e["action"] == action and all(e.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("epj")
    pki = make_pki(tmp / "pki", clients=("x",))
    seen = Seen([], [], threading.Condition())

    def on_resource(summary: ResourceSummary, arrived_ns: int) -> None:
        with seen.cond:
            seen.resources.append(summary)
            seen.cond.notify_all()

    def on_refused(req: RequestSummary, status: int, reason: str) -> None:
        with seen.cond:
            seen.refused.append((req, status, reason))
            seen.cond.notify_all()

    probe = EpjProbe(
        certfile=pki.server_cert,
        keyfile=pki.server_key,
        orgnrs=[ORG],
        on_resource=on_resource,
        on_refused=on_refused,
        codes=vkp.DEFAULT_CODES.with_alert_codes(EXTRA),
    )
    probe.start()
    client = probe.new_client("vtlab-lab", WRITE)
    config = LabConfig.model_validate(
        {
            "site": "e",
            "devices": {
                "sa-1": {"user": "persona/ragnhild-87", "centre": "rc-a", "heartbeat_interval_s": 0.15},
                "md-1": {"user": "persona/olav-91", "centre": "rc-a"},
            },
            "centres": ["rc-a"],
            "epj": {
                "base_url": f"{probe.origin}/epj/r4",
                "orgnr": ORG,
                "token_url": probe.token_url,
                "client_id": client.client_id,
                "client_key": str(client.private_key),
                "ca": str(pki.ca_cert),
                "patients": {"persona/ragnhild-87": "13896999876"},
                "alert_codes": EXTRA,
                "alarm_codes": {"101": HANDLED},
                "supervision_code": SUPERVISION,
            },
        }
    )
    lab = LabProcess(config, tmp / "lab")
    lab.start()
    centre = Peer(lab.broker_url, subscribe=["vtlab/e/centre/+/alarm"])
    device = Peer(lab.broker_url, subscribe=["vtlab/e/device/+/ack"])
    try:
        yield Bed(lab, seen, centre, device)
    finally:
        centre.close()
        device.close()
        lab.stop()
        probe.close()


def _event(cid: str, device: str, event: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "cid": cid, "device": device, "event": event, "code": code, **extra}


def test_a_handled_alarm_reaches_the_patient_record_with_the_operator(bed: Bed) -> None:
    bed.device.publish("vtlab/e/device/sa-1/event", _event("c-1", "sa-1", "personal_emergency", "101"))
    bed.centre.wait_count(1)
    ack = {"v": 1, "cid": "c-1", "centre": "rc-a", "device": "sa-1", "operator": "op-17"}
    bed.centre.publish("vtlab/e/centre/rc-a/ack", ack)
    got = bed.seen.wait(3)
    kinds = sorted(r.resource_type for r in got[:3])
    assert kinds == ["Composition", "DetectedIssue", "Encounter"]
    issue = next(r for r in got if r.resource_type == "DetectedIssue")
    assert issue.patient is not None and issue.patient.value == "13896999876"
    assert issue.device is not None and issue.device.value == "sa-1"
    assert issue.code == HANDLED and not issue.findings
    wait_until(lambda: bool(bed.ledger("epj_push", kind="handled_alarm")))
    line = bed.ledger("epj_push", kind="handled_alarm")[0]
    assert (line["status"], line["ok"], line["cid"], line["operator"]) == (200, True, "c-1", "op-17")
    assert "token" not in str(line).lower()


def test_low_battery_and_doses_and_supervision_are_recorded(bed: Bed) -> None:
    before = len(bed.seen.resources)
    bed.device.publish("vtlab/e/device/sa-1/event", _event("c-2", "sa-1", "low_battery", "302", battery=9))
    bed.device.publish("vtlab/e/device/md-1/event", _event("c-3", "md-1", "dose_missed", "100"))
    bed.device.publish("vtlab/e/device/md-1/event", _event("c-4", "md-1", "dose_taken", "100", qualifier="3"))
    bed.device.publish("vtlab/e/device/sa-1/heartbeat", {"v": 1, "device": "sa-1", "interval_s": 0.15})
    got = bed.seen.wait(before + 4)[before:]
    codes = {(r.resource_type, r.code) for r in got}
    assert {("DetectedIssue", "1.17"), ("DetectedIssue", "1.1"), ("DetectedIssue", SUPERVISION)} <= codes
    assert any(r.resource_type == "MedicationDispense" for r in got)
    md = [r for r in got if r.device is not None and r.device.value == "md-1"]
    assert md and all(r.patient is not None and r.patient.value == "persona/olav-91" for r in md)
    wait_until(lambda: len(bed.ledger("epj_push")) >= 5)
    assert {e["kind"] for e in bed.ledger("epj_push")} >= {
        "low_battery",
        "dose_missed",
        "dose_taken",
        "supervision_loss",
    }
    assert bed.ledger("recorded", cid="c-4")  # a taken dose is recorded, never routed to a centre
    assert not bed.ledger("routed", cid="c-4")


def test_a_refused_push_is_a_ledger_line_and_faults_can_drop_pushes(bed: Bed, tmp_path: Path) -> None:
    cfg = bed.lab.config
    assert cfg.epj is not None
    bad = cfg.model_copy(
        update={
            "epj": cfg.epj.model_copy(update={"client_id": "nobody-registered", "faults": True}),
            "ledger": None,
            "log": None,
        }
    )
    with LabProcess(bad, tmp_path / "lab2") as lab2, Peer(lab2.broker_url) as centre:
        centre.publish("vtlab/e/device/sa-1/event", _event("c-9", "sa-1", "low_battery", "302"))
        wait_until(lambda: any(e["action"] == "epj_failed" for e in lab2.ledger()))
        failed = next(e for e in lab2.ledger() if e["action"] == "epj_failed")
        assert failed["status"] == 401 and "token refused" in failed["reason"] and failed["cid"] == "c-9"
        lab2.set_faults("drop=1")
        centre.publish("vtlab/e/device/sa-1/event", _event("c-10", "sa-1", "low_battery", "302"))
        wait_until(lambda: any(e["action"] == "epj_drop" for e in lab2.ledger()))
        assert next(e for e in lab2.ledger() if e["action"] == "epj_drop")["cid"] == "c-10"
