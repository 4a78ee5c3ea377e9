"""TLS probing of a platform's interface: which protocol versions and cipher suites it completes a handshake
with, and whether the certificate it presents is one a client must accept (issued by the expected CA, not
expired, valid for the host name).

The decisions are OpenSSL's (the stdlib `ssl` module), an implementation independent of the platform; the
certificate facts beside them are read with `cryptography` for the evidence.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from harness.errors import UnreachableError
from harness.security.result import CannotCheck, CheckResult, accepted, refused

TlsVersionName = Literal["1.0", "1.1", "1.2", "1.3"]

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    VERSIONS: dict[str, ssl.TLSVersion] = {
        "1.0": ssl.TLSVersion.TLSv1,
        "1.1": ssl.TLSVersion.TLSv1_1,
        "1.2": ssl.TLSVersion.TLSv1_2,
        "1.3": ssl.TLSVersion.TLSv1_3,
    }

WEAK_CIPHER_CLASSES: dict[str, str] = {
    "null_encryption": "eNULL",
    "anonymous": "aNULL",
    "export_low_des_rc4_md5": "EXPORT:LOW:DES:3DES:RC4:MD5:IDEA:SEED",
}
"""OpenSSL cipher strings of suites a security annex forbids, one handshake per class (TLS <= 1.2: every
TLS 1.3 suite is an AEAD with forward secrecy). Classes this machine's OpenSSL cannot offer are skipped
and said so; when it can offer none, the check cannot be made."""

CLIENT_SIDE_REASONS = frozenset(
    {"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_CIPHER_MATCH", "UNSUPPORTED_PROTOCOL_VERSION_NUMBER"}
)
"""OpenSSL reasons raised before anything reached the platform: vtlab could not offer what it meant to."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """One TLS handshake attempt: completed (`version`, `cipher`) or not (`reason`, OpenSSL's words)."""

    ok: bool
    version: str | None = None
    cipher: str | None = None
    reason: str | None = None
    der: bytes | None = None

    def answer(self) -> dict[str, Any]:
        if self.ok:
            return {"handshake": "completed", "version": self.version, "cipher": self.cipher}
        return {"handshake": "failed", "tls_alert": self.reason}


def certificate_details(der: bytes) -> dict[str, Any]:
    """The facts of a certificate a report shows: subject, issuer, serial, validity, names, fingerprint."""
    cert = x509.load_der_x509_certificate(der)
    names: list[str] = []
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))]
    key = cert.public_key()
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "subject_alt_names": names,
        "public_key": f"{type(key).__name__.lstrip('_')} {getattr(key, 'key_size', '?')} bits",
        "signature_hash": cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else None,
        "sha256": hashlib.sha256(der).hexdigest(),
    }


def client_context(
    *,
    version: TlsVersionName | None = None,
    max_version: TlsVersionName | None = None,
    ciphers: str | None = None,
    ca: Path | None = None,
    verify: bool = False,
    cert: Path | None = None,
    key: Path | None = None,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """A client context that offers exactly what a probe needs. Legacy versions and suites need OpenSSL's
    security level 0; vtlab's own connections never use this. CannotCheck when OpenSSL cannot offer it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if ca is not None:
            ctx.load_verify_locations(str(ca))
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    legacy = version in ("1.0", "1.1") or ciphers is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if version is not None:
            ctx.minimum_version = VERSIONS[version]
            ctx.maximum_version = VERSIONS[version]
        if max_version is not None:
            ctx.maximum_version = VERSIONS[max_version]
    try:
        ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0" if legacy else "DEFAULT")
    except ssl.SSLError:
        raise CannotCheck(f"this machine's OpenSSL cannot offer the cipher suites `{ciphers}`") from None
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None, password=key_password)
    return ctx


def handshake(
    host: str, port: int, ctx: ssl.SSLContext, *, server_hostname: str | None = None, timeout_s: float = 5.0
) -> Handshake:
    """Connect and shake hands. UnreachableError when nothing accepts the TCP connection; CannotCheck when
    OpenSSL refused on vtlab's side before the platform saw anything."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise UnreachableError(
            f"nothing answers at {host}:{port}: {exc.strerror or exc}",
            fix="check the address in the lab file and that the platform runs",
        ) from None
    try:
        with ctx.wrap_socket(sock, server_hostname=server_hostname or (None if _is_ip(host) else host)) as tls:
            der = tls.getpeercert(binary_form=True)
            cipher = tls.cipher()
            return Handshake(True, tls.version(), cipher[0] if cipher else None, None, der)
    except ssl.SSLCertVerificationError as exc:
        return Handshake(False, reason=f"CERTIFICATE_VERIFY_FAILED: {exc.verify_message}")
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        if reason in CLIENT_SIDE_REASONS:
            raise CannotCheck(f"this machine's OpenSSL refused to offer the handshake ({reason})") from None
        return Handshake(False, reason=reason)
    except (ConnectionError, TimeoutError, OSError) as exc:
        return Handshake(False, reason=f"connection closed during the handshake ({type(exc).__name__})")
    finally:
        sock.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def peer_certificate(
    host: str,
    port: int,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    key_password: str | None = None,
    timeout_s: float = 5.0,
) -> dict[str, Any] | None:
    """The platform's certificate details, read without verifying it (for the evidence)."""
    hs = handshake(host, port, client_context(cert=cert, key=key, key_password=key_password), timeout_s=timeout_s)
    return certificate_details(hs.der) if hs.der else None


def probe_version(
    host: str,
    port: int,
    version: TlsVersionName,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    key_password: str | None = None,
    timeout_s: float = 5.0,
) -> CheckResult:
    """Offer only TLS `version`. Completed: the platform accepts it (a finding for 1.0/1.1)."""
    request = {
        "address": f"{host}:{port}",
        "tls_version_offered": version,
        "client_certificate": cert.name if cert else None,
    }
    hs = handshake(
        host, port, client_context(version=version, cert=cert, key=key, key_password=key_password), timeout_s=timeout_s
    )
    if hs.ok:
        details = certificate_details(hs.der) if hs.der else None
        return accepted(
            f"the platform completed a TLS {version} handshake ({hs.cipher})", request, hs.answer(), details
        )
    return refused(f"TLS {version} refused: {hs.reason}", request, hs.answer())


def probe_weak_ciphers(
    host: str,
    port: int,
    *,
    classes: Mapping[str, str] = WEAK_CIPHER_CLASSES,
    cert: Path | None = None,
    key: Path | None = None,
    key_password: str | None = None,
    timeout_s: float = 5.0,
) -> CheckResult:
    """Offer each class of weak suites alone (TLS 1.2 at most). Any completed handshake is a finding."""
    answers: dict[str, Any] = {}
    skipped: list[str] = []
    for name, spec in classes.items():
        try:
            ctx = client_context(max_version="1.2", ciphers=spec, cert=cert, key=key, key_password=key_password)
            hs = handshake(host, port, ctx, timeout_s=timeout_s)
        except CannotCheck as exc:
            skipped.append(name)
            answers[name] = {"handshake": "not offered", "why": exc.reason}
            continue
        answers[name] = hs.answer()
        if hs.ok:
            found = {
                "address": f"{host}:{port}",
                "cipher_class": name,
                "ciphers_offered": spec,
                "max_tls_version": "1.2",
            }
            details = certificate_details(hs.der) if hs.der else None
            return accepted(
                f"the platform completed a handshake with the weak suite {hs.cipher} ({name})", found, answers, details
            )
    if len(skipped) == len(classes):
        raise CannotCheck("this machine's OpenSSL can offer none of the weak cipher suites")
    request = {
        "address": f"{host}:{port}",
        "cipher_classes": [n for n in classes if n not in skipped],
        "max_tls_version": "1.2",
    }
    alerts = ", ".join(f"{n}: {a.get('tls_alert')}" for n, a in answers.items() if n not in skipped)
    return refused(f"every weak cipher suite refused ({alerts})", request, answers)


def hostname_matches(details: Mapping[str, Any], hostname: str) -> bool:
    """RFC 6125 in short: an IP address against IP SANs, a name against DNS SANs (one leading wildcard)."""
    names = [str(n).lower() for n in details.get("subject_alt_names", [])]
    host = hostname.lower().rstrip(".")
    if _is_ip(host):
        return str(ipaddress.ip_address(host)) in names
    return any(n == host or (n.startswith("*.") and "." in host and host.split(".", 1)[1] == n[2:]) for n in names)


def check_server_certificate(
    host: str,
    port: int,
    *,
    ca: Path | None,
    hostname: str | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    key_password: str | None = None,
    now: dt.datetime | None = None,
    timeout_s: float = 5.0,
) -> CheckResult:
    """Would a careful client accept the platform's certificate? OpenSSL decides (chain to `ca`, validity,
    host name); the facts beside its word are listed. Outcome OK, or ACCEPTED with what is wrong (the
    platform offers a certificate a client must refuse: a finding)."""
    from harness.outcomes import Outcome

    name = hostname or host
    details = peer_certificate(host, port, cert=cert, key=key, key_password=key_password, timeout_s=timeout_s)
    request = {"address": f"{host}:{port}", "expected_host": name, "expected_ca": _ca_subject(ca)}
    if details is None:
        raise CannotCheck(f"the platform at {host}:{port} presented no certificate")
    when = now or dt.datetime.now(dt.UTC)
    wrong: list[str] = []
    if dt.datetime.fromisoformat(details["not_after"]) < when:
        wrong.append(f"expired on {details['not_after']}")
    if dt.datetime.fromisoformat(details["not_before"]) > when:
        wrong.append(f"not valid before {details['not_before']}")
    if not hostname_matches(details, name):
        wrong.append(f"not valid for `{name}` (names: {', '.join(details['subject_alt_names']) or 'none'})")
    ctx = client_context(verify=True, ca=ca, cert=cert, key=key, key_password=key_password)
    hs = handshake(host, port, ctx, server_hostname=name, timeout_s=timeout_s)
    verdict = {"openssl": "verified" if hs.ok else hs.reason}
    if not hs.ok and hs.reason and "CERTIFICATE_VERIFY_FAILED" in hs.reason and not wrong:
        wrong.append(f"not issued by the expected CA ({hs.reason.split(': ', 1)[-1]})")
    if hs.ok and not wrong:
        return CheckResult(
            Outcome.OK,
            f"certificate of {details['subject']} verified for `{name}` until {details['not_after']}",
            request,
            verdict,
            details,
        )
    if hs.ok:  # OpenSSL verified what the explicit facts refute: report both
        wrong.append("(OpenSSL verified it nevertheless)")
    return CheckResult(
        Outcome.ACCEPTED,
        "the platform presents a certificate a client must refuse: " + "; ".join(wrong),
        request,
        verdict,
        details,
    )


def _ca_subject(ca: Path | None) -> str | None:
    if ca is None:
        return None
    try:
        return x509.load_pem_x509_certificate(ca.read_bytes()).subject.rfc4514_string()
    except (OSError, ValueError):
        return str(ca.name)
