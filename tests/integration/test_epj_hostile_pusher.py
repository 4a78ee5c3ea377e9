"""The push pattern against a hostile platform: whatever is sent to vtlab's patient-record endpoint (bad or no
tokens, malformed or hostile JSON, oversized or trickled bodies, wrong methods and paths, broken HTTP, a
flood of connections), the endpoint answers or cuts it off within its deadline, writes a bounded refusal
finding with no secret in it, and still accepts the valid Bundle pushed after it.

The pusher is a MOCK of the supplier's platform written here (raw TLS sockets, so that HTTP itself can be the
attack); the endpoint is vtlab's real PatientRecordProbe in push mode, built from a lab file."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.evidence import EvidenceReader, EvidenceStore
from harness.labfile import load_lab
from harness.probes.epj import ClientKey, HelseIdTokenProvider, push_bundle
from harness.probes.patient_record import WRITE_SCOPES, PatientRecordProbe
from harness.protocols import vkp
from harness.tracking import Tracker
from tests.helpers import memory_lab

ORG = "999888777"
DEADLINE_S = 1.5  # the endpoint's whole-request deadline in this test (default 30s)
TRICKLE_S = 0.2
TRICKLE_CAP_S = 15.0
FORGED = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJmb3JnZWQtc2VjcmV0In0.c2lnbmF0dXJlLXNlY3JldC14eXo"


def alert(device: str, detail: str | None = None) -> dict[str, Any]:
    issue = vkp.alert_issue(
        vkp.Ident(vkp.FNR_SYSTEM, "13896999876"),
        vkp.Ident(vkp.DEVICE_SYSTEM, device),
        "1.17",
        dt.datetime.now(dt.UTC),
        detail=detail,
    )
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": issue}]}


@dataclass
class Endpoint:
    probe: PatientRecordProbe
    tracker: Collecting
    run: Path
    base: str
    token: Callable[[], str]
    host: str
    port: int
    ca: Path

    def tls(self) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        raw = socket.create_connection((self.host, self.port), timeout=TRICKLE_CAP_S + 10)
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        head = {"Host": f"127.0.0.1:{self.port}", "Content-Length": str(len(body)), "Connection": "close"}
        head.update(headers or {})
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items() if v is not None)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Collecting(Tracker):
    def __init__(self, evidence: EvidenceStore) -> None:
        super().__init__(evidence)
        self.devices: list[str] = []

    def on_incoming(self, probe: str, kind: str, got: Any) -> None:
        self.devices.append(str(got.fields.get("device")))
        super().on_incoming(probe, kind, got)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    path = memory_lab(tmp_path / "lab", kind="external")
    key = vkp.generate_key()
    (path.parent / "platform.pub").write_bytes(vkp.public_pem(key))
    (path.parent / "platform.key").write_bytes(vkp.private_pem(key))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["probes"]["journal"] = {"kind": "epj", "epj": {"orgnr": ORG, "clients": {"mock-platform": "platform.pub"}}}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    lab = load_lab(path)
    (tmp_path / "run").mkdir()
    evidence = EvidenceStore.create(tmp_path / "run")
    tracker = Collecting(evidence)
    tracker.scenario = "hostile"
    probe = PatientRecordProbe("journal", lab.spec.probes["journal"].epj, lab.path.parent, tracker)
    assert probe._probe is not None
    probe._probe.request_timeout_s = DEADLINE_S  # a test's deadline; the lab default is 30s
    probe._probe.max_connections = 16
    probe.start()
    where = probe.endpoint(generate_client=False)
    client = ClientKey("mock-platform", path.parent / "platform.key", WRITE_SCOPES)
    tokens = HelseIdTokenProvider(where.token_url, client, ca=where.ca)
    try:
        yield Endpoint(
            probe, tracker, tmp_path / "run", where.base_url, tokens, probe._probe.host, probe._probe.port, where.ca
        )
    finally:
        probe.close()
        evidence.close()


def send(ep: Endpoint, data: bytes, *, trickle: bool = False) -> tuple[int | None, float]:
    """Send raw bytes over TLS; the status the endpoint answered (None: it closed without one) and the time
    until it answered or closed."""
    start = time.monotonic()
    with ep.tls() as s:
        try:
            if trickle:
                end = time.monotonic() + TRICKLE_CAP_S
                for i in range(len(data)):
                    if time.monotonic() > end:
                        break
                    s.sendall(data[i : i + 1])
                    time.sleep(TRICKLE_S)
            else:
                s.sendall(data)
        except OSError:
            pass
        got = b""
        try:
            while b"\r\n" not in got and (chunk := s.recv(65536)):
                got += chunk
        except OSError:
            pass
    elapsed = time.monotonic() - start
    line = got.split(b"\r\n", 1)[0].split()
    return (int(line[1]) if len(line) > 1 and line[1].isdigit() else None), elapsed


def valid_push_after(ep: Endpoint, device: str) -> None:
    result = push_bundle(ep.base, alert(device), ep.token, ep.ca, timeout_s=10)
    assert result.status == 200, (result.status, result.diagnostics)
    end = time.monotonic() + 10
    while device not in ep.tracker.devices and time.monotonic() < end:
        time.sleep(0.02)
    assert ep.tracker.devices.count(device) == 1, ep.tracker.devices


def deep() -> bytes:
    return b'{"resourceType": "Bundle", "type": "collection", "entry": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


P = f"/epj/r4/{ORG}/"
J = {"Content-Type": vkp.FHIR_JSON}


@dataclass(frozen=True)
class Push:
    name: str
    build: Callable[[Endpoint], bytes]
    statuses: tuple[int | None, ...]  # what the endpoint may answer (None: it closed the connection)
    words: tuple[str, ...]  # in the refusal finding
    trickle: bool = False
    bearer: bool = True


def auth(ep: Endpoint) -> dict[str, str]:
    return {**J, "Authorization": f"Bearer {ep.token()}"}


def bundle_push(body: bytes, **extra: str | None) -> Callable[[Endpoint], bytes]:
    return lambda ep: ep.request("POST", P, body, {**auth(ep), **extra})


PUSHES = [
    Push("no_token", lambda ep: ep.request("POST", P, json.dumps(alert("x")).encode(), J), (401,), ("no bearer",)),
    Push(
        "forged_token",
        lambda ep: ep.request("POST", P, b"{}", {**J, "Authorization": f"Bearer {FORGED}"}),
        (401,),
        ("HTTP 401",),
    ),
    Push(
        "basic_auth",
        lambda ep: ep.request("POST", P, b"{}", {**J, "Authorization": "Basic dXNlcjpwYXNzd29yZC1zZWNyZXQ="}),
        (401,),
        ("Authorization is not a bearer",),
    ),
    Push("malformed_json", bundle_push(b'{"resourceType": "Bundle", "entry": ['), (400,), ("not JSON",)),
    Push("json_array", bundle_push(b"[1, 2, 3]"), (400,), ("expected a JSON object",)),
    Push(
        "entries_wrong_types",
        bundle_push(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": ["x", 5]}).encode()),
        (400,),
        ("HTTP 400",),
    ),
    Push(
        "invalid_resource",
        bundle_push(
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": {"resourceType": "DetectedIssue", "status": "bogus", "x": 1}}],
                }
            ).encode()
        ),
        (400,),
        ("HTTP 400",),
    ),
    Push("deep_nesting", bundle_push(deep()), (400,), ("nested deeper",)),
    Push(
        "huge_number",
        bundle_push(b'{"resourceType": "Bundle", "type": "collection", "total": ' + b"9" * 100_000 + b"}"),
        (400,),
        ("not JSON",),
    ),
    Push(
        "huge_url_in_entry",
        bundle_push(
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "resource": alert("u")["entry"][0]["resource"],
                            "request": {"method": "POST", "url": "Patient/" + "u" * 500_000},
                        }
                    ],
                }
            ).encode()
        ),
        (422,),
        ("HTTP 422",),
    ),
    Push("oversized", bundle_push(b" " * (3 * 1024 * 1024)), (413,), ("exceeds",)),
    Push(
        "oversized_declared",
        lambda ep: ep.request("POST", P, b"{}", {**auth(ep), "Content-Length": str(10**12)}),
        (413,),
        ("exceeds",),
    ),
    Push(
        "chunked",
        lambda ep: ep.request(
            "POST", P, b"5\r\n[1,2]\r\n0\r\n\r\n", {**auth(ep), "Content-Length": None, "Transfer-Encoding": "chunked"}
        ),
        (411,),
        ("Content-Length required",),
    ),
    Push(
        "bad_length",
        lambda ep: ep.request("POST", P, b"{}", {**auth(ep), "Content-Length": "1e3"}),
        (400,),
        ("bad Content-Length",),
    ),
    Push(
        "short_body",
        lambda ep: ep.request("POST", P, b"{}", {**auth(ep), "Content-Length": "5000"}),
        (408, None),
        ("HTTP 408",),
    ),
    Push(
        "slow_body",
        lambda ep: ep.request("POST", P, b"{" + b" " * 400, auth(ep)),
        (408, None),
        ("HTTP 408", "not complete within 1.5s"),
        trickle=True,
    ),
    Push(
        "slow_headers",
        lambda ep: ep.request("POST", P, b"{}", {**auth(ep), "X-Slow": "s" * 400}),
        (408, None),
        ("HTTP 408", "not complete within 1.5s"),
        trickle=True,
    ),
    Push("wrong_ctype", bundle_push(b"{}", **{"Content-Type": "text/html"}), (415,), ("Content-Type",)),
    Push("method_put", lambda ep: ep.request("PUT", P, b"{}", auth(ep)), (405,), ("PUT not supported",)),
    Push("method_delete", lambda ep: ep.request("DELETE", P + "DetectedIssue/1", b"", auth(ep)), (405,), ("405",)),
    Push("method_patch", lambda ep: ep.request("PATCH", P, b"{}", auth(ep)), (501,), ("HTTP 501",)),
    Push("method_garbage", lambda ep: ep.request("X" * 5000, P, b"", J), (501,), ("HTTP 501",)),
    Push("path_root", lambda ep: ep.request("POST", "/", b"{}", auth(ep)), (404,), ("no such endpoint",)),
    Push(
        "path_other_org",
        lambda ep: ep.request("POST", "/epj/r4/000000000/", b"{}", auth(ep)),
        (404,),
        ("unknown organisation",),
    ),
    Push(
        "path_traversal",
        lambda ep: ep.request("POST", f"/epj/r4/{ORG}/../../../etc/passwd", b"{}", auth(ep)),
        (404,),
        ("HTTP 404",),
    ),
    Push(
        "path_long_token",
        lambda ep: ep.request("GET", f"/epj/r4/{ORG}/DetectedIssue?access_token={FORGED}&x=" + "q" * 20000, b"", J),
        (401,),
        ("HTTP 401",),
    ),
    Push("request_line_garbage", lambda ep: b"\x16\x03garbage line\r\n\r\n", (400, None), ("HTTP 400",)),
    Push(
        "header_too_long",
        lambda ep: ep.request("POST", P, b"{}", {**auth(ep), "X-Long": "l" * 70_000}),
        (431, 400),
        ("HTTP 4",),
    ),
    Push(
        "too_many_headers",
        lambda ep: ep.request("POST", P, b"{}", {**auth(ep), **{f"X-H{i}": "v" for i in range(200)}}),
        (431,),
        ("HTTP 431",),
    ),
    Push(
        "token_garbage_form",
        lambda ep: ep.request(
            "POST",
            "/connect/token",
            f"grant_type=client_credentials&client_assertion={FORGED}&x={'a' * 50000}".encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        (400, 401),
        ("/connect/token",),
    ),
    Push("token_get", lambda ep: ep.request("GET", "/connect/token", b"", {}), (404,), ("HTTP 404",)),
]
MEASURED = {"oversized", "oversized_declared", "deep_nesting"}
"""Variants whose memory is traced while the endpoint answers (tracing slows FHIR validation down a lot)."""
SECRETS = (FORGED, "c2lnbmF0dXJlLXNlY3JldC14eXo", "dXNlcjpwYXNzd29yZC1zZWNyZXQ=")


@pytest.mark.parametrize("push", PUSHES, ids=[p.name for p in PUSHES])
def test_mock_pusher_hostile_request_is_a_bounded_refusal_and_the_endpoint_keeps_serving(
    push: Push, endpoint: Endpoint
) -> None:
    ep = endpoint
    valid_push_after(ep, "before")
    data = push.build(ep)
    measured = push.name in MEASURED
    if measured:
        tracemalloc.start()
    try:
        status, elapsed = send(ep, data, trickle=push.trickle)
        peak = tracemalloc.get_traced_memory()[1] if measured else 0
    finally:
        tracemalloc.stop()
    assert status in push.statuses, (status, push.statuses)
    assert elapsed <= DEADLINE_S * 3 + (0 if push.trickle else 2), f"held for {elapsed:.1f}s"
    assert peak < 24 * 1024 * 1024, f"{peak / 2**20:.0f} MiB traced while answering"
    valid_push_after(ep, "after")
    secret = ep.token()
    ep.probe.close()
    texts, rows = evidence_of(ep)
    assert not [t for k, t in texts if k != "finding"], texts
    refusals = [t for _, t in texts if all(w in t for w in push.words)]
    assert len(refusals) == 1, (push.words, texts)
    assert all(len(t) <= 1000 and "\n" not in t and "\r" not in t for _, t in texts), texts
    assert all(len(r) <= 20_000 for r in rows), [len(r) for r in rows]
    data = b"".join(p.read_bytes() for p in ep.run.glob("evidence*"))
    assert not [s for s in (*SECRETS, secret) if s.encode() in data]


def evidence_of(ep: Endpoint) -> tuple[list[tuple[str, str]], list[str]]:
    ep.tracker.evidence.close()
    reader = EvidenceReader(ep.run)
    try:
        texts = [(o["kind"], o["text"]) for o in reader.observations()]
        rows = [a["payload"] or "" for a in reader.arrivals("hostile")]
    finally:
        reader.close()
    return texts, rows


def test_mock_pusher_flood_of_stalled_connections_never_stops_a_valid_push(endpoint: Endpoint) -> None:
    """40 connections that send half a request and stall: beyond the cap they are closed at once, the rest
    at the deadline; a valid push (tried again while the cap is full) is accepted within a small factor of
    the deadline, and every stalled one is a bounded refusal."""
    ep = endpoint
    held: list[ssl.SSLSocket] = []
    errors: list[BaseException] = []

    def stall() -> None:
        try:
            s = ep.tls()
            s.sendall(ep.request("POST", P, b"{", auth(ep))[:-1])
            held.append(s)
        except OSError as e:  # refused at the cap: closed before or during the handshake
            errors.append(e)

    threads = [threading.Thread(target=stall) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    start = time.monotonic()
    while True:  # as a platform would: try again until accepted (refused at the cap while it is full)
        try:
            valid_push_after(ep, "during-flood")
            break
        except (OSError, AssertionError):
            assert time.monotonic() - start < DEADLINE_S * 3 + 2, "the flood kept a valid push out"
            time.sleep(0.1)
    time.sleep(DEADLINE_S + 0.5)
    for s in held:
        s.close()
    ep.probe.close()
    texts, _ = evidence_of(ep)
    stalled = [t for _, t in texts if "not complete within" in t]
    capped = [t for _, t in texts if "connections at once" in t]
    assert stalled and len(stalled) <= 16, sorted({t[:150] for _, t in texts})  # the cap: 16 at once
    assert len(stalled) + len(capped) + len(errors) >= 40 - 1, (len(stalled), len(capped), len(errors))
