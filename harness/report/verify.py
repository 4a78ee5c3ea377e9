"""`vtlab verify`: every signature of a report (intact, trusted, what it covers) and the evidence bundle
next to the report against the SHA-256 manifest embedded in it."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.report.manifest import compare


@dataclass(slots=True)
class VerifyResult:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _load_certs(paths: list[Path]) -> list[Any]:
    from pyhanko.keys import load_certs_from_pemder

    certs = []
    for p in paths:
        if not p.is_file():
            raise InputError("trust certificate not found", place=str(p), fix="give a PEM or DER certificate file")
        try:
            certs.extend(load_certs_from_pemder([str(p)]))
        except Exception as exc:
            raise InputError(f"not a certificate: {exc}", place=str(p),
                             fix="give a PEM or DER certificate file") from exc
    return certs


def verify_report(pdf: Path, trust: list[Path], bundle: Path | None = None) -> VerifyResult:
    import logging

    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import enumerate_sig_fields
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    from harness.report.pdf import embedded_manifest

    for noisy in ("pyhanko", "pyhanko_certvalidator"):  # their tracebacks repeat what the lines below say
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if not pdf.is_file():
        raise InputError("report PDF not found", place=str(pdf), fix="give the path of report.pdf")
    res = VerifyResult()
    data = pdf.read_bytes()
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        sig_fields = list(enumerate_sig_fields(reader))
    except Exception as exc:
        res.problems.append(f"the PDF cannot be read ({type(exc).__name__}: {exc}); it was damaged or altered")
        res.lines.append(f"{pdf}: unreadable PDF")
        return res
    roots = _load_certs(trust)
    res.lines.append(f"report: {pdf}")
    signed = 0
    for name, value, _ in sig_fields:
        if value is None:
            res.lines.append(f"  field {name}: not signed yet")
    for sig in reader.embedded_signatures:
        signed += 1
        name = sig.field_name
        vc = ValidationContext(trust_roots=roots, allow_fetching=False) if roots else \
            ValidationContext(trust_roots=[], allow_fetching=False)
        try:
            st = validate_pdf_signature(sig, vc)
        except Exception as exc:
            res.problems.append(f"signature `{name}`: cannot be validated ({type(exc).__name__}: {exc})")
            res.lines.append(f"  field {name}: ERROR {exc}")
            continue
        who = st.signing_cert.subject.human_friendly if st.signing_cert else "?"
        when = sig.self_reported_timestamp.isoformat() if sig.self_reported_timestamp else "?"
        intact = bool(st.intact and st.valid)
        if st.coverage == SignatureCoverageLevel.ENTIRE_FILE:
            cover = "covers the entire document"
        elif st.coverage == SignatureCoverageLevel.ENTIRE_REVISION:
            level = st.modification_level.name if st.modification_level is not None else "?"
            cover = f"covers its revision; later changes: {level}"
        else:
            cover = "does NOT cover the document"
        trusted = bool(st.trusted)
        res.lines.append(f"  field {name}: signed by {who} at {when}")
        res.lines.append(f"    intact: {'yes' if intact else 'NO'}; trusted: "
                         f"{'yes' if trusted else ('NO' if roots else 'no (no --trust given)')}; {cover}")
        if not intact:
            res.problems.append(f"signature `{name}` is broken: the document changed after it was signed")
        if roots and not trusted:
            res.problems.append(f"signature `{name}` is not trusted by the given --trust certificate(s)")
        if st.coverage not in (SignatureCoverageLevel.ENTIRE_FILE, SignatureCoverageLevel.ENTIRE_REVISION):
            res.problems.append(f"signature `{name}` does not cover the document")
        elif st.coverage == SignatureCoverageLevel.ENTIRE_REVISION and not st.docmdp_ok:
            res.problems.append(f"signature `{name}`: the document was changed after signing beyond "
                                f"form filling and signatures ({st.modification_level})")
    if signed == 0:
        res.problems.append("the report carries no signature; nothing vouches for the PDF itself")
    # the evidence bundle
    manifest = None
    try:
        manifest = embedded_manifest(data)
    except Exception as exc:
        res.problems.append(f"the embedded manifest cannot be read ({exc})")
    if manifest is None:
        res.problems.append("the report has no embedded evidence manifest")
        return res
    bundle = bundle or pdf.parent
    problems, notes = compare(manifest, bundle)
    res.lines.append(f"evidence bundle: {bundle} ({len(manifest.get('files', {}))} files in the manifest)")
    for p in problems:
        res.lines.append(f"  MISMATCH {p}")
        res.problems.append(f"evidence {p}")
    for n in notes:
        res.lines.append(f"  note: {n}")
    if not problems:
        res.lines.append("  all files match the manifest")
    return res
