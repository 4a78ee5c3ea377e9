"""The pull pattern against a supplier's platform whose FHIR API misbehaves: every failed search is evidence
the tester sees (a finding in summary.json and the report, bounded, with no token in it), the run completes
and nothing measured is lost; the API defaults to the lab file's `fhir.url`; the search starts at the run's
start minus the clock-skew allowance, so a record from before the run is never taken as an answer.

The supplier's FHIR API is a MOCK written in this test (HTTPS with its own CA, a token endpoint, searches
over a real FhirStore), scripted to answer 401, 500, malformed JSON, an invalid FHIR Bundle and too slowly.
The platform itself is a MOCK on the in-memory bus that records each low-battery event in that API."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.errors import InputError
from harness.evidence import EvidenceReader, EvidenceStore
from harness.labfile import PullApi, load_lab
from harness.pki import make_pki
from harness.probes.epj import FhirStore
from harness.probes.patient_record import PatientRecordProbe
from harness.protocols import vkp
from harness.report.commands import render_report
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.tracking import Tracker
from harness.transports.base import Message
from tests.helpers import Suite, memory_lab, partial_suite_contract

ORG = "999888777"
SECRET_TOKEN = "mock-secret-access-token-7f3a9c2e51"
DEVICE = vkp.DEVICE_SYSTEM


class MockSupplierFhirApi:
    """A MOCK of a supplier's FHIR API: `/connect/token` hands out SECRET_TOKEN to any private_key_jwt
    request, `/fhir/<orgnr>/<Resource>` searches a FhirStore by `_lastUpdated`. `script` is what the next
    searches answer once `armed` (401, 500, malformed, invalid, slow, then ok)."""

    def __init__(self, folder: Path) -> None:
        pki = make_pki(folder / "pki", clients=(), keep_ca_key=False)
        self.ca = pki.ca_cert
        self.store = FhirStore()
        self.script: list[str] = []
        self.armed = threading.Event()
        self.ignore_last_updated = False
        self.searches: list[dict[str, str]] = []
        self.answers: list[str] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                if form.get("grant_type") != "client_credentials" or "client_assertion" not in form:
                    return self.answer(400, {"error": "invalid_request"}, "application/json")
                self.answer(
                    200,
                    {
                        "access_token": SECRET_TOKEN,
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "scope": form.get("scope", ""),
                    },
                    "application/json",
                )

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                with api.lock:
                    api.searches.append(query)
                    mode = api.script.pop(0) if api.armed.is_set() and api.script else "ok"
                    api.answers.append(mode)
                if self.headers.get("Authorization") != f"Bearer {SECRET_TOKEN}":
                    mode = "401"
                if mode == "401":  # a careless server echoes the credential it refused
                    return self.answer(401, outcome("login", f"invalid token: {self.headers.get('Authorization')}"))
                if mode == "500":
                    return self.answer(500, outcome("exception", "record database unavailable"))
                if mode == "malformed":
                    return self.raw(200, b'{"resourceType": "Bundle", "type": "searchset", "entry": [')
                if mode == "invalid":
                    return self.answer(
                        200,
                        {
                            "resourceType": "Bundle",
                            "type": "searchset",
                            "entry": [
                                {"resource": {"resourceType": "DetectedIssue", "status": "final", "bogusField": 1}}
                            ],
                        },
                    )
                if mode == "slow":
                    time.sleep(2.5)
                rtype = parts.path.rstrip("/").rsplit("/", 1)[-1]
                bounds = []
                bound = query.get("_lastUpdated")
                if bound and not api.ignore_last_updated:
                    bounds.append((bound[:2], dt.datetime.fromisoformat(bound[2:])))
                page, total = api.store.search(ORG, rtype, bounds, 0, 1000)
                self.answer(200, vkp.searchset(page, self_url=f"{api.base}/{rtype}", next_url=None, total=total))

            def answer(self, status: int, body: dict[str, Any], ctype: str = vkp.FHIR_JSON) -> None:
                self.raw(status, json.dumps(body).encode(), ctype)

            def raw(self, status: int, data: bytes, ctype: str = vkp.FHIR_JSON) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (the slow answer)

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.origin = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.base = f"{self.origin}/fhir/{ORG}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, device: str, user: str, at: float | None = None) -> dict[str, Any]:
        """The platform records a low-battery alert (lastUpdated `at`, default now)."""
        resource = vkp.alert_issue(
            vkp.Ident(vkp.FNR_SYSTEM, user), vkp.Ident(DEVICE, device), "1.17", dt.datetime.now(dt.UTC)
        )
        if at is None:
            return self.store.add(ORG, resource)
        clock, self.store._clock = self.store._clock, lambda: at
        try:
            return self.store.add(ORG, resource)
        finally:
            self.store._clock = clock

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


@pytest.fixture
def mock_api(tmp_path: Path) -> Iterator[MockSupplierFhirApi]:
    api = MockSupplierFhirApi(tmp_path / "mock")
    yield api
    api.close()


def supplier_lab(
    tmp_path: Path,
    api: MockSupplierFhirApi,
    epj: dict[str, Any] | None = None,
    fhir: bool = True,
    key: bytes | None = None,
) -> Path:
    """The memory lab as a supplier's platform whose patient record is pulled; `fhir:` names the MOCK API."""
    path = memory_lab(tmp_path / "lab", kind="external")
    shutil.copy(api.ca, path.parent / "supplier-ca.pem")
    (path.parent / "reader.key").write_bytes(key if key is not None else vkp.private_pem(vkp.generate_key()))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["probes"]["journal"] = {
        "kind": "epj",
        "epj": {
            "mode": "pull",
            "orgnr": ORG,
            "client_id": "vtlab-reader",
            "key_file": "reader.key",
            "interval": "200ms",
            "timeout": "1s",
            "resources": ["DetectedIssue"],
            **(epj or {}),
        },
    }
    if fhir:
        data["fhir"] = {"url": api.base, "ca": "supplier-ca.pem"}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


SCENARIO = """
title: Lavt batteri leses fra leverandørens journal-API
covers: [TA-6.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 3
pace: 1/s
drain: 1s
steps:
  - trigger: {device: knapp, event: low_battery}
  - expect_record: {from: knapp, kind: alert, code: "1.17", within: 20s}
criteria:
  - {metric: epj_latency, p99: "<= 5m"}
  - {metric: lost, count: "== 0"}
"""


def run_against(tmp_path: Path, api: MockSupplierFhirApi, lab_path: Path) -> Path:
    """The real session and engine against the MOCK platform and the MOCK supplier API; the run folder."""
    lab = load_lab(lab_path)
    contract, src = load_contract(partial_suite_contract())
    plan = load_scenario(Suite(tmp_path).scenario("epj", SCENARIO), contract, lab, "epj")
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports", run_id="pull")
    session.start()

    def platform(msg: Message) -> None:
        event = json.loads(msg.payload)
        api.record(event["device"], event["user"])
        api.armed.set()  # the API starts failing once there is something to read

    session.bed.memory_bus().add(lab.topic("device_event", device="+"), platform)
    try:
        run_and_judge(plan, session)
    finally:
        session.close()
    return session.run_dir


def one_of(texts: list[str], *words: str) -> str:
    hits = [t for t in texts if all(w in t for w in words)]
    assert len(hits) == 1, (words, texts)
    return hits[0]


def findings_of(summary: dict[str, Any]) -> list[str]:
    return [f["text"] for f in summary["findings"]]


@pytest.mark.slow
def test_mock_supplier_api_failures_are_findings_and_nothing_measured_is_lost(
    tmp_path: Path, mock_api: MockSupplierFhirApi
) -> None:
    mock_api.script = ["401"] * 5 + ["500", "500", "malformed", "invalid", "slow"]
    old = mock_api.record("knapp", "persona/ragnhild-87", at=time.time() - 40)  # from before the run
    run_dir = run_against(tmp_path, mock_api, supplier_lab(tmp_path, mock_api))
    assert mock_api.script == [], "the scripted failures were not all served"

    summary = render_report(run_dir, pdf=False)
    (scenario,) = summary["scenarios"]
    assert scenario["status"] != "harness_fault", scenario
    epj = scenario["metrics"]["latency"]["epj_latency"]
    assert epj["n"] == 3 and epj["arrived"] == 3, epj  # read late, after the failures, but read
    assert scenario["metrics"]["counts"]["lost"] == 0

    texts = findings_of(summary)
    journal = [t for t in texts if t.startswith("journal")]

    def one(*words: str) -> str:
        hits = [t for t in journal if all(w in t for w in words) and "repeated" not in t]
        assert len(hits) == 1, (words, journal)
        return hits[0]

    one("could not read the patient record", "search DetectedIssue answered 401", "HTTP 401", "login")
    one("answered 500", "HTTP 500", "record database unavailable")
    one("not JSON", "malformed JSON")
    one("Bundle that is not valid FHIR", "bogusField")
    one("did not answer within 1s", "timeout")
    repeated = [t for t in journal if "repeated" in t]  # five 401s: one line in full and one count
    assert sorted(repeated) == sorted(
        [
            one_of(repeated, "answered 401", "repeated 5 times in all"),
            one_of(repeated, "answered 500", "repeated 2 times in all"),
        ]
    ), repeated
    assert len(journal) == 5 + 2, journal
    assert all(f["scenario"] == "epj" for f in summary["findings"] if f["text"].startswith("journal"))

    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "search DetectedIssue answered 401" in html and "not valid FHIR" in html and "timeout" in html
    for place in (run_dir / "summary.json", run_dir / "report.html", *run_dir.glob("evidence*")):
        assert SECRET_TOKEN.encode() not in place.read_bytes(), f"the token is in {place.name}"

    reader = EvidenceReader(run_dir)
    try:
        ids = [json.loads(a["payload"]).get("id") for a in reader.arrivals("epj")]
    finally:
        reader.close()
    assert len(ids) == 3 and old["id"] not in ids, ids  # the record from before the run never taken
    first = mock_api.searches[0]["_lastUpdated"]
    assert first.startswith("ge") and dt.datetime.fromisoformat(first[2:]) > dt.datetime.fromisoformat(
        old["meta"]["lastUpdated"]
    )


@pytest.mark.slow
def test_vtlab_key_file_unreadable_is_a_harness_fault_not_a_finding(
    tmp_path: Path, mock_api: MockSupplierFhirApi
) -> None:
    run_dir = run_against(tmp_path, mock_api, supplier_lab(tmp_path, mock_api, key=b"not a PEM key"))
    summary = render_report(run_dir, pdf=False)
    (scenario,) = summary["scenarios"]
    assert scenario["status"] == "harness_fault", scenario
    faults = [f["text"] for f in summary["harness_faults"]]
    assert any("vtlab could not search" in t and "reader.key" in t and "private key" in t for t in faults), faults
    assert not [t for t in findings_of(summary) if t.startswith("journal")]  # never charged to the supplier
    assert mock_api.searches == []  # nothing was sent without a token


def test_pull_api_defaults_to_the_lab_files_fhir_url_and_its_ca(tmp_path: Path, mock_api: MockSupplierFhirApi) -> None:
    lab = load_lab(supplier_lab(tmp_path, mock_api))
    assert lab.pull_api("journal") == PullApi(mock_api.base, (lab.path.parent / "supplier-ca.pem").resolve())
    # an `api` of its own on the same server keeps the CA of `fhir:`; on another server it has none
    lab = load_lab(supplier_lab(tmp_path, mock_api, {"api": mock_api.base + "/other"}))
    assert lab.pull_api("journal") == PullApi(mock_api.base + "/other", (lab.path.parent / "supplier-ca.pem").resolve())
    lab = load_lab(supplier_lab(tmp_path, mock_api, {"api": "https://records.example/fhir"}))
    assert lab.pull_api("journal") == PullApi("https://records.example/fhir", None)
    with pytest.raises(InputError, match="names no FHIR API") as exc:
        load_lab(supplier_lab(tmp_path, mock_api, fhir=False))
    assert "fhir:" in str(exc.value.fix)
    path = supplier_lab(tmp_path, mock_api)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["platform"] = {"kind": "embedded"}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_lab(path).pull_api("journal") is None  # the embedded lab reads its own API
    with pytest.raises(InputError, match=r"clock-skew allowance of 10m is outside 0s\.\.5m"):
        load_lab(supplier_lab(tmp_path, mock_api, {"skew": "10m"}))


class _Collecting(Tracker):
    def __init__(self, evidence: EvidenceStore) -> None:
        super().__init__(evidence)
        self.got: list[dict[str, Any]] = []

    def on_incoming(self, probe: str, kind: str, got: Any) -> None:
        self.got.append(dict(got.fields))
        super().on_incoming(probe, kind, got)


@pytest.mark.parametrize("ignores", [False, True], ids=["api-filters", "api-ignores-lastUpdated"])
def test_pull_reads_from_the_run_start_minus_skew_never_earlier(
    tmp_path: Path, mock_api: MockSupplierFhirApi, ignores: bool
) -> None:
    mock_api.ignore_last_updated = ignores
    now = time.time()
    too_old = mock_api.record("a", "persona/ragnhild-87", at=now - 50)  # the minute before the run
    outside = mock_api.record("b", "persona/ragnhild-87", at=now - 8)  # just outside a 5s allowance
    inside = mock_api.record("c", "persona/ragnhild-87", at=now - 2)  # inside it: clocks may differ that much
    lab = load_lab(supplier_lab(tmp_path, mock_api, {"skew": "5s"}))
    (tmp_path / "run").mkdir()
    evidence = EvidenceStore.create(tmp_path / "run")
    tracker = _Collecting(evidence)
    before = dt.datetime.now(dt.UTC)
    probe = PatientRecordProbe(
        "journal", lab.spec.probes["journal"].epj, lab.path.parent, tracker, pull_api=lab.pull_api("journal")
    )
    after = dt.datetime.now(dt.UTC)
    try:
        probe.start()
        deadline = time.monotonic() + 20
        while len(mock_api.searches) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        later = mock_api.record("d", "persona/ragnhild-87")
        while not any(g["id"] == later["id"] for g in tracker.got) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        probe.close()
    ids = [g["id"] for g in tracker.got]
    assert ids == [inside["id"], later["id"]], (ids, too_old["id"], outside["id"])
    bound = dt.datetime.fromisoformat(mock_api.searches[0]["_lastUpdated"][2:])
    assert before - dt.timedelta(seconds=5) <= bound <= after - dt.timedelta(seconds=5)
    evidence.close()
    reader = EvidenceReader(tmp_path / "run")
    try:
        texts = [o["text"] for o in reader.observations() if o["kind"] == "finding"]
    finally:
        reader.close()
    if ignores:  # said once, with the count of what came back too old
        assert [t for t in texts if "seems to ignore it" in t][:1] and all("_lastUpdated" in t for t in texts), texts
    else:
        assert texts == []


STALE = """
title: En journalpost fra før alarmen er ikke svaret på den
covers: [TA-6.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
drain: 1s
steps:
  - wait: {for: 8s}
  - trigger: {device: knapp, event: low_battery}
  - expect_record: {from: knapp, kind: alert, code: "1.17", within: 3s}
criteria:
  - {metric: lost, count: "== 0"}
"""


@pytest.mark.slow
def test_a_pulled_record_made_before_the_stimulus_is_not_its_answer(
    tmp_path: Path, mock_api: MockSupplierFhirApi
) -> None:
    """The MOCK platform, told of the alarm, records an entry dated 6 s before it (inside the run, outside
    the 1 s skew allowance): the first search that lists it comes after the stimulus, but it is not the
    answer, so the record is lost; with the entry dated now it is the answer."""
    lab = load_lab(supplier_lab(tmp_path, mock_api, epj={"skew": "1s"}))
    contract, src = load_contract(partial_suite_contract())

    def run(folder: str, back_s: float) -> dict[str, Any]:
        plan = load_scenario(Suite(tmp_path / folder).scenario("stale", STALE), contract, lab, "stale")
        session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / folder,
                             run_id="stale")
        session.start()
        session.bed.memory_bus().add(
            lab.topic("device_event", device="+"),
            lambda msg: mock_api.record(json.loads(msg.payload)["device"], json.loads(msg.payload)["user"],
                                        at=time.time() - back_s),
        )
        try:
            run_and_judge(plan, session)
        finally:
            session.close()
        reader = EvidenceReader(session.run_dir)
        try:
            return {r["metric"]: r["outcome"] for r in reader.matches("stale")}
        finally:
            reader.close()

    assert run("fresh", 0.0) == {"epj_latency": "ok"}
    assert run("stale", 6.0) == {"epj_latency": "lost"}
