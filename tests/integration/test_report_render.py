"""The acceptance report end to end, from evidence stores written directly (fast): HTML and PDF render,
nothing loads from the network, an interrupted run is marked incomplete, retests show their history,
the PDF pages look right as pictures, two signers sign, and `vtlab verify` catches tampering with the
PDF and with the evidence bundle."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from harness.cli import main
from harness.report.commands import render_report
from harness.transports.base import Message

SCENARIO = "alarmknapp"  # the scenario id make_run's runs carry

SCENARIO_TEXT = """
title: Alarmknapp når responssenteret
covers: [TA-1.1, TA-1.4]
user: persona/ragnhild-87
devices:
  knapp: {{model: safety_alarm}}
repeat: {n}
pace: 200/s
drain: 300ms
steps:
  - note: {{text: "Testerens notat: alt koblet opp som avtalt."}}
  - trigger: {{device: knapp, event: button_press}}
  - expect_alarm: {{from: knapp, within: {within}}}
  - manual: {{instruction: Trykk, expect: Alarm}}
criteria:
  - {{metric: alarm_latency, p99: "<= 30s", marginal: "<= 20s", requirement: TA-1.1}}
  - {{metric: lost, count: "== 0"}}
"""


def make_run(report_dir: Path, run_id: str, *, lost: int = 0, finish: bool = True, n: int = 40) -> Path:
    """A run folder written by the real session and engine (on the in-memory transport, against a MOCK
    platform that routes every alarm but the first `lost`): the evidence is what a run writes.
    `finish=False` cuts the store back to what a run killed half-way leaves (no `ended`, scenario running)."""
    import sqlite3

    from harness.contract import load_contract
    from harness.engine import run_and_judge
    from harness.labfile import load_lab
    from harness.scenario.loader import load_scenario
    from harness.session import RunSession
    from tests.helpers import Suite, memory_lab, partial_suite_contract

    work = report_dir.parent / f"work-{run_id}"
    lab = load_lab(memory_lab(work))
    contract, src = load_contract(partial_suite_contract())
    text = SCENARIO_TEXT.format(n=n, within="300ms" if lost else "2s")
    plan = load_scenario(Suite(work).scenario(SCENARIO, text), contract, lab, SCENARIO)
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=report_dir, run_id=run_id)
    session.start()
    bus = session.bed.memory_bus()
    seen: list[str] = []

    def platform(msg: Message) -> None:
        event = json.loads(msg.payload)
        seen.append(event["cid"])
        if len(seen) > lost:
            alarm = {**event, "centre": "rs-vest"}
            bus.deliver(lab.topic("centre_alarm", centre="rs-vest"), json.dumps(alarm).encode())

    bus.add(lab.topic("device_event", device="+"), platform)
    try:
        run_and_judge(plan, session)
    finally:
        session.close()
    run_dir = report_dir / run_id
    if not finish:
        db = sqlite3.connect(run_dir / "evidence.sqlite")
        with db:
            cut = db.execute("SELECT t_ns FROM stimuli ORDER BY t_ns LIMIT 1 OFFSET ?", (n // 2,)).fetchone()[0]
            db.execute("DELETE FROM stimuli WHERE t_ns >= ?", (cut,))
            db.execute("DELETE FROM matches WHERE stimulus_cid NOT IN (SELECT cid FROM stimuli)")
            db.execute("DELETE FROM arrivals WHERE cid NOT IN (SELECT cid FROM stimuli)")
            db.execute("DELETE FROM verdicts")
            db.execute("UPDATE scenarios SET status = 'running', ended = NULL")
            db.execute("UPDATE run SET ended = NULL, status = 'running'")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    return run_dir


# --- certificates for signing (generated, never committed) -----------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtlab test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path) -> dict[str, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("vtlab test CA")).issuer_name(_name("vtlab test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": folder / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("customer", "supplier"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(f"Test {who}")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .sign(ca_key, hashes.SHA256()))
        p12 = pkcs12.serialize_key_and_certificates(
            who.encode(), key, cert, [ca], serialization.BestAvailableEncryption(b"hemmelig-" + who.encode()))
        out[who] = folder / f"{who}.p12"
        out[who].write_bytes(p12)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = (x509.CertificateBuilder().subject_name(_name("other CA")).issuer_name(_name("other CA"))
             .public_key(other_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(other_key, hashes.SHA256()))
    out["other_ca"] = folder / "other-ca.pem"
    out["other_ca"].write_bytes(other.public_bytes(serialization.Encoding.PEM))
    return out


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A failing run, then a retest run that passes, both rendered; returns the retest run's folder."""
    reports = tmp_path_factory.mktemp("reports")
    make_run(reports, "20261101T100000Z-aaaa", lost=3)
    ok = make_run(reports, "20261102T100000Z-bbbb", lost=0)
    render_report(reports / "20261101T100000Z-aaaa", "nb")
    # the retest must start later than the failing run
    render_report(ok, "nb")
    return ok


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- the report --------------------------------------------------------------------------------------
def test_html_has_every_section_and_no_urls(rendered: Path) -> None:
    html = (rendered / "report.html").read_text(encoding="utf-8")
    for needle in ("Akseptansetestrapport", "KS-2026-014", "Leverandør AS (fiktiv)", "sim-1.0", "Testleder (fiktiv)",
                   "Sporbarhetsmatrise", "TA-7.1", "Krav som ikke dekkes av noe scenario", "Avvik", "Testerens notat",
                   "manual step skipped", "SHA-256-manifest", "evidence.sqlite", "Signering", "<svg"):
        assert needle in html, needle
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I)
    assert "@import" not in html
    assert not re.search(r"https?://(?!www\.w3\.org/)", html), "no network address at all (SVG namespaces aside)"


def test_retest_history_marks_deviation_retested_and_verdict_uses_latest(rendered: Path) -> None:
    html = (rendered / "report.html").read_text(encoding="utf-8")
    assert "Leveransen er godkjent." in html
    assert "retestet" in html and "20261101T100000Z-aaaa" in html
    failing = (rendered.parent / "20261101T100000Z-aaaa" / "report.html").read_text(encoding="utf-8")
    assert "Leveransen er ikke godkjent." in failing and "åpent" in failing


def test_interrupted_run_renders_marked_incomplete(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "20261103T100000Z-cccc", finish=False)
    summary = render_report(run_dir, "en", pdf=False)
    assert summary["verdict"] == "incomplete"
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "The test is incomplete – no approval can be given." in html
    assert "INCOMPLETE" in html and "interrupted" in html
    assert "alarm_latency" in html  # what was measured is shown: the 20 alarms sent before the cut
    assert summary["scenarios"][0]["metrics"]["stimuli"] == 20
    assert summary["scenarios"][0]["metrics"]["latency"]["alarm_latency"]["n"] == 20


def test_english_dates_and_numbers(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "20261104T100000Z-dddd")
    render_report(run_dir, "en", pdf=False)
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Acceptance test report" in html and re.search(r"\d{1,2} \w{3} 20\d\d \d\d:\d\d UTC", html)
    nb = render_report(run_dir, "nb", pdf=False)
    assert nb["verdict"] == "approved"
    assert re.search(r"\d\d\.\d\d\.20\d\d kl\. \d\d:\d\d UTC", (run_dir / "report.html").read_text(encoding="utf-8"))


@pytest.mark.skipif(shutil.which("pdftoppm") is None and not os.environ.get("CI"),
                    reason="pdftoppm (poppler-utils) not installed; CI fails instead (tools/system-packages.txt)")
def test_pdf_pages_render_as_a4_pictures(rendered: Path, tmp_path: Path) -> None:
    from PIL import Image

    subprocess.run(["pdftoppm", "-r", "40", "-png", str(rendered / "report.pdf"), str(tmp_path / "p")], check=True)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) >= 4
    for p in pages:
        im = Image.open(p).convert("L")
        w, h = im.size
        assert abs(h / w - 297 / 210) < 0.02  # A4 portrait
        # nothing printed into the right margin (tables cut off would run over it)
        margin = im.crop((int(w * 0.955), int(h * 0.05), w, int(h * 0.95)))
        assert margin.getextrema()[0] > 200, f"{p.name}: something runs into the right margin"


def test_cli_report_exit_codes_and_table(rendered: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no evidence store" in capsys.readouterr().err
    bad = make_run(tmp_path, "20261105T100000Z-eeee", lost=2)
    assert main(["report", str(bad), "--no-pdf"]) == 1
    out = capsys.readouterr().out
    assert "TA-1.4" in out and "FAIL" in out
    assert json.loads((bad / "summary.json").read_text())["verdict"] == "not_approved"


# --- signing and verification ------------------------------------------------------------------------
def test_two_signers_then_verify_and_tampering(rendered: Path, pki: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(rendered, bundle)
    pdf = bundle / "report.pdf"
    assert main(["verify", str(pdf)]) == 1  # unsigned: nothing vouches for the PDF
    pw = tmp_path / "pw"
    pw.write_text("feil\n")
    assert main(["sign", str(pdf), "--p12", str(pki["customer"]), "--passphrase-file", str(pw)]) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    pw.write_text("hemmelig-customer\n")
    assert main(["sign", str(pdf), "--p12", str(pki["customer"]), "--field", "customer",
                 "--passphrase-file", str(pw), "--reason", "Godkjent"]) == 0
    monkeypatch.setenv("VTLAB_P12_PASSPHRASE", "hemmelig-supplier")
    assert main(["sign", str(pdf), "--p12", str(pki["supplier"]), "--field", "supplier"]) == 0
    capsys.readouterr()
    assert main(["verify", str(pdf), "--trust", str(pki["ca"])]) == 0
    out = capsys.readouterr().out
    assert out.count("intact: yes; trusted: yes") == 2 and "all files match the manifest" in out
    assert main(["verify", str(pdf), "--trust", str(pki["other_ca"])]) == 1
    capsys.readouterr()

    # a flipped byte in the evidence store
    db = bundle / "evidence.sqlite"
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    db.write_bytes(bytes(raw))
    assert main(["verify", str(pdf), "--trust", str(pki["ca"])]) == 1
    assert "MISMATCH evidence.sqlite" in capsys.readouterr().out
    raw[len(raw) // 2] ^= 0x01
    db.write_bytes(bytes(raw))
    assert main(["verify", str(pdf), "--trust", str(pki["ca"])]) == 0
    capsys.readouterr()

    # a flipped byte in the PDF (inside the first revision's content, covered by both signatures)
    data = bytearray(pdf.read_bytes())
    at = data.index(b"stream", 2000) + 40
    data[at] ^= 0x01
    pdf.write_bytes(bytes(data))
    assert main(["verify", str(pdf), "--trust", str(pki["ca"])]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_signed_report_is_not_overwritten(rendered: Path, pki: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(rendered, run)
    monkeypatch.setenv("VTLAB_P12_PASSPHRASE", "hemmelig-customer")
    assert main(["sign", str(run / "report.pdf"), "--p12", str(pki["customer"])]) == 0
    assert main(["report", str(run), "--no-pdf"]) in (0, 1)  # HTML only: fine
    assert main(["report", str(run)]) == 2  # would replace the signed PDF
    assert main(["sign", str(run / "report.pdf"), "--p12", str(tmp_path / "missing.p12")]) == 2
