"""TLS and client authentication on the MQTT interface, each check shown both ways: it passes against a
correctly configured mosquitto (TLS 1.2+, default suites, client certificates, password file) and fails,
for the reason it names, against a misconfigured one (plain listener, TLS 1.1 and NULL suites allowed, no
client certificate required, no password file). Certificates: a throw-away PKI, plus certificates made
wrong on purpose (expired, wrong host name, another CA)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import socket
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lab_fixtures import require_mosquitto

from harness.lab.broker import RunningBroker, find_mosquitto, free_port, start_broker
from harness.outcomes import Outcome
from harness.pki import TestPki, TlsFiles, make_pki
from harness.scenario.security import connect_check
from harness.security import tls
from harness.transports.mqtt import MqttSettings


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki", clients=("harness", "device-a"))


def mosquitto_with(tmp_path: Path, lines: list[str]) -> Iterator[int]:
    """A mosquitto whose config is `lines` plus a loopback listener; yields its port. For settings
    start_broker does not offer (old TLS, weak suites, client ids bound to identities)."""
    require_mosquitto()
    binary = find_mosquitto()
    assert binary is not None
    port = free_port()
    conf = tmp_path / f"mosquitto-{port}.conf"
    user = [f"user {pwd.getpwuid(os.getuid()).pw_name}"] if os.geteuid() == 0 else []
    conf.write_text(
        "\n".join([f"listener {port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type all", *user, *lines])
        + "\n"
    )
    log = tmp_path / f"mosquitto-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(500):
            if b" running" in log.read_bytes():
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {log.read_text()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.02)
        else:
            raise AssertionError(f"mosquitto did not start: {log.read_text()}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def tls_lines(pki: TestPki, *, require_certificate: bool = True) -> list[str]:
    return [
        f"cafile {pki.ca_cert}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        f"require_certificate {'true' if require_certificate else 'false'}",
        "use_identity_as_username true" if require_certificate else "",
        "allow_anonymous true",
    ]


@pytest.fixture
def secure(tmp_path: Path, pki: TestPki) -> Iterator[RunningBroker]:
    require_mosquitto()
    with start_broker(tmp_path / "secure", tls=pki.server_tls(require_client_cert=True), kind="mosquitto") as b:
        yield b


@pytest.fixture
def old_tls(tmp_path: Path, pki: TestPki) -> Iterator[int]:
    """Misconfigured: TLS 1.1 and NULL/legacy suites allowed (OpenSSL security level 0)."""
    yield from mosquitto_with(tmp_path, [*tls_lines(pki), "tls_version tlsv1.1", "ciphers ALL:eNULL:@SECLEVEL=0"])


def harness_cred(pki: TestPki) -> dict[str, Path]:
    c = pki.clients["harness"]
    return {"cert": c.cert, "key": c.key}


# --- protocol versions and suites -----------------------------------------------------------------
def test_tls_1_1_is_refused_by_a_tls12_broker_and_found_on_a_broker_that_allows_it(
    secure: RunningBroker, old_tls: int, pki: TestPki
) -> None:
    good = tls.probe_version("127.0.0.1", secure.port, "1.1", **harness_cred(pki))
    assert good.outcome is Outcome.REFUSED
    assert good.refusal is not None and good.refusal["handshake"] == "failed"
    assert str(good.refusal["tls_alert"]).startswith("TLSV1_ALERT_")  # the alert the broker sent
    bad = tls.probe_version("127.0.0.1", old_tls, "1.1", **harness_cred(pki))
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal["version"] == "TLSv1.1"  # type: ignore[index]
    assert bad.certificate is not None and "CN=localhost" in bad.certificate["subject"]
    assert "localhost" in bad.certificate["subject_alt_names"]


def test_tls_1_0_is_refused_by_a_tls12_broker_and_found_on_a_legacy_endpoint(
    secure: RunningBroker, pki: TestPki
) -> None:
    assert tls.probe_version("127.0.0.1", secure.port, "1.0", **harness_cred(pki)).outcome is Outcome.REFUSED
    # mosquitto cannot be made to speak TLS 1.0: the legacy twin is a bare TLS server that does
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        result = tls.probe_version("127.0.0.1", port, "1.0")
    finally:
        server.close()
        t.join(5)
    assert result.outcome is Outcome.ACCEPTED and result.refusal["version"] == "TLSv1"  # type: ignore[index]


def test_weak_suites_are_refused_by_a_default_broker_and_found_where_null_encryption_is_allowed(
    secure: RunningBroker, old_tls: int, pki: TestPki
) -> None:
    good = tls.probe_weak_ciphers("127.0.0.1", secure.port, **harness_cred(pki))
    assert good.outcome is Outcome.REFUSED, good.detail
    bad = tls.probe_weak_ciphers("127.0.0.1", old_tls, **harness_cred(pki))
    assert bad.outcome is Outcome.ACCEPTED and "NULL" in bad.detail
    assert bad.request["cipher_class"] == "null_encryption"


def test_nothing_listening_is_unreachable_not_a_pass() -> None:
    from harness.errors import UnreachableError

    with pytest.raises(UnreachableError):
        tls.probe_version("127.0.0.1", free_port(), "1.1")


# --- the platform's certificate, seen from the client side ----------------------------------------
def _issue(
    folder: Path, ca_cert: Path, ca_key: Path | None, *, names: list[str], days: tuple[int, int], name: str
) -> TlsFiles:
    """A server certificate from the CA at `ca_cert`/`ca_key` (a new CA when `ca_key` is None)."""
    if ca_key is None:
        rogue = make_pki(folder / f"rogue-{name}", clients=())
        ca_cert, ca_key = rogue.ca_cert, rogue.ca_key
    assert ca_key is not None
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(signer, hashes.SHA256())
    )  # type: ignore[arg-type]
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TlsFiles(ca_cert, cert_path, key_path, require_certificate=False)


@pytest.mark.parametrize(
    "case,names,days,wrong",
    [
        ("expired", ["127.0.0.1", "localhost"], (-30, -1), "expired"),
        ("wrong_host", ["platform.example"], (-1, 30), "not valid for `127.0.0.1`"),
        ("rogue_ca", ["127.0.0.1", "localhost"], (-1, 30), "not issued by the expected CA"),
    ],
)
def test_a_certificate_a_client_must_refuse_is_a_finding_and_the_right_one_is_verified(
    tmp_path: Path, pki: TestPki, case: str, names: list[str], days: tuple[int, int], wrong: str
) -> None:
    require_mosquitto()
    with start_broker(tmp_path / "good", tls=pki.server_tls(require_client_cert=False), kind="mosquitto") as b:
        ok = tls.check_server_certificate("127.0.0.1", b.port, ca=pki.ca_cert)
    assert ok.outcome is Outcome.OK, ok.detail
    assert ok.certificate is not None and ok.certificate["issuer"] == "CN=vtlab test CA,O=vtlab test"
    files = _issue(tmp_path, pki.ca_cert, None if case == "rogue_ca" else pki.ca_key, names=names, days=days, name=case)
    with start_broker(tmp_path / case, tls=files, kind="mosquitto") as b:
        bad = tls.check_server_certificate("127.0.0.1", b.port, ca=pki.ca_cert)
    assert bad.outcome is Outcome.ACCEPTED, bad.detail
    assert wrong in bad.detail
    assert bad.refusal is not None and "CERTIFICATE_VERIFY_FAILED" in str(bad.refusal["openssl"])
    assert bad.certificate is not None and bad.certificate["sha256"] != ok.certificate["sha256"]


# --- client authentication -------------------------------------------------------------------------
def settings(url: str, pki: TestPki | None = None, identity: str = "harness", **kw: object) -> MqttSettings:
    c = pki.clients[identity] if pki else None
    return MqttSettings(
        url=url,
        version="5",
        ca=pki.ca_cert if pki else None,
        cert=c.cert if c else None,
        key=c.key if c else None,
        connect_timeout_s=3,
        **kw,
    )  # type: ignore[arg-type]


def test_plain_mqtt_is_refused_by_a_tls_broker_and_found_on_a_plain_listener(
    tmp_path: Path, secure: RunningBroker, pki: TestPki
) -> None:
    refused = connect_check(settings(secure.url, pki), "plain_tcp", 3)
    assert refused.outcome is Outcome.REFUSED
    assert refused.refusal == {"connack": "none (the connection was closed before any CONNACK)"}
    with start_broker(tmp_path / "plain", kind="mosquitto") as plain:
        found = connect_check(settings(plain.url), "plain_tcp", 3)
    assert found.outcome is Outcome.ACCEPTED and found.request["url"].startswith("mqtt://")


@pytest.mark.parametrize("attempt", ["no_client_certificate", "untrusted_certificate"])
def test_client_certificates_are_required_by_the_secure_broker_and_not_by_a_misconfigured_one(
    tmp_path: Path, secure: RunningBroker, pki: TestPki, attempt: str
) -> None:
    refused = connect_check(settings(secure.url, pki), attempt, 3)  # type: ignore[arg-type]
    assert refused.outcome is Outcome.REFUSED, refused.detail
    lax = pki.server_tls(require_client_cert=False)
    with start_broker(tmp_path / "lax", tls=lax, kind="mosquitto") as b:
        found = connect_check(settings(b.url, pki), attempt, 3)  # type: ignore[arg-type]
    if attempt == "untrusted_certificate":  # a broker that asks for no certificate ignores a stranger's
        assert found.outcome is Outcome.ACCEPTED
    else:
        assert found.outcome is Outcome.ACCEPTED and found.request["client_certificate"] is None


def test_a_wrong_password_is_refused_with_its_reason_code_and_found_without_a_password_file(tmp_path: Path) -> None:
    require_mosquitto()
    secret = "correct-horse-battery"
    with start_broker(tmp_path / "pw", users={"device-a": secret}, kind="mosquitto") as b:
        s = settings(b.url, None, username="device-a", password=secret)
        assert connect_check(s, "no_credentials", 3).outcome is Outcome.REFUSED
        refused = connect_check(s, "wrong_password", 3)
    assert refused.outcome is Outcome.REFUSED
    assert refused.refusal is not None and refused.refusal["connack"].startswith(("0x86", "0x87"))
    assert secret not in repr(refused.evidence()) and refused.request["password"] == "wrong (random)"
    with start_broker(tmp_path / "open", kind="mosquitto") as b:
        found = connect_check(settings(b.url, None, username="device-a", password=secret), "wrong_password", 3)
    assert found.outcome is Outcome.ACCEPTED
