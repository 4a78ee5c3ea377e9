"""The reference lab's own FHIR R4 API (harness/lab/fhir_api.py), reached over HTTPS as a record system that
pulls would reach it: what the lab recorded (here without pushing anywhere) is found by search with a token
from the lab's HelseID-shaped endpoint; no token or a bad one is refused with 401 and an OperationOutcome,
bad search parameters with 400, writes with 405; pages are bounded. With `require_token` off (the insecure
profile's `fhir_token`) the same search succeeds without a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import Peer, require_mosquitto, wait_until

from harness.lab.config import LabConfig
from harness.lab.fhir_api import READ_SCOPES
from harness.lab.process import LabProcess
from harness.pki import make_pki
from harness.probes.epj import ClientKey, HelseIdTokenProvider, _http, push_bundle
from harness.protocols import vkp

ORG = "921234560"
FNR = "13896999876"
PATIENT_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"

pytestmark = pytest.mark.slow


@dataclass
class Api:
    lab: LabProcess
    ca: Path
    client: ClientKey
    device: Peer

    @property
    def base(self) -> str:
        return self.lab.ingress["fhir"]

    def tokens(self) -> HelseIdTokenProvider:
        return HelseIdTokenProvider(self.lab.ingress["fhir_token"], self.client, ca=self.ca)

    def get(self, query: str, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {"Accept": vkp.FHIR_JSON} | ({"Authorization": f"Bearer {token}"} if token else {})
        resp = _http("GET", f"{self.base}/{query}", body=None, headers=headers, ca=self.ca, timeout_s=10)
        return resp.status, json.loads(resp.body), dict(resp.headers)


def _config(tmp: Path, *, require_token: bool) -> tuple[LabConfig, Path, ClientKey]:
    pki = make_pki(tmp / "pki", clients=(), keep_ca_key=False)
    key = vkp.generate_key("ES256")
    (tmp / "reader.key").write_bytes(vkp.private_pem(key))
    (tmp / "reader.pub").write_bytes(vkp.public_pem(key))
    config = LabConfig.model_validate(
        {
            "site": "f",
            "devices": {
                "sa-1": {"user": "persona/ragnhild-87", "centre": "rc-a"},
                "sa-2": {"user": "persona/odd-79", "centre": "rc-a"},
            },
            "centres": ["rc-a"],
            "epj": {"orgnr": ORG, "patients": {"persona/ragnhild-87": FNR}},  # no base_url: records stay here
            "fhir_api": {
                "orgnr": ORG,
                "cert": str(pki.server_cert),
                "key": str(pki.server_key),
                "ca": str(pki.ca_cert),
                "clients": {"vtlab-epj-reader": str(tmp / "reader.pub")},
                "require_token": require_token,
                "max_count": 3,
            },
        }
    )
    return config, pki.ca_cert, ClientKey("vtlab-epj-reader", tmp / "reader.key", READ_SCOPES)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("fhir-api")
    config, ca, client = _config(tmp, require_token=True)
    with LabProcess(config, tmp / "lab") as lab, Peer(lab.broker_url) as device:
        for i in range(5):
            device.publish("vtlab/f/device/sa-1/event", {"v": 1, "cid": f"b-{i}", "device": "sa-1",
                                                         "event": "low_battery", "code": "302", "battery": 9})
        device.publish("vtlab/f/device/sa-2/event", {"v": 1, "cid": "o-1", "device": "sa-2",
                                                     "event": "low_battery", "code": "302", "battery": 8})
        wait_until(lambda: sum(e["action"] == "epj_recorded" for e in lab.ledger()) >= 6, timeout_s=10)
        yield Api(lab, ca, client, device)


def test_records_are_found_by_patient_and_time_with_a_token_in_bounded_pages(api: Api) -> None:
    token = api.tokens()()
    status, page, _ = api.get(f"DetectedIssue?patient={PATIENT_SYSTEM}|{FNR}&_count=50", token)
    assert status == 200 and page["resourceType"] == "Bundle" and page["type"] == "searchset"
    assert page["total"] == 5 and len(page["entry"]) == 3  # _count 50 is clamped to the lab's max_count 3
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    parsed = vkp.parse_bundle(json.dumps(page).encode())  # the library validates what the lab serves
    assert all(s.patient is not None and s.patient.value == FNR and s.code == "1.17" for s in parsed.resources)
    status, rest, _ = api.get(nxt.split(f"{api.base}/", 1)[1], token)
    assert status == 200 and len(rest["entry"]) == 2
    newest = max(e["resource"]["meta"]["lastUpdated"] for e in [*page["entry"], *rest["entry"]])
    status, none_newer, _ = api.get(f"DetectedIssue?patient={FNR}&_lastUpdated=gt{newest}", token)
    assert status == 200 and none_newer["total"] == 0
    status, odd, _ = api.get("DetectedIssue?patient=persona/odd-79", token)
    assert status == 200 and odd["total"] == 1


def test_no_token_or_a_bad_one_is_refused_with_401_and_an_operation_outcome(api: Api) -> None:
    for token in (None, "not-a-jwt", api.tokens()()[:-4] + "AAAA"):
        status, body, headers = api.get(f"DetectedIssue?patient={FNR}", token)
        assert status == 401 and body["resourceType"] == "OperationOutcome", (token is None, body)
        assert any(k.lower() == "www-authenticate" for k in headers)
    refusals = [e for e in api.lab.ledger() if e["action"] == "fhir_refused"]
    assert len([e for e in refusals if e["status"] == 401]) >= 3
    assert "ey" not in json.dumps(refusals)  # no token (a JWT starts with `ey`) reached the ledger


def test_bad_parameters_are_refused_with_400_and_writes_with_405(api: Api) -> None:
    token = api.tokens()()
    for query in ("DetectedIssue?subject=x", "DetectedIssue?_count=0", "DetectedIssue?_lastUpdated=yesterday",
                  "DetectedIssue?_sort=-date", "DetectedIssue?patient="):
        status, body, _ = api.get(query, token)
        assert status == 400 and body["resourceType"] == "OperationOutcome", (query, body)
        assert body["issue"][0]["severity"] == "error"
    bundle = vkp.low_battery(vkp.Ident(PATIENT_SYSTEM, FNR), vkp.Ident(vkp.DEVICE_SYSTEM, "sa-1"),
                             datetime.now(UTC))
    pushed = push_bundle(api.base, bundle, lambda: token, api.ca)
    assert pushed.status == 405 and pushed.body is not None and pushed.body["resourceType"] == "OperationOutcome"


def test_without_require_token_anyone_reads_the_records(tmp_path: Path) -> None:
    require_mosquitto()
    config, ca, client = _config(tmp_path, require_token=False)
    with LabProcess(config, tmp_path / "lab") as lab, Peer(lab.broker_url) as device:
        device.publish("vtlab/f/device/sa-1/event", {"v": 1, "cid": "x-1", "device": "sa-1",
                                                     "event": "low_battery", "code": "302", "battery": 9})
        wait_until(lambda: any(e["action"] == "epj_recorded" for e in lab.ledger()), timeout_s=10)
        status, page, _ = Api(lab, ca, client, device).get(f"DetectedIssue?patient={FNR}", None)
    assert status == 200 and page["total"] == 1
