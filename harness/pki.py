"""Test-only PKI: a CA, a server certificate for 127.0.0.1/localhost, and client certificates.

Generated into a directory (never committed; fixtures/certs/generated/ is ignored by git).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClientCert", "TestPki", "TlsFiles", "make_pki"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Server side TLS material (PEM paths). require_certificate: clients must present a cert."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True


@dataclass(frozen=True, slots=True)
class ClientCert:
    name: str
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TestPki:
    """A throw-away CA with a server certificate and client certificates, for tests and the lab."""

    __test__ = False  # not a pytest test class, despite its name

    ca_cert: Path
    ca_key: Path | None  # None: the CA key was never written (nothing more can be issued)
    server_cert: Path
    server_key: Path
    clients: dict[str, ClientCert] = field(default_factory=dict)

    def server_tls(self, *, require_client_cert: bool = True) -> TlsFiles:
        return TlsFiles(
            cafile=self.ca_cert,
            certfile=self.server_cert,
            keyfile=self.server_key,
            require_certificate=require_client_cert,
        )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtlab test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Created 0600 from the start: the key is never readable by others, not even for a moment."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
    days: int,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(
    directory: Path,
    clients: list[str] | tuple[str, ...] = ("client",),
    *,
    days: int = 2,
    keep_ca_key: bool = True,
) -> TestPki:
    """Write ca.pem(/ca.key), server.pem/server.key and client-<name>.pem/.key for each client CN.

    keep_ca_key=False (the reference lab's choice): the CA's private key exists only in memory while the
    certificates are issued and is never written, so nobody can issue another certificate afterwards.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("vtlab test CA"))
        .issuer_name(_name("vtlab test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_cert_path = directory / "ca.pem"
    _write_cert(ca_cert, ca_cert_path)
    ca_key_path: Path | None = None
    if keep_ca_key:
        ca_key_path = directory / "ca.key"
        _write_key(ca_key, ca_key_path)

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue("localhost", server_key, ca_cert, ca_key, server=True, days=days)
    _write_cert(server_cert, directory / "server.pem")
    _write_key(server_key, directory / "server.key")

    issued: dict[str, ClientCert] = {}
    for cn in clients:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cn)
        k = ec.generate_private_key(ec.SECP256R1())
        c = _issue(cn, k, ca_cert, ca_key, server=False, days=days)
        cp, kp = directory / f"client-{safe}.pem", directory / f"client-{safe}.key"
        _write_cert(c, cp)
        _write_key(k, kp)
        issued[cn] = ClientCert(cn, cp, kp)
    return TestPki(
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        clients=issued,
    )
