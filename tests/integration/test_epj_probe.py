"""EpjProbe over real HTTPS with generated certificates: pushes with HelseID-style tokens are accepted and
handed over with their fields; every kind of bad token or bad resource is refused for its stated reason,
the server keeps serving, and no secret reaches a log line or a callback. The pull poller picks up each
new resource exactly once."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.probes.epj import (
    ClientKey,
    EpjPoller,
    EpjProbe,
    HelseIdTokenProvider,
    RequestSummary,
    TokenError,
    fetch_token,
    push_bundle,
)
from harness.protocols import vkp
from harness.protocols.vkp import Ident, ResourceSummary

ORG = "921234560"
T0 = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
PATIENT = Ident(vkp.FNR_SYSTEM, "13896999876", "Ragnhild Testbruker")
BUTTON = Ident(vkp.DEVICE_SYSTEM, "button-0007")
METER = Ident(vkp.DEVICE_SYSTEM, "bp-meter-0003")
OPERATOR = Ident(vkp.OPERATOR_SYSTEM, "op-17", "Operatør Sytten")
WRITE = vkp.scopes_of(["DetectedIssue", "Encounter", "Composition", "MedicationDispense", "Observation"], "write")
READ = vkp.scopes_of(["DetectedIssue", "Observation"], "read")


# ------------------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """A throw-away CA and a server certificate for 127.0.0.1 (TLS verification stays on in the tests)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vtlab epj test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Recorder:
    resources: list[tuple[ResourceSummary, int]] = field(default_factory=list)
    refused: list[tuple[RequestSummary, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_resource(self, s: ResourceSummary, arrived_ns: int) -> None:
        with self.lock:
            self.resources.append((s, arrived_ns))

    def on_refused(self, r: RequestSummary, status: int, reason: str) -> None:
        with self.lock:
            self.refused.append((r, status, reason))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("epj-certs"))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def _probe(certs: Certs, rec: Recorder, **kw: Any) -> EpjProbe:
    return EpjProbe(
        certfile=certs.cert,
        keyfile=certs.key,
        orgnrs=[ORG],
        on_resource=rec.on_resource,
        on_refused=rec.on_refused,
        **kw,
    )


@pytest.fixture
def probe(certs: Certs, rec: Recorder) -> Iterator[EpjProbe]:
    with _probe(certs, rec) as p:
        yield p


@pytest.fixture
def client(probe: EpjProbe) -> ClientKey:
    return probe.new_client("vtlab-platform", WRITE + READ)


def provider(probe: EpjProbe, client: ClientKey, certs: Certs, scopes: tuple[str, ...] | None = None) -> Any:
    return HelseIdTokenProvider(probe.token_url, client, ca=certs.ca, scopes=scopes)


def alarm() -> dict[str, Any]:
    return vkp.handled_alarm(
        PATIENT, BUTTON, "1.17", T0, T0 + timedelta(minutes=4), OPERATOR, "Ringte bruker, alt i orden"
    )


def post_token(probe: EpjProbe, certs: Certs, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        probe.token_url,
        data=urlencode(form).encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    import ssl

    ctx = ssl.create_default_context(cafile=str(certs.ca))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assertion_form(client_id: str, assertion: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": vkp.CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": " ".join(WRITE),
    }


def client_key(client: ClientKey) -> vkp.PrivateKey:
    return vkp.load_private_key(client.private_key.read_bytes())


# ----------------------------------------------------------------------------------------- accepted


def test_pushed_alarm_with_a_valid_token_is_accepted_and_handed_over(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    result = push_bundle(probe.base_url(ORG), alarm(), provider(probe, client, certs), certs.ca)
    assert result.status == 200, result.diagnostics
    assert result.body is not None and result.body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result.body["entry"]] == ["201 Created"] * 3
    assert [s.kind for s, _ in rec.resources] == ["alert", "encounter", "note"]
    issue, enc, note = (s for s, _ in rec.resources)
    assert issue.patient == PATIENT and issue.device == BUTTON and issue.code == "1.17" and issue.time == T0
    assert enc.device == BUTTON
    assert note.note == "Ringte bruker, alt i orden"
    assert {s.orgnr for s, _ in rec.resources} == {ORG}
    assert all(s.id and s.version == "1" and s.last_updated for s, _ in rec.resources)
    stamps = [ns for _, ns in rec.resources]
    assert len(set(stamps)) == 1 and result.sent_ns <= stamps[0] <= result.answered_ns  # one stamp per request
    assert rec.refused == []
    assert result.body["entry"][0]["response"]["location"].startswith("DetectedIssue/")


def test_message_bundle_and_single_resource_are_accepted(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    tokens = provider(probe, client, certs)
    reading = vkp.health_reading(PATIENT, METER, T0, "temperature", Decimal("37.8"), "Cel", type="message")
    assert push_bundle(probe.base_url(ORG), reading, tokens, certs.ca).status == 200
    single = vkp.blood_pressure(PATIENT, METER, T0, 142, 91)
    r = push_bundle(probe.base_url(ORG), single, tokens, certs.ca, resource_type="Observation")
    assert r.status == 201 and r.location and "/Observation/" in r.location
    assert r.body is not None and r.body["meta"]["versionId"] == "1"
    readings = [s.readings for s, _ in rec.resources]
    assert readings[0] == (vkp.Reading("8310-5", Decimal("37.8"), "Cel"),)
    assert [x.value for x in readings[1]] == [142, 91]


def test_rs256_client_gets_a_token_and_pushes(probe: EpjProbe, certs: Certs, rec: Recorder) -> None:
    rsa_client = probe.new_client("vtlab-rsa", WRITE, alg="RS256")
    r = push_bundle(
        probe.base_url(ORG), vkp.taken_dose(PATIENT, BUTTON, T0), provider(probe, rsa_client, certs), certs.ca
    )
    assert r.status == 200 and rec.resources[0][0].resource_type == "MedicationDispense"


# ------------------------------------------------------------------------------------------ refused


def test_no_token_is_401_with_operation_outcome_and_www_authenticate(
    probe: EpjProbe, certs: Certs, rec: Recorder
) -> None:
    r = push_bundle(probe.base_url(ORG), alarm(), None, certs.ca)
    assert r.status == 401
    assert r.body is not None and r.body["resourceType"] == "OperationOutcome"
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert [(s, reason) for _, s, reason in rec.refused] == [(401, "no bearer token")]
    assert rec.resources == []


def test_expired_access_token_is_refused(probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder) -> None:
    old = probe.issue_access_token(client.client_id, WRITE, now=time.time() - 3600, lifetime_s=300)
    r = push_bundle(probe.base_url(ORG), alarm(), lambda: old, certs.ca)
    assert r.status == 401 and 'error="invalid_token"' in r.headers.get("WWW-Authenticate", "")
    assert "expired" in rec.refused[-1][2]


def test_token_signed_by_another_key_is_refused(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    forged = vkp.make_access_token(
        vkp.generate_key(),
        issuer=probe.issuer,
        client_id=client.client_id,
        scopes=WRITE,
        now=time.time(),
        lifetime_s=60,
    )
    r = push_bundle(probe.base_url(ORG), alarm(), lambda: forged, certs.ca)
    assert r.status == 401 and "signature" in rec.refused[-1][2]


def test_expired_client_assertion_is_refused_at_the_token_endpoint(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    with pytest.raises(TokenError) as e:
        fetch_token(probe.token_url, client, ca=certs.ca, now=time.time() - 600)
    assert (e.value.status, e.value.error) == (401, "invalid_client") and "expired" in e.value.description
    req, status, reason = rec.refused[-1]
    assert (req.path, req.client_id, status) == ("/connect/token", client.client_id, 401) and "expired" in reason


def test_wrong_audience_is_refused(probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder) -> None:
    a = vkp.make_client_assertion(
        client.client_id, "https://helseid.example/connect/token", client_key(client), now=time.time()
    )
    status, body = post_token(probe, certs, assertion_form(client.client_id, a))
    assert status == 401 and body["error"] == "invalid_client" and "audience" in body["error_description"]
    assert "audience" in rec.refused[-1][2]


def test_replayed_assertion_is_refused(probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder) -> None:
    a = vkp.make_client_assertion(client.client_id, probe.token_url, client_key(client), now=time.time())
    first, body = post_token(probe, certs, assertion_form(client.client_id, a))
    assert first == 200 and body["token_type"] == "Bearer" and body["expires_in"] == probe.token_lifetime_s
    again, body = post_token(probe, certs, assertion_form(client.client_id, a))
    assert again == 401 and "replay" in body["error_description"]
    assert [s for _, s, _ in rec.refused] == [401]


def test_assertion_signed_with_an_unregistered_key_is_refused(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    a = vkp.make_client_assertion(client.client_id, probe.token_url, vkp.generate_key(), now=time.time())
    status, body = post_token(probe, certs, assertion_form(client.client_id, a))
    assert status == 401 and "signature" in body["error_description"]
    status, body = post_token(probe, certs, assertion_form("nobody", a))
    assert status == 401 and body["error_description"] == "unknown client"


def test_scope_not_granted_is_refused_at_the_token_endpoint(probe: EpjProbe, certs: Certs, rec: Recorder) -> None:
    reader = probe.new_client("vtlab-reader", READ)
    with pytest.raises(TokenError) as e:
        fetch_token(probe.token_url, reader, ca=certs.ca, scopes=WRITE)
    assert e.value.error == "invalid_scope" and e.value.status == 400


def test_read_only_token_cannot_write(probe: EpjProbe, certs: Certs, rec: Recorder) -> None:
    reader = probe.new_client("vtlab-reader", READ)
    r = push_bundle(probe.base_url(ORG), alarm(), provider(probe, reader, certs), certs.ca)
    assert r.status == 403 and 'error="insufficient_scope"' in r.headers.get("WWW-Authenticate", "")
    assert r.body is not None and r.body["issue"][0]["code"] == "forbidden"
    req, status, reason = rec.refused[-1]
    assert status == 403 and req.client_id == "vtlab-reader" and "detectedissue.write" in reason
    assert rec.resources == []


def test_invalid_resource_is_refused_and_the_server_keeps_serving(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    tokens = provider(probe, client, certs)
    bad = alarm()
    bad["entry"][0]["resource"]["bogus"] = 1
    r = push_bundle(probe.base_url(ORG), bad, tokens, certs.ca)
    assert r.status == 400 and r.body is not None and r.body["resourceType"] == "OperationOutcome"
    assert r.body["issue"][0]["expression"] == ["Bundle.entry[0].resource.bogus"]
    r = push_bundle(probe.base_url(ORG), b"{not json", tokens, certs.ca)
    assert r.status == 400 and "not JSON" in r.diagnostics[0]
    unknown = vkp.missed_dose(PATIENT, BUTTON, T0)
    unknown["entry"][0]["resource"]["code"]["coding"][0]["code"] = "7.77"
    r = push_bundle(probe.base_url(ORG), unknown, tokens, certs.ca)
    assert r.status == 422 and r.body is not None and r.body["issue"][0]["code"] == "code-invalid"
    assert r.body["issue"][0]["expression"] == ["Bundle.entry[0].resource.code.coding[0].code"]
    assert [s for _, s, _ in rec.refused] == [400, 400, 422]
    assert rec.resources == []
    assert push_bundle(probe.base_url(ORG), alarm(), tokens, certs.ca).status == 200  # still serving
    assert len(rec.resources) == 3


def test_lenient_probe_accepts_findings_and_hands_them_over(certs: Certs, rec: Recorder) -> None:
    with _probe(certs, rec, strict=False) as lenient:
        c = lenient.new_client("vtlab-platform", WRITE)
        b = vkp.missed_dose(PATIENT, BUTTON, T0)
        del b["entry"][0]["resource"]["patient"]
        r = push_bundle(lenient.base_url(ORG), b, provider(lenient, c, certs), certs.ca)
        assert r.status == 200
        ((s, _),) = rec.resources
        assert [f.code for f in s.findings] == ["missing-patient"]


def test_unknown_organisation_and_oversized_body(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    tokens = provider(probe, client, certs)
    assert push_bundle(probe.base_url("999999999"), alarm(), tokens, certs.ca).status == 404
    r = push_bundle(probe.base_url(ORG), b" " * (vkp.MAX_FHIR_BYTES + 1), tokens, certs.ca)
    assert r.status == 413
    assert push_bundle(probe.base_url(ORG), alarm(), tokens, certs.ca).status == 200


# ------------------------------------------------------------------------------------------ secrets


def test_no_secret_reaches_logs_or_callbacks(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vtlab.probes.epj")
    tokens = provider(probe, client, certs)
    token = tokens()
    assertion = vkp.make_client_assertion(client.client_id, probe.token_url, client_key(client), now=time.time())
    post_token(probe, certs, assertion_form(client.client_id, assertion))
    post_token(probe, certs, assertion_form(client.client_id, assertion))  # replay: refused, logged
    push_bundle(probe.base_url(ORG), alarm(), tokens, certs.ca)
    push_bundle(probe.base_url(ORG), alarm(), lambda: token + "x", certs.ca)  # bad signature: refused
    push_bundle(probe.base_url(ORG) + "?access_token=" + token, alarm(), None, certs.ca)  # token in the query
    assert len(rec.resources) == 3 and len(rec.refused) == 3
    recorded = "\n".join(
        [r.getMessage() for r in caplog.records]
        + [repr(x) for x in rec.resources]
        + [repr(x) for x in rec.refused]
        + [repr(client), repr(probe.__dict__)]
    )
    secrets = [token, token.split(".")[2], assertion, assertion.split(".")[2]]
    key_pem = client.private_key.read_text()
    secrets += [line for line in key_pem.splitlines() if line and not line.startswith("-----")]
    signing_pem = (probe.key_dir / "helseid-signing.key").read_text()
    secrets += [line for line in signing_pem.splitlines() if line and not line.startswith("-----")]
    assert caplog.records  # something was logged, so the check below means something
    for secret in secrets:
        assert secret not in recorded


def test_keys_are_deleted_at_close(certs: Certs, rec: Recorder) -> None:
    p = _probe(certs, rec)
    p.start()
    c = p.new_client("vtlab-platform", WRITE)
    assert c.private_key.exists()
    p.close()
    assert not p.key_dir.exists() and not c.private_key.exists()


# --------------------------------------------------------------------------------------------- pull


def test_poller_picks_up_new_resources_exactly_once(probe: EpjProbe, certs: Certs) -> None:
    """The probe stands in for a supplier's FHIR API (its in-memory store answers searches with paging)."""
    reader = probe.new_client("vtlab-epj-poller", READ)
    for i in range(5):
        probe.add_to_store(ORG, vkp.alert_issue(PATIENT, BUTTON, "1.17", T0 + timedelta(minutes=i)))
    probe.add_to_store(ORG, vkp.blood_pressure(PATIENT, METER, T0, 120, 80))  # another type: not asked for
    got: list[tuple[ResourceSummary, int]] = []
    errors: list[str] = []
    poller = EpjPoller(
        probe.base_url(ORG),
        token_provider=provider(probe, reader, certs),
        on_resource=lambda s, ns: got.append((s, ns)),
        resource_types=("DetectedIssue",),
        ca=certs.ca,
        page_size=2,
        on_error=errors.append,
    )
    assert poller.poll_once() == 5  # three pages of two
    assert poller.poll_once() == 0  # the last one comes back with `ge` and is recognised
    probe.add_to_store(ORG, vkp.alert_issue(PATIENT, BUTTON, "1.19", T0 + timedelta(hours=1)))
    assert poller.poll_once() == 1
    assert poller.poll_once() == 0
    assert errors == []
    ids = [s.id for s, _ in got]
    assert len(ids) == len(set(ids)) == 6
    assert [s.code for s, _ in got] == ["1.17"] * 5 + ["1.19"]
    assert all(s.patient == PATIENT and s.device == BUTTON for s, _ in got)


def test_poller_thread_and_refused_search(probe: EpjProbe, client: ClientKey, certs: Certs) -> None:
    writer_only = probe.new_client("vtlab-writer", WRITE)
    errors: list[str] = []
    bad = EpjPoller(
        probe.base_url(ORG),
        token_provider=provider(probe, writer_only, certs),
        on_resource=lambda s, ns: None,
        ca=certs.ca,
        on_error=errors.append,
    )
    assert bad.poll_once() == 0 and errors == ["search DetectedIssue answered 403"]

    arrived = threading.Event()
    got: list[ResourceSummary] = []

    def on_resource(s: ResourceSummary, ns: int) -> None:
        got.append(s)
        arrived.set()

    with EpjPoller(
        probe.base_url(ORG),
        token_provider=provider(probe, client, certs),
        on_resource=on_resource,
        ca=certs.ca,
        interval_s=0.05,
    ):
        probe.add_to_store(ORG, vkp.alert_issue(PATIENT, BUTTON, "1.1", T0))
        assert arrived.wait(10)
    assert [s.code for s in got] == ["1.1"]


def test_failed_tls_handshake_and_unsupported_method_are_reported(
    probe: EpjProbe, client: ClientKey, certs: Certs, rec: Recorder
) -> None:
    import socket
    import ssl

    with pytest.raises(ssl.SSLError), socket.create_connection((probe.host, probe.port), timeout=5) as raw:
        ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")  # does not trust the test CA
    deadline = time.monotonic() + 5
    while not rec.refused and time.monotonic() < deadline:
        time.sleep(0.01)  # the server's side of the failed handshake ends on its own thread
    assert [(s, reason.startswith("TLS handshake failed")) for _, s, reason in rec.refused] == [(0, True)]

    req = urllib.request.Request(probe.base_url(ORG) + "/DetectedIssue", method="PATCH", data=b"{}")
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx, timeout=10)
    assert e.value.code == 501
    assert rec.refused[-1][0].method == "PATCH" and rec.refused[-1][1] == 501


@pytest.mark.parametrize(("lookback_s", "found"), [(5, 1), (0, 0)])
def test_a_record_committed_with_an_older_stamp_is_found_within_the_lookback(
    probe: EpjProbe, certs: Certs, lookback_s: int, found: int
) -> None:
    """A record the platform commits after a newer one, stamped 2 s earlier (another writer, a clock a
    little behind): a search from the newest stamp seen misses it; one that reaches back finds it, once."""
    reader = probe.new_client("vtlab-epj-poller", READ)
    now = time.time()

    def add_at(at: float, code: str) -> None:  # the store stamps in order; the platform here does not
        stored = probe.add_to_store(ORG, vkp.alert_issue(PATIENT, BUTTON, code, T0))
        stored["meta"]["lastUpdated"] = dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")

    poller = EpjPoller(probe.base_url(ORG), token_provider=provider(probe, reader, certs),
                       on_resource=lambda s, ns: None, ca=certs.ca, lookback=timedelta(seconds=lookback_s))
    add_at(now, "1.17")
    assert poller.poll_once() == 1
    add_at(now - 2, "1.19")
    assert poller.poll_once() == found
    assert poller.poll_once() == 0  # and never twice
