"""`vtlab report`, `vtlab sign`, `vtlab verify`, `vtlab allure`, and the report rendered after every run.

Reports read the evidence store, the contract and the lab file of a run folder; they never re-run anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.errors import InputError

EXIT_APPROVED, EXIT_NOT_APPROVED, EXIT_BAD_INPUT = 0, 1, 2

# optional dependency -> what to install
_INSTALL = {
    "weasyprint": "pip install weasyprint (and the Debian packages in tools/system-packages.txt)",
    "pyhanko": "pip install pyhanko pyhanko-certvalidator",
    "matplotlib": "pip install matplotlib",
    "jinja2": "pip install jinja2",
}


def _run_dir(value: str | None) -> Path:
    run_dir = Path(value or "reports/latest")
    if not (run_dir / "evidence.sqlite").exists():
        raise InputError("no evidence store (evidence.sqlite) in this folder", place=str(run_dir),
                         fix="give a run folder that a run wrote, e.g. reports/latest")
    return run_dir


def render_report(run_dir: Path, lang: str = "nb", pdf: bool = True, force: bool = False) -> dict[str, Any]:
    """Render report.html (and report.pdf) into `run_dir`. Returns the effective summary (with history),
    plus the paths written under `_paths`."""
    from harness.report.history import apply_history
    from harness.report.html import build_context, render_html
    from harness.report.i18n import Lang
    from harness.report.manifest import REPORT_HTML, compute_manifest, seal_run_folder, with_file
    from harness.report.plots import scenario_plots, write_inside, write_plots
    from harness.report.summary import write_summary

    language = Lang(lang)
    out_pdf = run_dir / "report.pdf"
    if pdf and out_pdf.exists() and not force and _is_signed(out_pdf):
        raise InputError("report.pdf is signed already; rendering again would replace the signed report",
                         place=str(out_pdf), fix="move the signed report away first, or pass --force")
    # every run, also a killed one: no -wal/-shm left, else a reader sees what no hash covers
    seal_run_folder(run_dir)
    summary = write_summary(run_dir)
    effective = apply_history(run_dir, summary)
    from harness.evidence import EvidenceReader

    reader = EvidenceReader(run_dir)
    plots = {}
    try:
        for sc in summary["scenarios"]:
            rec = next((r for r in reader.scenarios() if r.id == sc["id"]), None)
            crits = rec.definition.get("resolved_criteria", []) if rec else []
            plots[sc["id"]] = scenario_plots(reader, sc["id"], crits, language)
    finally:
        reader.close()
    write_plots(run_dir, plots)
    # The page shows the manifest of the bundle without itself; the PDF embeds that manifest plus the
    # page's own hash (the PDF is vouched for by its signatures, so it is in no manifest).
    manifest = compute_manifest(run_dir)
    context = build_context(run_dir, effective, manifest, language, plots)
    html = render_html(context)
    out_html = run_dir / REPORT_HTML
    write_inside(run_dir.resolve(), run_dir.resolve() / REPORT_HTML, html.encode("utf-8"))
    sealed = with_file(manifest, run_dir, REPORT_HTML)
    paths = [out_html]
    if pdf:
        from harness.report.pdf import render_pdf

        paths.append(render_pdf(html, sealed, out_pdf))
    effective["_paths"] = paths
    return effective


def _is_signed(pdf: Path) -> bool:
    """Does report.pdf carry a signature? When pyHanko is missing or cannot read the file, a /ByteRange in
    its bytes counts as one: replacing a signed report is the mistake that cannot be undone."""
    try:
        data = pdf.read_bytes()
    except OSError:
        return False
    if b"/ByteRange" in data:
        return True
    try:
        import io

        from pyhanko.pdf_utils.reader import PdfFileReader

        return bool(PdfFileReader(io.BytesIO(data), strict=False).embedded_signatures)
    except Exception:
        return False


def after_run(run_dir: Path) -> None:
    """Called by `vtlab run` after every run: report.html and report.pdf in Norwegian. Never fails the run."""
    try:
        summary = render_report(Path(run_dir), "nb")
        for p in summary["_paths"]:
            print(f"vtlab: report {p}")
    except ImportError as exc:
        name = (exc.name or "").split(".")[0]
        how = _INSTALL.get(name, "pip install " + (name or "?"))
        print(f"vtlab: report not rendered: {name or exc} is missing; install it: {how}",
              file=sys.stderr)
    except OSError as exc:
        if "cannot load library" in str(exc) or "pango" in str(exc).lower():
            print("vtlab: report not rendered: WeasyPrint cannot load its system libraries; "
                  "install the packages in tools/system-packages.txt", file=sys.stderr)
        else:
            print(f"vtlab: report not rendered: {exc}", file=sys.stderr)
    except Exception as exc:
        print(f"vtlab: report not rendered: {type(exc).__name__}: {exc}", file=sys.stderr)


# --- commands ------------------------------------------------------------------------------------------
def _report(args: argparse.Namespace) -> int:
    from harness.report.table import requirement_table

    run_dir = _run_dir(args.run_dir)
    summary = render_report(run_dir, args.lang, pdf=not args.no_pdf, force=args.force)
    for line in requirement_table(summary):
        print(line)
    print(f"\nverdict: {summary['verdict'].upper()} - {summary['reason']}")
    for p in summary["_paths"]:
        print(f"report: {p}")
    return EXIT_APPROVED if summary["verdict"] == "approved" else EXIT_NOT_APPROVED


def _sign(args: argparse.Namespace) -> int:
    from harness.report.signing import read_passphrase, sign_pdf

    passphrase = read_passphrase(args.passphrase_file, args.passphrase_env)
    out = sign_pdf(Path(args.pdf), Path(args.p12), passphrase, field=args.field, reason=args.reason,
                   location=args.location, tsa=args.tsa, out=Path(args.out) if args.out else None)
    print(f"vtlab: signed field `{out[1]}` of {out[0]}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from harness.report.verify import verify_report

    result = verify_report(Path(args.pdf), [Path(t) for t in args.trust],
                           bundle=Path(args.bundle) if args.bundle else None,
                           accept_untrusted=args.accept_untrusted)
    for line in result.lines:
        print(line)
    if not result.ok:
        print("\nverify: FAILED - " + "; ".join(result.problems))
        return 1
    if result.untrusted:
        bar = "!" * 78
        print(f"\n{bar}\nverify: UNTRUSTED - the PDF and the evidence are intact, but NOTHING shows who signed:"
              "\n  no --trust certificate was given and --accept-untrusted was. Anyone can make a certificate"
              "\n  with these names. Compare each SHA-256 fingerprint above with the signer, out of band."
              f"\n{bar}")
        return 0
    print("\nverify: OK")
    return 0


def _allure(args: argparse.Namespace) -> int:
    from harness.report.allure_build import build_allure

    run_dir = _run_dir(args.run_dir)
    if not args.out and _is_signed(run_dir / "report.pdf"):
        raise InputError("the report of this run is signed; a new file in its folder makes `vtlab verify` fail",
                         place=str(run_dir), fix="write the Allure page elsewhere with --out FILE")
    out = build_allure(run_dir, Path(args.results) if args.results else None,
                       Path(args.out) if args.out else None)
    print(f"vtlab: allure report {out}")
    return 0


def register(subparsers: Any) -> None:
    rep = subparsers.add_parser("report", help="render the acceptance report (HTML and PDF) of a run folder")
    rep.add_argument("run_dir", nargs="?", help="run folder (default: reports/latest)")
    rep.add_argument("--lang", choices=["nb", "en"], default="nb", help="report language (default: nb)")
    rep.add_argument("--no-pdf", action="store_true", help="render the HTML report only")
    rep.add_argument("--force", action="store_true", help="replace a report.pdf that is signed already")
    rep.set_defaults(func=_report)

    sign = subparsers.add_parser("sign", help="sign a report PDF (PAdES) in one of its signature fields")
    sign.add_argument("pdf", help="report PDF, e.g. reports/latest/report.pdf (signed in place unless --out)")
    sign.add_argument("--p12", required=True, help="PKCS#12 file with the signer's key and certificate")
    sign.add_argument("--field", choices=["customer", "supplier"],
                      help="signature field (default: the first one not yet signed)")
    sign.add_argument("--reason", help="reason shown with the signature, e.g. 'Godkjent'")
    sign.add_argument("--location", help="where it was signed")
    sign.add_argument("--tsa", help="RFC 3161 time-stamping authority URL")
    sign.add_argument("--passphrase-file", help="file holding the PKCS#12 passphrase")
    sign.add_argument("--passphrase-env", default="VTLAB_P12_PASSPHRASE",
                      help="environment variable holding the passphrase (default: VTLAB_P12_PASSPHRASE)")
    sign.add_argument("--out", help="write the signed PDF here instead of in place")
    sign.set_defaults(func=_sign)

    ver = subparsers.add_parser("verify", help="check a report's signatures and its evidence bundle")
    ver.add_argument("pdf", help="report PDF")
    ver.add_argument("--trust", action="append", default=[],
                     help="trusted CA or signer certificate (PEM/DER); repeatable")
    ver.add_argument("--bundle", help="run folder holding the evidence (default: the PDF's folder)")
    ver.add_argument("--accept-untrusted", action="store_true",
                     help="without --trust: exit 0 when all else holds, but say UNTRUSTED (check the printed "
                          "fingerprints with the signers yourself)")
    ver.set_defaults(func=_verify)

    al = subparsers.add_parser("allure", help="build a static single-file Allure-style report, offline")
    al.add_argument("run_dir", nargs="?", help="run folder (default: reports/latest)")
    al.add_argument("--results", help="allure-results folder (default: RUN_DIR/allure-results)")
    al.add_argument("--out", help="output HTML file (default: RUN_DIR/allure-report.html)")
    al.set_defaults(func=_allure)
