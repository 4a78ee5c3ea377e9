"""`vtlab verify`: every signature of a report (intact, who signed it, trusted, what it covers), the bytes
after the PDF's last `%%EOF`, and the evidence bundle next to the report against the SHA-256 manifest
embedded in it (no file missing, changed or added; no SQLite side file).

Without trust anchors (`--trust`) a signature proves only that *somebody* signed: anyone can make a
certificate with the right names. So verification then fails unless the user accepts that explicitly
(`accept_untrusted`), and it prints the signers' certificate fingerprints to compare out of band."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.report.manifest import compare

_EOF = re.compile(rb"%%EOF")
_EOL = b"\r\n"


@dataclass(slots=True)
class VerifyResult:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)  # signatures nobody vouched for (accepted by the user)

    @property
    def ok(self) -> bool:
        return not self.problems


def trailing_bytes(data: bytes) -> int | None:
    """How many bytes follow the last `%%EOF` beyond its end-of-line (0: none); None if there is no `%%EOF`.

    pyHanko judges what the signatures cover by revisions; bytes appended after the last revision belong to
    none, so they are checked here."""
    last = None
    for m in _EOF.finditer(data):
        last = m
    if last is None:
        return None
    tail = data[last.end() :]
    return len(tail) if tail.strip(_EOL) else 0


def fingerprint(cert: Any) -> str:
    """SHA-256 of the certificate's DER, as colon-separated hex (what certificate viewers show)."""
    digest = hashlib.sha256(cert.dump()).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _load_certs(paths: list[Path]) -> list[Any]:
    from pyhanko.keys import load_certs_from_pemder

    certs = []
    for p in paths:
        if not p.is_file():
            raise InputError("trust certificate not found", place=str(p), fix="give a PEM or DER certificate file")
        try:
            certs.extend(load_certs_from_pemder([str(p)]))
        except Exception as exc:
            raise InputError(
                f"not a certificate: {exc}", place=str(p), fix="give a PEM or DER certificate file"
            ) from exc
    return certs


def verify_report(
    pdf: Path, trust: list[Path], bundle: Path | None = None, *, accept_untrusted: bool = False
) -> VerifyResult:
    """Check `pdf` and its evidence bundle (default: the PDF's folder). With no `trust` certificates the
    result fails unless `accept_untrusted`; then it passes with `untrusted` naming the signatures."""
    import logging

    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import enumerate_sig_fields
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    from harness.report.pdf import embedded_manifest, embedded_manifest_at

    for noisy in ("pyhanko", "pyhanko_certvalidator"):  # their tracebacks repeat what the lines below say
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if not pdf.is_file():
        raise InputError("report PDF not found", place=str(pdf), fix="give the path of report.pdf")
    res = VerifyResult()
    data = pdf.read_bytes()
    roots = _load_certs(trust)
    res.lines.append(f"report: {pdf}")
    extra = trailing_bytes(data)
    if extra is None:
        res.problems.append("the PDF has no %%EOF marker; it was cut short or is not a PDF")
        res.lines.append("  NO %%EOF marker")
    elif extra:
        res.problems.append(
            f"{extra} bytes follow the PDF's last %%EOF; no signature covers them "
            "(something was appended after signing)"
        )
        res.lines.append(f"  {extra} BYTES AFTER THE LAST %%EOF (covered by no signature)")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        sig_fields = list(enumerate_sig_fields(reader))
        signatures = list(reader.embedded_signatures)
    except Exception as exc:
        res.problems.append(f"the PDF cannot be read ({type(exc).__name__}: {exc}); it was damaged or altered")
        res.lines.append(f"{pdf}: unreadable PDF")
        return res
    for name, value, _ in sig_fields:
        if value is None:
            res.lines.append(f"  field {name}: not signed yet")
    signed_revisions: list[int] = []
    for sig in signatures:
        name = sig.field_name
        vc = ValidationContext(trust_roots=roots, allow_fetching=False)
        try:
            st = validate_pdf_signature(sig, vc)
        except Exception as exc:
            res.problems.append(f"signature `{name}`: cannot be validated ({type(exc).__name__}: {exc})")
            res.lines.append(f"  field {name}: ERROR {exc}")
            continue
        signed_revisions.append(sig.signed_revision)
        cert = st.signing_cert
        when = sig.self_reported_timestamp.isoformat() if sig.self_reported_timestamp else "?"
        intact = bool(st.intact and st.valid)
        if st.coverage == SignatureCoverageLevel.ENTIRE_FILE:
            cover = "covers the entire document"
        elif st.coverage == SignatureCoverageLevel.ENTIRE_REVISION:
            level = st.modification_level.name if st.modification_level is not None else "?"
            cover = f"covers its revision; later changes: {level}"
        else:
            cover = "does NOT cover the document"
        trusted = bool(st.trusted) and bool(roots)
        res.lines.append(f"  field {name}:")
        res.lines.append(f"    signer:      {cert.subject.human_friendly if cert else '?'}")
        res.lines.append(f"    issuer:      {cert.issuer.human_friendly if cert else '?'}")
        res.lines.append(f"    SHA-256:     {fingerprint(cert) if cert else '?'}")
        res.lines.append(f"    signed at:   {when} (as the signer's clock said)")
        if st.timestamp_validity is not None:
            ts = st.timestamp_validity
            res.lines.append(
                f"    time stamp:  {ts.timestamp.isoformat()} "
                f"({'trusted' if ts.trusted else 'NOT trusted'} time-stamping authority)"
            )
        res.lines.append(
            f"    intact: {'yes' if intact else 'NO'}; trusted: "
            f"{'yes' if trusted else ('NO' if roots else 'UNKNOWN (no --trust given)')}; {cover}"
        )
        if not intact:
            res.problems.append(f"signature `{name}` is broken: the document changed after it was signed")
        if roots and not trusted:
            res.problems.append(f"signature `{name}` is not trusted by the given --trust certificate(s)")
        if not roots:
            res.untrusted.append(str(name))
        if st.coverage not in (SignatureCoverageLevel.ENTIRE_FILE, SignatureCoverageLevel.ENTIRE_REVISION):
            res.problems.append(f"signature `{name}` does not cover the document")
        elif st.coverage == SignatureCoverageLevel.ENTIRE_REVISION and not st.docmdp_ok:
            res.problems.append(
                f"signature `{name}`: the document was changed after signing beyond "
                f"form filling and signatures ({st.modification_level})"
            )
    if not signatures:
        res.problems.append("the report carries no signature; nothing vouches for the PDF itself")
    elif res.untrusted and not accept_untrusted:
        res.problems.append(
            "no --trust certificate given: the signatures are intact, but nothing shows who made "
            "them (anyone can make a certificate with these names); give the CA or signer "
            "certificate with --trust, or check the fingerprints above with the signers and pass "
            "--accept-untrusted"
        )
    # the evidence bundle, by the manifest as it was signed
    manifest = None
    try:
        manifest = embedded_manifest(data)
        for rev in sorted(set(signed_revisions)):
            if embedded_manifest_at(reader, rev) != manifest:
                res.problems.append(f"the embedded manifest differs from the one signed in revision {rev}")
    except Exception as exc:
        res.problems.append(f"the embedded manifest cannot be read ({exc})")
    if manifest is None:
        res.problems.append("the report has no embedded evidence manifest")
        return res
    bundle = bundle or pdf.parent
    problems, notes = compare(manifest, bundle, report=pdf)
    res.lines.append(f"evidence bundle: {bundle} ({len(manifest.get('files', {}))} files in the manifest)")
    for p in problems:
        res.lines.append(f"  MISMATCH {p}")
        res.problems.append(f"evidence {p}")
    for n in notes:
        res.lines.append(f"  note: {n}")
    if not problems:
        res.lines.append("  all files match the manifest, and the folder holds nothing else")
    return res
