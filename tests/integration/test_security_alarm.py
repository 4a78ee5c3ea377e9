"""Security checks on the alarm interfaces, each shown both ways over real sockets:
DC-09 against vtlab's DC-09 receiver with encryption required and the default timestamp window (NAK and
DUH as the draft standard says) and against one configured loosely (no encryption required, a window of
years); SCAIP against a SIP receiver over TLS and one over plain TCP; FHIR against the EPJ probe (401
without a token) and against a MOCK endpoint that takes anything."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.errors import UnreachableError
from harness.lab.broker import free_port
from harness.outcomes import Outcome
from harness.pki import TestPki, make_pki
from harness.probes.epj import EpjProbe
from harness.protocols.dc09 import Account, ReceiverPolicy
from harness.security.alarm_checks import dc09_check, fhir_without_token_check, scaip_plain_check
from harness.transports.dc09 import DC09Receiver
from harness.transports.loop import LoopThread
from harness.transports.sip import ScaipReceiver, client_ssl_context, server_ssl_context

KEY = b"0123456789ABCDEF"
ACCOUNT = "1234"


@pytest.fixture
def io() -> Iterator[LoopThread]:
    loop = LoopThread("test-security")
    yield loop
    loop.close()


def receiver(io: LoopThread, accounts: list[Account], policy: ReceiverPolicy | None = None) -> DC09Receiver:
    r = DC09Receiver(accounts, lambda *a: None, lambda *a: None, policy=policy)
    io.run(r.start())
    return r


@pytest.fixture
def strict(io: LoopThread) -> Iterator[str]:
    r = receiver(io, [Account(ACCOUNT, KEY)])
    yield f"127.0.0.1:{r.port}"
    io.run(r.stop())


@pytest.fixture
def loose(io: LoopThread) -> Iterator[str]:
    years = dt.timedelta(days=3650)
    r = receiver(io, [Account(ACCOUNT, KEY, require_encryption=False)], ReceiverPolicy(years, years))
    yield f"127.0.0.1:{r.port}"
    io.run(r.stop())


@pytest.mark.parametrize(
    "attempt,expected",
    [("replay", "NAK"), ("stale_timestamp", "NAK"), ("future_timestamp", "NAK"), ("unencrypted", "DUH")],
)
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_dc09_attempts_are_refused_by_a_strict_receiver_and_found_on_a_loose_one(
    strict: str, loose: str, attempt: str, expected: str, protocol: str
) -> None:
    good = dc09_check(strict, attempt, ACCOUNT, KEY, protocol=protocol, age_s=600)  # type: ignore[arg-type]
    assert good.outcome is Outcome.REFUSED and good.refusal is not None, good.detail
    assert good.refusal["dc09_reply"] == expected and "prescribes" not in good.detail
    bad = dc09_check(loose, attempt, ACCOUNT, KEY, protocol=protocol, age_s=600)  # type: ignore[arg-type]
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None
    assert bad.refusal["dc09_reply"] in ("ACK", "*ACK")
    assert KEY.decode() not in json.dumps(good.evidence()) + json.dumps(bad.evidence())


def test_dc09_wrong_key_is_refused_by_a_receiver_and_found_on_a_MOCK_receiver_that_acks_everything(strict: str) -> None:
    good = dc09_check(strict, "wrong_key", ACCOUNT, KEY)
    assert good.outcome is Outcome.REFUSED and good.refusal is not None and good.refusal["dc09_reply"] == "DUH"
    assert good.request["key"] == "a random key of the right length"
    # MOCK: no DC-09 receiver ACKs what it cannot decrypt; this stand-in for a broken one does
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        from harness.protocols.dc09 import ACK, DC09Reply, encode_reply, parse_frame

        conn, _ = server.accept()
        with conn:
            frame = parse_frame(conn.recv(4096))
            conn.sendall(encode_reply(DC09Reply(ACK, frame.sequence, frame.account, "", "0", "0")))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        bad = dc09_check(f"127.0.0.1:{port}", "wrong_key", ACCOUNT, KEY)
    finally:
        t.join(5)
        server.close()
    assert bad.outcome is Outcome.ACCEPTED


def test_a_dc09_refusal_for_another_reason_names_what_the_standard_prescribes(io: LoopThread) -> None:
    r = receiver(io, [Account("9999", KEY)])  # our account is unknown here: DUH, not the NAK a replay gets
    try:
        result = dc09_check(f"127.0.0.1:{r.port}", "replay", ACCOUNT, KEY)
    finally:
        io.run(r.stop())
    assert result.outcome is Outcome.REFUSED and "(DC-09 prescribes NAK)" in result.detail


def test_dc09_with_nothing_listening_is_unreachable() -> None:
    with pytest.raises(UnreachableError):
        dc09_check(f"127.0.0.1:{free_port()}", "replay", ACCOUNT, KEY)


# --- SCAIP over SIP ----------------------------------------------------------------------------------
@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki", clients=("device",))


def test_plain_scaip_is_refused_where_the_receiver_requires_tls_and_found_where_it_listens_plain(
    io: LoopThread, pki: TestPki
) -> None:
    tls_rx = ScaipReceiver(
        transport="tls",
        ssl_context=server_ssl_context(pki.server_cert, pki.server_key),
        client_ssl_context=client_ssl_context(ca=pki.ca_cert),
    )
    plain_rx = ScaipReceiver(transport="tcp")
    io.run(tls_rx.start())
    io.run(plain_rx.start())
    try:
        good = io.run(scaip_plain_check(tls_rx.address, "4711", "1", timeout_s=2))
        bad = io.run(scaip_plain_check(plain_rx.address, "4711", "1", timeout_s=2))
    finally:
        io.run(tls_rx.close())
        io.run(plain_rx.close())
    assert good.outcome is Outcome.REFUSED, good.detail
    assert good.refusal is not None and good.refusal["tcp"]["sip_status"] is None
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None and bad.refusal["tcp"]["sip_status"] == 200


def test_plain_scaip_with_nothing_listening_is_unreachable() -> None:
    with pytest.raises(UnreachableError):
        asyncio.run(scaip_plain_check(f"127.0.0.1:{free_port()}", "4711", None, timeout_s=1))


# --- FHIR without a token ----------------------------------------------------------------------------
ORG = "921234560"


def test_fhir_push_without_a_token_is_refused_401_by_the_epj_probe_and_found_on_a_MOCK_open_endpoint(
    pki: TestPki,
) -> None:
    got: list[object] = []
    with EpjProbe(
        certfile=pki.server_cert, keyfile=pki.server_key, orgnrs=[ORG], on_resource=lambda s, t: got.append(s)
    ) as probe:
        good = fhir_without_token_check(probe.base_url(ORG), pki.ca_cert)
    assert good.outcome is Outcome.REFUSED and good.refusal is not None
    assert good.refusal["http_status"] == 401 and got == []
    assert good.request["authorization"] == "none"

    class Open(BaseHTTPRequestHandler):  # MOCK: a FHIR endpoint that forgot its authentication
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"resourceType":"Bundle","type":"transaction-response"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Open)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        bad = fhir_without_token_check(f"https://127.0.0.1:{server.server_address[1]}/fhir/{ORG}", pki.ca_cert)
    finally:
        server.shutdown()
        server.server_close()
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None and bad.refusal["http_status"] == 200


def test_fhir_with_nothing_listening_is_unreachable(pki: TestPki) -> None:
    with pytest.raises(UnreachableError):
        fhir_without_token_check(f"https://127.0.0.1:{free_port()}/fhir/{ORG}", pki.ca_cert, timeout_s=2)
