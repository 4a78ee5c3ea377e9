"""The pull pattern against a hostile supplier: whatever the platform's FHIR API (or its token endpoint)
answers, vtlab's poller stays alive, keeps polling within its timeout, keeps its memory bounded, writes the
bad answer as a bounded finding with no token in it, and still finds the valid record recorded after it.

The supplier is a MOCK written here: a real HTTPS server on 127.0.0.1 (stdlib http.server, its own CA given
to vtlab in the lab file) whose searches and token answers are scripted, one hostile variant per test case;
a second MOCK server on another origin ("localhost") stands for the host a redirect or next link points to.
The probe is vtlab's real PatientRecordProbe in `mode: pull`, built from a lab file."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import logging
import shutil
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import yaml

from harness.evidence import EvidenceReader, EvidenceStore
from harness.labfile import load_lab
from harness.pki import TestPki, make_pki
from harness.probes.epj import FhirStore
from harness.probes.patient_record import PatientRecordProbe
from harness.protocols import vkp
from harness.tracking import Tracker
from tests.helpers import memory_lab

ORG = "999888777"
SECRET = "hostile-mock-secret-token-4b8d1f0e77a2"
INTERVAL_S, TIMEOUT_S = 0.1, 1.0
GAP_LIMIT_S = 3 * TIMEOUT_S + INTERVAL_S + 1.0
"""The longest a hostile answer may hold the poller up before its next request (3x the search timeout)."""
TRICKLE_S = 0.2  # one byte per TRICKLE_S: each read is well inside the socket timeout, the whole never ends
TRICKLE_CAP_S = 20.0  # the MOCK gives up trickling after this (so a broken poller fails the test, not hangs it)
HUGE = 40 * 1024 * 1024
SEARCH_PREFIX = b'{"resourceType": "Bundle", "type": "searchset", "entry": ['


def _context(pki: TestPki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


@dataclass(frozen=True)
class Hit:
    at: float  # monotonic
    kind: str  # search | token
    mode: str
    authorised: bool


class MockFhirServer:
    """A MOCK supplier FHIR API and token endpoint; `search_script`/`token_script`/`tls_script` say how the
    next requests are answered (a mode each, then `ok`). `_hostile=<mode>` in a URL keeps a mode for the
    pages it links to (next links and redirects that loop)."""

    def __init__(self, pki: TestPki, wrong: TestPki, host: str = "127.0.0.1") -> None:
        self.ca = pki.ca_cert
        self.store = FhirStore()
        self.search_script: list[str] = []
        self.token_script: list[str] = []
        self.tls_script: list[str] = []
        self.hits: list[Hit] = []
        self.assertions: list[str] = []
        self.lock = threading.Lock()
        self.other: MockFhirServer | None = None
        good, bad = _context(pki), _context(wrong)
        api = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                sock, addr = self.socket.accept()
                sock.settimeout(TRICKLE_CAP_S + 5)
                with api.lock:
                    ctx = good
                    if api.tls_script and api.tls_script.pop(0) == "wrong_cert":
                        ctx = bad
                        api.hits.append(Hit(time.monotonic(), "tls", "wrong_cert", False))
                return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client gave up on a hostile answer: expected

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.request.do_handshake()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                form = dict(parse_qsl(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()))
                mode = api.next("token", api.token_script, None, False)
                with api.lock:
                    api.assertions.append(form.get("client_assertion", ""))
                Answers(self, api, form).token(mode)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                kept = dict(parse_qsl(parts.query)).get("_hostile")
                authorised = self.headers.get("Authorization") == f"Bearer {SECRET}"
                mode = api.next("search", api.search_script, kept, authorised)
                Answers(self, api, {}).search(mode if authorised or mode != "ok" else "s401_echo")

        self.server = Server((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        self.origin = f"https://{'localhost' if host != '127.0.0.1' else host}:{self.port}"
        self.base = f"{self.origin}/fhir/{ORG}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def next(self, kind: str, script: list[str], kept: str | None, authorised: bool) -> str:
        with self.lock:
            mode = kept or (script.pop(0) if script else "ok")
            self.hits.append(Hit(time.monotonic(), kind, mode, authorised))
            return mode

    def reset(self) -> None:
        with self.lock:
            self.search_script, self.token_script, self.tls_script = [], [], []
            self.hits, self.assertions = [], []

    def record(self, device: str, detail: str | None = None) -> dict[str, Any]:
        """The platform records a low-battery alert from `device` now."""
        issue = vkp.alert_issue(
            vkp.Ident(vkp.FNR_SYSTEM, "persona/ragnhild-87"),
            vkp.Ident(vkp.DEVICE_SYSTEM, device),
            "1.17",
            dt.datetime.now(dt.UTC),
            detail=detail,
        )
        return self.store.add(ORG, issue)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Answers:
    """What the MOCK answers, one method per hostile mode (raw bytes where HTTP itself is the attack)."""

    def __init__(self, h: BaseHTTPRequestHandler, api: MockFhirServer, form: dict[str, str]) -> None:
        self.h, self.api, self.form = h, api, form

    # -- plumbing

    def raw(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.h.wfile.write(data)
            self.h.wfile.flush()
        self.h.close_connection = True

    def send(self, status: int, body: bytes, ctype: str = vkp.FHIR_JSON, headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.raw(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def json(self, status: int, body: Any, **kw: Any) -> None:
        self.send(status, json.dumps(body).encode(), **kw)

    def trickle(self, data: bytes) -> None:
        end = time.monotonic() + TRICKLE_CAP_S
        with contextlib.suppress(OSError):
            for i in range(len(data)):
                if time.monotonic() > end:
                    break
                self.h.wfile.write(data[i : i + 1])
                self.h.wfile.flush()
                time.sleep(TRICKLE_S)
        self.h.close_connection = True

    def endless(self, head: bytes, chunked: bool, total: int | None) -> None:
        """A body of `total` bytes (None: until the client gives up) after `head`, in 64 KiB pieces."""
        piece = b" " * 65536
        sent = 0
        with contextlib.suppress(OSError):
            self.h.wfile.write(head + (f"{len(SEARCH_PREFIX):x}\r\n".encode() if chunked else b"") + SEARCH_PREFIX)
            if chunked:
                self.h.wfile.write(b"\r\n")
            while total is None or sent < total:
                self.h.wfile.write(b"10000\r\n" + piece + b"\r\n" if chunked else piece)
                sent += len(piece)
                if sent > 50 * HUGE:
                    break
        self.h.close_connection = True

    def elsewhere(self, query: dict[str, str]) -> str:
        other = self.api.other
        assert other is not None
        return f"{other.base}/DetectedIssue?{urlencode(query)}"

    def here(self, mode: str, **extra: str) -> str:
        return f"{self.api.base}/DetectedIssue?{urlencode({'_hostile': mode, **extra})}"

    def searchset(self, entries: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
        return vkp.searchset(entries, self_url=f"{self.api.base}/DetectedIssue", next_url=next_url, total=len(entries))

    # -- token endpoint

    def token(self, mode: str) -> None:
        if mode == "ok":
            return self.json(
                200, {"access_token": SECRET, "token_type": "Bearer", "expires_in": 1}, ctype="application/json"
            )
        assertion = self.form.get("client_assertion", "")
        answers: dict[str, Callable[[], None]] = {
            "t_deep": lambda: self.send(200, b'{"access_token": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            "t_not_json": lambda: self.send(200, b"<html>login</html>", ctype="text/html"),
            "t_crlf": lambda: self.json(200, {"access_token": SECRET + "\r\nX-Injected: 1", "expires_in": 60}),
            "t_echo": lambda: self.json(
                400, {"error": "invalid_client", "error_description": f"bad client_assertion={assertion} {assertion}"}
            ),
            "t_huge_error": lambda: self.json(400, {"error": "e" * 100_000, "error_description": "d" * 100_000}),
            "t_slow": lambda: self.trickle(b'HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n{"access_token": "'),
            "t_expires": lambda: self.json(200, {"access_token": SECRET, "expires_in": "soon"}),
            "t_redirect": lambda: self.send(302, b"", headers={"Location": self.elsewhere({})}),
        }
        answers[mode]()

    # -- searches

    def search(self, mode: str) -> None:
        auth = self.h.headers.get("Authorization", "")
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).timestamp()
        answers: dict[str, Callable[[], None]] = {
            "ok": self.ok,
            "not_json": lambda: self.send(200, b"<html><body>Service Unavailable</body></html>"),
            "json_array": lambda: self.send(200, b"[1, 2, 3]"),
            "not_bundle": lambda: self.json(200, {"resourceType": "Patient", "id": "p1"}),
            "entries_wrong_types": lambda: self.json(
                200,
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": ["x", 5, {"resource": "DetectedIssue"}, {"resource": {"resourceType": 7}}],
                },
            ),
            "invalid_resource": lambda: self.json(
                200,
                self.searchset(
                    [{"resourceType": "DetectedIssue", "id": "bad1", "status": "bogus", "bogusField": [1, 2]}]
                ),
            ),
            "history_bundle": lambda: self.json(200, {**self.searchset([]), "type": "history"}),
            "outcome_200": lambda: self.json(200, outcome("processing", "search failed")),
            "deep_nesting": lambda: self.send(200, SEARCH_PREFIX + b"[" * 100_000 + b"]" * 100_000 + b"]}"),
            "huge_number": lambda: self.send(
                200, b'{"resourceType": "Bundle", "type": "searchset", "total": ' + b"9" * 100_000 + b"}"
            ),
            "huge_float": lambda: self.send(200, b'{"resourceType": "Bundle", "type": "searchset", "total": 1e999999}'),
            "huge_string": lambda: self.json(
                200, self.searchset([self.api.record("huge-string", detail="D" * 900_000)])
            ),
            "huge_length": lambda: self.endless(
                f"HTTP/1.1 200 OK\r\nContent-Type: {vkp.FHIR_JSON}\r\nContent-Length: {HUGE}\r\n\r\n".encode(),
                chunked=False,
                total=HUGE,
            ),
            "huge_chunked": lambda: self.endless(
                f"HTTP/1.1 200 OK\r\nContent-Type: {vkp.FHIR_JSON}\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
                chunked=True,
                total=None,
            ),
            "huge_no_length": lambda: self.endless(
                f"HTTP/1.1 200 OK\r\nContent-Type: {vkp.FHIR_JSON}\r\nConnection: close\r\n\r\n".encode(),
                chunked=False,
                total=HUGE,
            ),
            "slow_body": lambda: self.trickle(
                f"HTTP/1.1 200 OK\r\nContent-Type: {vkp.FHIR_JSON}\r\nContent-Length: 2000\r\n\r\n".encode()
                + SEARCH_PREFIX
                + b" " * 2000
            ),
            "slow_headers": lambda: self.trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 2000),
            "next_self": lambda: self.json(200, self.searchset([], next_url=self.here("next_self"))),
            "next_chain": lambda: self.json(
                200, self.searchset([], next_url=self.here("next_chain", n=str(time.monotonic_ns())))
            ),
            "next_elsewhere": lambda: self.json(200, self.searchset([], next_url=self.elsewhere({"page": "2"}))),
            "redirect_elsewhere": lambda: self.send(302, b"", headers={"Location": self.elsewhere({"page": "1"})}),
            "redirect_loop": lambda: self.send(302, b"", headers={"Location": self.here("redirect_loop")}),
            "wrong_ctype": lambda: self.json(200, self.searchset([]), ctype="text/html"),
            "s401_echo": lambda: self.json(401, outcome("login", f"invalid token: {auth} access_token={SECRET}")),
            "s401_huge_diagnostics": lambda: self.json(401, outcome("login", "a" * 900_000)),
            "s403": lambda: self.json(403, outcome("forbidden", "not your records")),
            "s429_retry": lambda: self.json(429, outcome("throttled", "slow down"), headers={"Retry-After": "1"}),
            "s429": lambda: self.json(429, outcome("throttled", "slow down")),
            "s500": lambda: self.json(500, outcome("exception", "record database unavailable")),
            "s503_retry": lambda: self.send(503, b"", headers={"Retry-After": "1"}),
            "s503_retry_huge": lambda: self.send(503, b"", headers={"Retry-After": "999999999"}),
            "s503_retry_date": lambda: self.send(
                503, b"", headers={"Retry-After": email.utils.formatdate(later, usegmt=True)}
            ),
            "s503_retry_garbage": lambda: self.send(503, b"", headers={"Retry-After": "soon\x01" + "x" * 5000}),
            "close_mid_body": lambda: self.raw(
                f"HTTP/1.1 200 OK\r\nContent-Type: {vkp.FHIR_JSON}\r\nContent-Length: 5000\r\n\r\n".encode()
                + SEARCH_PREFIX
            ),
            "close_at_once": lambda: self.raw(b""),
            "garbage_status": lambda: self.raw(b"HTTP/1.1 20x Whatever\r\n\r\n"),
            "many_headers": lambda: self.raw(
                b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n"
            ),
            "long_header": lambda: self.raw(b"HTTP/1.1 200 OK\r\nX-Long: " + b"l" * 200_000 + b"\r\n\r\n"),
            "wrong_cert": self.ok,  # the certificate is the attack (tls_script)
        }
        answers[mode]()

    def ok(self) -> None:
        page, total = self.api.store.search(ORG, "DetectedIssue", self.bounds(), 0, 1000)
        self.json(200, vkp.searchset(page, self_url=f"{self.api.base}/DetectedIssue", next_url=None, total=total))

    def bounds(self) -> list[tuple[str, dt.datetime]]:
        bound = dict(parse_qsl(urlsplit(self.h.path).query)).get("_lastUpdated")
        return [(bound[:2], dt.datetime.fromisoformat(bound[2:]))] if bound else []


def outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


@dataclass(frozen=True)
class Variant:
    mode: str
    words: tuple[str, ...]  # in the one finding it must produce
    where: str = "search"  # search | token | tls
    retry: bool = False  # a Retry-After the poller must honour


V = Variant
VARIANTS = [
    V("not_json", ("answered 200 with a body that is not JSON",)),
    V("json_array", ("not valid FHIR", "expected a JSON object")),
    V("not_bundle", ("not valid FHIR", "expected a Bundle")),
    V("entries_wrong_types", ("not valid FHIR",)),
    V("invalid_resource", ("not valid FHIR", "DetectedIssue")),
    V("history_bundle", ("history Bundle, not a searchset",)),
    V("outcome_200", ("OperationOutcome", "search failed")),
    V("deep_nesting", ("not JSON", "nested deeper")),
    V("huge_number", ("not JSON", "digits")),
    V("huge_float", ("not valid FHIR", "Bundle.total")),
    V("huge_string", ()),  # a valid record with a 900 kB detail: taken, its evidence row bounded
    V("huge_length", ("larger than",)),
    V("huge_chunked", ("larger than",)),
    V("huge_no_length", ("larger than",)),
    V("slow_body", ("did not answer within 1s",)),
    V("slow_headers", ("did not answer within 1s",)),
    V("next_self", ("next link", "already read")),
    V("next_chain", ("next link", "pages")),
    V("next_elsewhere", ("next link leaves",)),
    V("redirect_elsewhere", ("answered 302", "not followed", "localhost")),
    V("redirect_loop", ("answered 302", "not followed")),
    V("wrong_ctype", ("Content-Type", "text/html")),
    V("s401_echo", ("answered 401", "login")),
    V("s401_huge_diagnostics", ("answered 401", "login")),
    V("s403", ("answered 403", "not your records")),
    V("s429_retry", ("answered 429", "Retry-After 1"), retry=True),
    V("s429", ("answered 429", "throttled")),
    V("s500", ("answered 500", "record database unavailable")),
    V("s503_retry", ("answered 503", "Retry-After 1"), retry=True),
    V("s503_retry_huge", ("answered 503", "Retry-After 999999999"), retry=True),
    V("s503_retry_date", ("answered 503", "Retry-After"), retry=True),
    V("s503_retry_garbage", ("answered 503", "Retry-After")),
    V("close_mid_body", ("broke off its answer",)),
    V("close_at_once", ("broke off its answer",)),
    V("garbage_status", ("broke off its answer",)),
    V("many_headers", ("broke off its answer",)),
    V("long_header", ("broke off its answer",)),
    V("wrong_cert", ("certificate vtlab does not accept",), where="tls"),
    V("t_deep", ("token endpoint", "invalid_token_response"), where="token"),
    V("t_not_json", ("token endpoint", "invalid_token_response"), where="token"),
    V("t_crlf", ("token endpoint", "access_token is not a token"), where="token"),
    V("t_echo", ("token endpoint answered 400 invalid_client",), where="token"),
    V("t_huge_error", ("token endpoint answered 400",), where="token"),
    V("t_slow", ("token endpoint did not answer within 1s",), where="token"),
    V("t_expires", ("token endpoint", "expires_in is not a number"), where="token"),
    V("t_redirect", ("token endpoint answered 302",), where="token"),
]
LOOPS = {"next_self": 2, "redirect_loop": 1, "next_chain": 101}
"""How often a looping answer may be asked for in one round (a chain of new pages: up to the page limit)."""
HUGE_MODES = {"huge_length", "huge_chunked", "huge_no_length", "huge_string", "deep_nesting"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MockFhirServer, MockFhirServer]]:
    folder = tmp_path_factory.mktemp("hostile")
    pki = make_pki(folder / "pki", clients=(), keep_ca_key=False)
    wrong = make_pki(folder / "wrong", clients=(), keep_ca_key=False)
    supplier = MockFhirServer(pki, wrong)
    other = MockFhirServer(pki, wrong, host="localhost")
    supplier.other = other
    yield supplier, other
    supplier.close()
    other.close()


def lab_file(tmp_path: Path, api: MockFhirServer) -> Path:
    path = memory_lab(tmp_path / "lab", kind="external")
    shutil.copy(api.ca, path.parent / "supplier-ca.pem")
    (path.parent / "reader.key").write_bytes(vkp.private_pem(vkp.generate_key()))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["probes"]["journal"] = {
        "kind": "epj",
        "epj": {
            "mode": "pull",
            "orgnr": ORG,
            "client_id": "vtlab-reader",
            "key_file": "reader.key",
            "interval": f"{int(INTERVAL_S * 1000)}ms",
            "timeout": f"{int(TIMEOUT_S * 1000)}ms",
            "skew": "1s",
            "resources": ["DetectedIssue"],
        },
    }
    data["fhir"] = {"url": api.base, "ca": "supplier-ca.pem"}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


class Collecting(Tracker):
    def __init__(self, evidence: EvidenceStore) -> None:
        super().__init__(evidence)
        self.devices: list[str] = []

    def on_incoming(self, probe: str, kind: str, got: Any) -> None:
        self.devices.append(str(got.fields.get("device")))
        super().on_incoming(probe, kind, got)


def wait_for(what: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not what():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.mode for v in VARIANTS])
def test_mock_supplier_hostile_answer_is_a_bounded_finding_and_polling_goes_on(
    variant: Variant,
    servers: tuple[MockFhirServer, MockFhirServer],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    supplier, other = servers
    supplier.reset()
    other.reset()
    lab = load_lab(lab_file(tmp_path, supplier))
    (tmp_path / "run").mkdir()
    evidence = EvidenceStore.create(tmp_path / "run")
    tracker = Collecting(evidence)
    tracker.scenario = "hostile"
    caplog.set_level(logging.WARNING, logger="vtlab")
    probe = PatientRecordProbe(
        "journal", lab.spec.probes["journal"].epj, lab.path.parent, tracker, pull_api=lab.pull_api("journal")
    )
    peak = 0
    try:
        probe.start()
        assert wait_for(lambda: count(supplier, "search", "ok") >= 2, 10), supplier.hits  # polling has begun
        measured = variant.mode in HUGE_MODES
        if measured:
            tracemalloc.start()
        with supplier.lock:
            before = len(supplier.hits)
            {"search": supplier.search_script, "token": supplier.token_script, "tls": supplier.tls_script}[
                variant.where
            ].append(variant.mode)
        kind = variant.where
        served = wait_for(lambda: hostile_index(supplier, before, kind, variant.mode) is not None, 10)
        assert served, supplier.hits[before:]
        i = hostile_index(supplier, before, kind, variant.mode)
        assert i is not None
        # the poller gets back to asking within its timeout (a small factor of it), whatever it was sent
        assert wait_for(lambda: next_hit(supplier, i) is not None, GAP_LIMIT_S + 5), "the poller stopped asking"
        after = next_hit(supplier, i)
        assert after is not None
        gap = after.at - supplier.hits[i].at
        assert gap <= GAP_LIMIT_S, f"{variant.mode} held the poller up for {gap:.1f}s"
        if variant.retry:
            assert gap >= 0.9, f"Retry-After not honoured ({gap:.2f}s)"
        if measured:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        device = f"after-{variant.mode}"
        supplier.record(device)
        assert wait_for(lambda: device in tracker.devices, 10), (tracker.devices, supplier.hits[-5:])
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        probe.close()
        evidence.close()
    if variant.mode in HUGE_MODES:
        assert peak < 24 * 1024 * 1024, f"{variant.mode}: {peak / 2**20:.0f} MiB traced while reading"
    assert tracker.devices.count(device) == 1
    assert count(supplier, kind, variant.mode) <= LOOPS.get(variant.mode, 1), "a loop was followed"
    reader = EvidenceReader(tmp_path / "run")
    try:
        observations = [dict(o) for o in reader.observations()]
        arrivals = [dict(a) for a in reader.arrivals("hostile")]
    finally:
        reader.close()
    assert not [o for o in observations if o["kind"] != "finding"], observations  # never a harness fault
    texts = [o["text"] for o in observations]
    hits = [t for t in texts if all(w in t for w in variant.words)]
    if variant.words:
        assert len(hits) == 1, (variant.words, texts)
        assert hits[0].startswith("journal could not read the patient record")
    else:
        assert texts == []
    assert all(len(t) <= 1000 and "\n" not in t and "\r" not in t for t in texts), texts
    assert all(len(a["payload"] or "") <= 20_000 for a in arrivals), [len(a["payload"] or "") for a in arrivals]
    assert other.hits == [], f"the poller went to another origin: {other.hits}"
    secrets = [SECRET, *(a for a in supplier.assertions if a)]
    secrets += [a.rsplit(".", 1)[-1] for a in supplier.assertions if a]  # the assertion's signature
    for place in (tmp_path / "run").glob("evidence*"):
        data = place.read_bytes()
        assert not [s for s in secrets if s.encode() in data], f"a secret is in {place.name}"
    for r in caplog.records:
        assert r.levelno < logging.ERROR, r.getMessage()
        assert SECRET not in r.getMessage()


def count(api: MockFhirServer, kind: str, mode: str) -> int:
    with api.lock:
        return sum(1 for h in api.hits if h.kind == kind and h.mode == mode)


def hostile_index(api: MockFhirServer, start: int, kind: str, mode: str) -> int | None:
    with api.lock:
        return next(
            (i for i in range(start, len(api.hits)) if api.hits[i].kind == kind and api.hits[i].mode == mode), None
        )


def next_hit(api: MockFhirServer, i: int) -> Hit | None:
    """The first request after hit `i` that is not part of the same hostile answer (a followed loop)."""
    with api.lock:
        mode = api.hits[i].mode
        for h in api.hits[i + 1 :]:
            if h.mode != mode or mode == "ok":
                return h
    return None
