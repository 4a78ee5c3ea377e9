"""`vtlab sign`: a PAdES signature (pyHanko) in one of the report's signature fields, as an incremental
update, so a second signer keeps the first signature valid. Passphrases come from a file or an environment
variable, never from the command line."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.report.pdf import SIG_FIELDS


def read_passphrase(file: str | None, env: str | None = "VTLAB_P12_PASSPHRASE") -> bytes | None:
    """The PKCS#12 passphrase from `file` (first line) or the environment variable `env`; None if neither."""
    if file:
        p = Path(file)
        if not p.is_file():
            raise InputError(
                "passphrase file not found", place=file, fix="give a file whose first line is the passphrase"
            )
        return p.read_text(encoding="utf-8").splitlines()[0].encode() if p.stat().st_size else b""
    if env and env in os.environ:
        return os.environ[env].encode()
    return None


def _signer(p12: Path, passphrase: bytes | None) -> Any:
    from pyhanko.sign import signers

    if not p12.is_file():
        raise InputError("PKCS#12 file not found", place=str(p12), fix="give the signer's .p12/.pfx file with --p12")
    try:
        signer = signers.SimpleSigner.load_pkcs12(str(p12), passphrase=passphrase)
    except Exception:
        signer = None
    if signer is None:
        raise InputError(
            "cannot open the PKCS#12 file: wrong passphrase, or not a PKCS#12 file",
            place=str(p12),
            fix="put the passphrase in a file (--passphrase-file FILE) or in VTLAB_P12_PASSPHRASE "
            "(or the variable named by --passphrase-env)",
        )
    return signer


def field_states(pdf: bytes) -> dict[str, bool]:
    """Signature field name -> signed?"""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import enumerate_sig_fields

    r = PdfFileReader(io.BytesIO(pdf), strict=False)
    return {str(name): value is not None for name, value, _ in enumerate_sig_fields(r)}


def sign_pdf(
    pdf: Path,
    p12: Path,
    passphrase: bytes | None,
    *,
    field: str | None = None,
    reason: str | None = None,
    location: str | None = None,
    tsa: str | None = None,
    out: Path | None = None,
) -> tuple[Path, str]:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    if not pdf.is_file():
        raise InputError("report PDF not found", place=str(pdf), fix="render it with `vtlab report RUN_DIR` first")
    data = pdf.read_bytes()
    try:
        states = field_states(data)
    except Exception as exc:
        raise InputError(
            f"not a readable PDF: {exc}", place=str(pdf), fix="give the report.pdf vtlab rendered"
        ) from exc
    if field is None:
        field = next((f for f in SIG_FIELDS if f in states and not states[f]), None)
        if field is None:
            raise InputError("every signature field of the report is signed already", place=str(pdf))
    elif field not in states:
        raise InputError(
            f"the report has no signature field `{field}`",
            place=str(pdf),
            fix=f"use one of {', '.join(states) or '(none)'}; render the report with vtlab 0.1 or later",
        )
    elif states[field]:
        raise InputError(
            f"signature field `{field}` is signed already",
            place=str(pdf),
            fix="the other party signs the other field (--field customer|supplier)",
        )
    signer = _signer(p12, passphrase)
    timestamper = None
    if tsa:
        from pyhanko.sign.timestamps import HTTPTimeStamper

        timestamper = HTTPTimeStamper(tsa)
    meta = signers.PdfSignatureMetadata(
        field_name=field,
        reason=reason,
        location=location,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        name=signer.signing_cert.subject.human_friendly if signer.signing_cert else None,
    )
    w = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    buf = io.BytesIO()
    signers.PdfSigner(meta, signer=signer, timestamper=timestamper).sign_pdf(w, output=buf)
    target = out or pdf
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(target)
    return target, field
