"""The report's optional sections, from runs the real session and engine wrote: security (each attempt's
request, the refusal seen and the certificate; fuzzing), integration with the patient record (records by
kind, latency as judged, refusals with their HTTP status), capacity (throughput and latency over time, the
shape asked for against the one delivered, the generator's health), harness faults in their own list,
requirements verified otherwise, and n / arrived / not arrived beside every latency figure. Both languages;
no English left in the Norwegian sections' fixed texts; the PDF renders.

The fast runs use the in-memory transport against a MOCK platform written in the test (it routes alarms,
loses a few on purpose, pushes FHIR to vtlab's real patient-record probe over HTTPS); the security run and
the load run go against the reference lab (mosquitto, TLS, client certificates) and are marked slow."""

from __future__ import annotations

import datetime as dt
import html as htmlmod
import json
import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.labfile import load_lab
from harness.report.commands import render_report
from harness.report.i18n import ATTEMPTS, CERT_FIELDS, TEXT
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.transports.base import Message
from tests.helpers import CONTRACT, LAB, Suite, memory_lab, partial_suite_contract

THROUGHPUT = """
title: Mange alarmer etter hverandre når responssenteret
covers: [TA-1.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 60
pace: 100/s
drain: 300ms
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 300ms}
criteria:
  - {metric: alarm_latency, p99: "<= 30s", requirement: TA-1.1}
  - {metric: throughput, rate: ">= 5/s", requirement: TA-1.1}
  - {metric: lost, count: "== 0"}
"""

FUZZ_UNREACHABLE = """
title: Fuzzing av DC-09-mottaket
covers: [TA-1.4]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
steps:
  - fuzz: {via: dc09, rate: 50/s, for: 1s, seed: 3}
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 2s}
criteria:
  - {metric: lost, count: "== 0"}
"""

EPJ = """
title: Lavt batteri når pasientjournalen
covers: [TA-6.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 6
pace: 5/s
drain: 1s
steps:
  - trigger: {device: knapp, event: low_battery}
  - expect_record: {from: knapp, kind: alert, code: "1.17", within: 3s}
criteria:
  - {metric: epj_latency, p99: "<= 5m"}
  - {metric: lost, count: "== 0"}
"""

SECURITY = """
title: Sikkerhetspakke mot referanselaben
covers: [TA-5.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
steps:
  - expect_refused: {attempt: plain_tcp}
  - expect_refused: {attempt: no_client_certificate}
  - expect_refused: {attempt: tls_1_1}
  - expect_refused: {attempt: weak_cipher}
  - check_certificate: {}
  - expect_refused: {attempt: publish_as_other_device}
  - expect_refused: {attempt: control_topic}
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 10s}
criteria:
  - {metric: insecure_accepted, count: "== 0"}
  - {metric: lost, count: "== 0"}
"""

FUZZ_MQTT = """
title: Plattformen ruter alarmer mens en enhet sender søppel
covers: [TA-1.4]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 10
pace: 10/s
drain: 2s
steps:
  - fuzz: {via: mqtt, rate: 100/s, for: 1s, seed: 7, device: knapp}
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 5s}
criteria:
  - {metric: lost, count: "== 0"}
  - {metric: alarm_latency, p99: "<= 5s"}
"""

SECRET_MARKERS = (
    b"BEGIN PRIVATE KEY",
    b"BEGIN EC PRIVATE KEY",
    b"BEGIN RSA PRIVATE KEY",
    b"BEGIN ENCRYPTED",
    b"client_assertion=",
    b"Bearer ey",
)


# --- runs ------------------------------------------------------------------------------------------------
def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(
    report_dir: Path,
    run_id: str,
    lab_path: Path,
    scenarios: dict[str, str],
    contract: Path,
    platform: Callable[[RunSession, Any], None] | None = None,
) -> Path:
    """Run `scenarios` (name -> text) through the real session and engine, in one run folder."""
    lab = load_lab(lab_path)
    contract_model, src = load_contract(contract)
    suite = Suite(report_dir.parent / f"suite-{run_id}")
    plans = [load_scenario(suite.scenario(name, text), contract_model, lab, name) for name, text in scenarios.items()]
    session = RunSession(lab=lab, contract=contract_model, contract_src=src, report_dir=report_dir, run_id=run_id)
    session.start()
    if platform is not None:
        platform(session, lab)
    try:
        for plan in plans:
            run_and_judge(plan, session)
    finally:
        session.close()
    return report_dir / run_id


def memory_run(report_dir: Path) -> Path:
    """Two scenarios on the in-memory transport: 60 alarms at 100/s of which a MOCK platform loses the first 3
    (throughput criterion, censored latency), and a DC-09 fuzzer whose receiver does not listen (vtlab could
    not make the attempt: a harness fault)."""
    path = memory_lab(report_dir.parent / "lab-memory")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["devices"]["fd-per"]["dc09"]["to"] = f"127.0.0.1:{_closed_port()}"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")

    def platform(session: RunSession, lab: Any) -> None:
        bus = session.bed.memory_bus()
        seen: list[str] = []

        def route(msg: Message) -> None:
            event = json.loads(msg.payload)
            seen.append(event["cid"])
            if len(seen) > 3:
                alarm = {**event, "centre": "rs-vest"}
                bus.deliver(lab.topic("centre_alarm", centre="rs-vest"), json.dumps(alarm).encode())

        bus.add(lab.topic("device_event", device="+"), route)

    return _run(
        report_dir,
        "memory",
        path,
        {"gjennomstromning": THROUGHPUT, "fuzz-dc09": FUZZ_UNREACHABLE},
        partial_suite_contract(),
        platform,
    )


def epj_run(report_dir: Path) -> Path:
    """Low-battery events pushed by a MOCK platform as VKP DetectedIssue bundles to vtlab's real patient-record
    probe (HTTPS, HelseID-shaped tokens); the first is never pushed (lost), and the platform once pushes
    without a token (refused with 401)."""
    from harness.probes.epj import HelseIdTokenProvider, push_bundle
    from harness.protocols import vkp

    path = memory_lab(report_dir.parent / "lab-epj")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["probes"]["journal"] = {"kind": "epj", "epj": {"orgnr": "999888777"}}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    pushes: list[threading.Thread] = []

    def platform(session: RunSession, lab: Any) -> None:
        endpoint = session.bed.records["journal"].endpoint(generate_client=True)
        assert endpoint.client is not None
        tokens = HelseIdTokenProvider(endpoint.token_url, endpoint.client, ca=endpoint.ca)
        seen = [0]

        def push(bundle: dict[str, Any], with_token: bool) -> None:
            push_bundle(endpoint.base_url, bundle, tokens if with_token else None, endpoint.ca)

        def route(msg: Message) -> None:
            event = json.loads(msg.payload)
            seen[0] += 1
            if seen[0] == 1:
                return  # never pushed: lost
            bundle = vkp.low_battery(
                vkp.Ident(vkp.FNR_SYSTEM, event["user"]),
                vkp.Ident(vkp.DEVICE_SYSTEM, event["device"]),
                dt.datetime.now(dt.UTC),
            )
            if seen[0] == 2:  # the platform's bug: one push without its token, then the push done right
                t = threading.Thread(target=lambda b=bundle: (push(b, False), push(b, True)), daemon=True)
            else:
                t = threading.Thread(target=lambda b=bundle: push(b, True), daemon=True)
            pushes.append(t)
            t.start()

        session.bed.memory_bus().add(lab.topic("device_event", device="+"), route)

    return _run(report_dir, "epj", path, {"epj": EPJ}, partial_suite_contract(), platform)


def need_mosquitto() -> None:
    from harness.lab.broker import find_mosquitto

    if find_mosquitto() is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is required in CI (tools/system-packages.txt) but is not installed")
        pytest.skip("mosquitto is not installed (apt install mosquitto)")


def need_weasyprint() -> None:
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"WeasyPrint is required in CI: {exc}")
        pytest.skip(f"WeasyPrint cannot run here: {exc}")


def rendered(run_dir: Path) -> dict[str, str]:
    """report.html in both languages (English first; Norwegian last, so the folder ends as `vtlab run` leaves
    it) and the PDF of the Norwegian one."""
    out = {}
    for lang in ("en", "nb"):
        render_report(run_dir, lang, pdf=lang == "nb", force=True)
        out[lang] = (run_dir / "report.html").read_text(encoding="utf-8")
    return out


# --- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    need_weasyprint()
    run_dir = memory_run(tmp_path_factory.mktemp("reports"))
    return run_dir, rendered(run_dir)


@pytest.fixture(scope="module")
def epj(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    need_weasyprint()
    run_dir = epj_run(tmp_path_factory.mktemp("reports"))
    return run_dir, rendered(run_dir)


@pytest.fixture(scope="module")
def security(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    need_weasyprint()
    need_mosquitto()
    run_dir = _run(
        tmp_path_factory.mktemp("reports"), "security", LAB, {"security": SECURITY, "fuzz": FUZZ_MQTT}, CONTRACT
    )
    return run_dir, rendered(run_dir)


# --- helpers for the assertions ---------------------------------------------------------------------------
def section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment (tags, SVG and entities removed)."""
    fragment = re.sub(r"<svg.*?</svg>", " ", fragment, flags=re.S)
    return " ".join(htmlmod.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def english_fixed_texts() -> set[str]:
    """Every English fixed text of the report that differs from its Norwegian one (words of 5+ letters)."""
    out = {v for k, v in TEXT["en"].items() if TEXT["nb"].get(k) != v}
    for key, (what, expected) in ATTEMPTS["en"].items():
        out |= {what, expected} - set(ATTEMPTS["nb"][key])
    out |= set(CERT_FIELDS["en"].values()) - set(CERT_FIELDS["nb"].values())
    plain = set()
    for text in out:
        for part in re.split(r"\{[^}]*\}", text):  # the fixed parts of a template text
            part = part.strip(" .,:;()–-")
            if len(part) >= 5 and re.search(r"[a-z]{3}", part):
                plain.add(part)
    return plain


def fixed_text_of(fragment: str) -> str:
    """The visible text without what the report quotes from the evidence (marked `ev`: recorded details, step
    arguments, texts as the checks wrote them) or shows as identifiers (`mono`: metric names, field names)."""
    fragment = re.sub(r"<svg.*?</svg>", " ", fragment, flags=re.S)
    fragment = re.sub(
        r'<(span|td|li|ul|pre|code)\b[^>]*class="[^"]*\b(ev|mono|k)\b[^"]*"[^>]*>.*?</\1>', " ", fragment, flags=re.S
    )
    return text_of(fragment)


def assert_no_english(nb_fragment: str, evidence_words: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    shown = fixed_text_of(nb_fragment)
    leaks = sorted(
        t
        for t in english_fixed_texts()
        if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", shown) and not any(t in w for w in evidence_words)
    )
    assert not leaks, leaks


def assert_no_secret(run_dir: Path, pages: dict[str, str]) -> None:
    for page in pages.values():
        for marker in SECRET_MARKERS:
            assert marker.decode() not in page, marker
    store = (run_dir / "evidence.sqlite").read_bytes()
    for marker in SECRET_MARKERS:
        assert marker not in store, marker


# --- tests: the fast runs ---------------------------------------------------------------------------------
def test_capacity_section_shows_throughput_and_latency_over_time_with_not_arrived(
    memory: tuple[Path, dict[str, str]],
) -> None:
    run_dir, pages = memory
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    (crit,) = [c for s in summary["scenarios"] for c in s["criteria"] if c["metric"] == "alarm_latency"]
    assert (crit["n"], crit["arrived"], crit["not_arrived"]) == (60, 57, 3)
    for lang, words in (
        (
            "nb",
            (
                "Kapasitet og last",
                "Oppnådd gjennomstrømning",
                "Levert riktig sted",
                "alarm_latency over tid",
                "Gjennomstrømning (alarmer per sekund)",
            ),
        ),
        (
            "en",
            (
                "Capacity and load",
                "Throughput achieved",
                "Delivered in place",
                "alarm_latency over time",
                "Throughput (alarms per second)",
            ),
        ),
    ):
        cap = section(pages[lang], "capacity")
        shown = text_of(cap)
        for w in words:
            assert w in shown, (lang, w)
        assert cap.count("<svg") >= 2  # throughput over time and latency over time
        assert "60 / 57" not in shown and "57 / 3" in shown.replace("\u00a0", " ")  # delivered / not delivered
        assert re.search(r"n 60 · (ankommet|arrived) 57 · (ikke ankommet|not arrived) 3", shown)
    # the scenario section does not repeat the capacity plots
    scen = section(pages["nb"], "scenarios")
    assert "Gjennomstrømning (alarmer per sekund)" not in text_of(scen)


def test_a_censored_statistic_reads_as_words_never_a_number(memory: tuple[Path, dict[str, str]]) -> None:
    run_dir, pages = memory
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    lat = next(s for s in summary["scenarios"] if s["id"] == "gjennomstromning")["metrics"]["latency"]["alarm_latency"]
    assert lat["max"] is None and lat["not_arrived"] == 3  # the max falls among the alarms that never arrived
    for lang, word in (("nb", "ikke ankommet"), ("en", "not arrived")):
        scen = text_of(section(pages[lang], "scenarios"))
        row = re.search(
            rf"alarm_latency (\d+) (\d+) (\d+) \S+ ms \S+ ms ({word}) ({word})", scen.replace("\u00a0", " ")
        )
        assert row, scen[:2000]
        assert row.groups()[:3] == ("60", "57", "3")  # n, arrived, not arrived; p99 and max censored
    assert "not arrived" not in text_of(pages["nb"])


def test_harness_faults_have_their_own_list_and_are_not_charged(memory: tuple[Path, dict[str, str]]) -> None:
    run_dir, pages = memory
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert [f for f in summary["harness_faults"] if f["scenario"] == "fuzz-dc09"]
    assert not [d for d in summary["deviations"] if d["scenario"] == "fuzz-dc09"]
    nb = section(pages["nb"], "harness-faults")
    assert "Feil i vtlab selv – ikke belastet leverandøren" in nb and "could not reach 127.0.0.1:" in nb
    en = section(pages["en"], "harness-faults")
    assert "Faults in vtlab itself – not charged to the supplier" in en
    # shown once, in their list: not again among the tester's observations
    assert "could not reach" not in section(pages["nb"], "observations")


def test_a_fuzzer_that_could_not_start_is_shown_with_its_counts(memory: tuple[Path, dict[str, str]]) -> None:
    _, pages = memory
    nb = text_of(section(pages["nb"], "security"))
    assert "Fuzzing (misdannede og muterte meldinger)" in nb and "dc09" in nb and "stoppet: ikke startet" in nb
    en = text_of(section(pages["en"], "security"))
    assert "Fuzzing (malformed and mutated messages)" in en and "stopped: not started" in en


def test_requirements_verified_otherwise_name_method_and_where(memory: tuple[Path, dict[str, str]]) -> None:
    run_dir, pages = memory
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    (req,) = [r for r in summary["requirements"] if r["verdict"] == "verified_otherwise"]
    matrix = text_of(section(pages["nb"], "matrix"))
    assert "Krav verifisert på annen måte" in matrix and "verifisert på annen måte" in matrix
    assert f"driftsperioden: {req['verified_by']['where']}" in matrix
    assert "the operation period" in text_of(section(pages["en"], "matrix"))


def test_no_english_in_the_norwegian_sections_and_the_pdf_renders(memory: tuple[Path, dict[str, str]]) -> None:
    run_dir, pages = memory
    for sid in ("matrix", "harness-faults", "security", "capacity", "scenarios"):
        assert_no_english(section(pages["nb"], sid))
    pdf = run_dir / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000


def test_integration_section_shows_records_latency_and_refusals(epj: tuple[Path, dict[str, str]]) -> None:
    run_dir, pages = epj
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    lat = summary["scenarios"][0]["metrics"]["latency"]["epj_latency"]
    assert (lat["n"], lat["arrived"], lat["not_arrived"]) == (6, 5, 1)
    nb = text_of(section(pages["nb"], "integration")).replace("\u00a0", " ")
    for w in (
        "Integrasjon med pasientjournal (EPJ)",
        "varsel (DetectedIssue)",
        "Mottatte journalressurser",
        "Avviste forespørsler ved journalproben",
        "journal",
    ):
        assert w in nb, w
    # per record kind: the count of records received (5 in time, plus nothing else)
    assert re.search(r"varsel \(DetectedIssue\) 5 DetectedIssue \(5\)", nb), nb[:1500]
    # latency from the judged metrics, with n / arrived / not arrived; the p99 and max are censored
    assert re.search(r"epj_latency varsel \(DetectedIssue\) 6 5 1 \S+ ms ikke ankommet ikke ankommet", nb), nb
    # the push without a token: refused by the probe with 401
    assert re.search(r"POST /\S+ 401 no bearer token", nb), nb
    en = text_of(section(pages["en"], "integration"))
    assert "Integration with the patient record (EPJ)" in en and "alert (DetectedIssue)" in en and "not arrived" in en
    assert_no_english(section(pages["nb"], "integration"))
    assert_no_secret(run_dir, pages)
    assert (run_dir / "report.pdf").read_bytes().startswith(b"%PDF")


def test_sections_appear_only_when_the_run_has_something_for_them(
    memory: tuple[Path, dict[str, str]], epj: tuple[Path, dict[str, str]]
) -> None:
    _, m = memory
    _, e = epj
    assert '<section id="integration">' not in m["nb"]
    assert '<section id="capacity">' not in e["nb"] and '<section id="security">' not in e["nb"]
    assert '<section id="harness-faults">' not in e["nb"]


# --- tests: against the reference lab (slow) -------------------------------------------------------------
@pytest.mark.slow
def test_security_section_shows_each_attempt_refusal_and_certificate(security: tuple[Path, dict[str, str]]) -> None:
    run_dir, pages = security
    records = []
    from harness.evidence import EvidenceReader

    reader = EvidenceReader(run_dir)
    try:
        records = [json.loads(o["text"]) for o in reader.observations() if o["kind"] == "security"]
    finally:
        reader.close()
    assert len(records) == 7
    nb = section(pages["nb"], "security")
    shown = text_of(nb)
    for w in (
        "Sikkerhet",
        "Forsøk",
        "Forventet",
        "Observert svar",
        "MQTT uten TLS",
        "bare TLS 1.1 tilbudt",
        "avvist som krevd",
        "godtatt sertifikat",
        "Sertifikater plattformen viste",
        "Utsteder",
        "SHA-256-fingeravtrykk",
        "TA-5.1",
        "Fuzzing (misdannede og muterte meldinger)",
    ):
        assert w in shown, w
    # per check: what the platform answered, as recorded
    by_check = {r["check"]: r for r in records}
    assert "0x87 Not authorized" in shown and by_check["control_topic"]["refusal"]["puback"] in shown
    assert by_check["server_certificate"]["certificate"]["sha256"] in shown
    assert "CN=vtlab test CA,O=vtlab test" in shown
    assert shown.count("avvist som krevd") == 6
    en = text_of(section(pages["en"], "security"))
    for w in (
        "Security",
        "Attempt",
        "Expected",
        "Answer seen",
        "MQTT without TLS",
        "refused as required",
        "Certificates the platform presented",
        "Issuer",
    ):
        assert w in en, w
    assert_no_english(nb, evidence_words={r["detail"] for r in records})
    assert_no_secret(run_dir, pages)
    assert (run_dir / "report.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow
def test_load_run_capacity_section_shows_asked_shape_and_generator_health(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    need_weasyprint()
    need_mosquitto()
    pytest.importorskip("locust") if not os.environ.get("CI") else None
    from harness.load.runner import LoadOptions, run_load

    tmp = tmp_path_factory.mktemp("load")
    path = tmp / "kapasitet.yaml"
    path.write_text(
        "title: Kapasitet under jevn last\ncovers: [TA-4.1]\n"
        "load: {shape: steady, devices: 10, rate: 5/s, duration: 4s, heartbeat: 2s, drain: 2s}\n"
        "criteria:\n"
        '  - {metric: lost, count: "== 0"}\n'
        '  - {metric: alarm_latency, p99: "<= 30s"}\n'
        '  - {metric: throughput, rate: ">= 2/s"}\n',
        encoding="utf-8",
    )
    lines: list[str] = []
    result = run_load(path, None, LoadOptions(report_dir=tmp / "reports", contract=CONTRACT, progress=lines.append))
    assert result.status == "completed", result.faults
    pages = rendered(result.run_dir)
    for lang, words in (
        (
            "nb",
            (
                "Kapasitet og last",
                "Lastgeneratorens helse",
                "Forsinkelse i sendeplanen",
                "CPU-bruk per generatorprosess",
                "Bestilt og levert trafikk",
                "innenfor",
                "load/locust.html",
            ),
        ),
        (
            "en",
            (
                "Capacity and load",
                "Load generator health",
                "Schedule lag",
                "CPU use per generator process",
                "Traffic asked for and delivered",
                "within",
            ),
        ),
    ):
        cap = section(pages[lang], "capacity")
        shown = text_of(cap)
        for w in words:
            assert w in shown, (lang, w)
        assert cap.count("<svg") >= 3  # asked vs delivered, latency over time, generator health
        assert re.search(r"steady · 10 \w+ · 5/s · 4s", shown.replace("\u00a0", " ")), shown[:800]
        assert "20 / 20" in shown.replace("\u00a0", " ")  # asked / sent
    assert_no_english(section(pages["nb"], "capacity"))
    assert (result.run_dir / "report.pdf").read_bytes().startswith(b"%PDF")
