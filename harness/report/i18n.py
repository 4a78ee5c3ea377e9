"""Words, dates and numbers of the acceptance report in Norwegian bokmål (nb) and English (en)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

LANGS = ("nb", "en")

_MONTHS_EN = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

TEXT: dict[str, dict[str, str]] = {
    "nb": {
        "title": "Akseptansetestrapport",
        "contract": "Kontrakt",
        "reference": "Kontraktsreferanse",
        "customer": "Kunde",
        "supplier": "Leverandør",
        "system": "System under test",
        "version": "Versjon",
        "firmware": "Fastvare",
        "lab": "Testlab",
        "period": "Testperiode",
        "team": "Testteam",
        "run": "Testkjøring",
        "verdict": "Konklusjon",
        "approved": "Leveransen er godkjent.",
        "not_approved": "Leveransen er ikke godkjent.",
        "incomplete": "Testen er ufullstendig – ingen godkjenning kan gis.",
        "incomplete_banner": "UFULLSTENDIG: kjøringen ble avbrutt. Rapporten viser det som ble målt.",
        "rule": "Godkjenningsregel",
        "reason": "Begrunnelse",
        "matrix": "Sporbarhetsmatrise (krav – scenario – resultat)",
        "requirement": "Krav",
        "priority": "Pri.",
        "class": "Kl.",
        "scenarios": "Scenarioer",
        "criterion": "Kriterium",
        "measured": "Målt",
        "limit": "Grense",
        "result": "Resultat",
        "uncovered": "Krav som ikke dekkes av noe scenario",
        "uncovered_none": "Alle krav dekkes av minst ett scenario.",
        "per_scenario": "Scenarioer",
        "status": "Status",
        "steps": "Steg",
        "step": "Steg",
        "outcome": "Utfall",
        "count": "Antall",
        "file": "Fil",
        "covers": "Dekker",
        "criteria": "Kriterier",
        "plots": "Diagrammer",
        "deviations": "Avvik",
        "deviations_none": "Ingen avvik ble funnet.",
        "id": "Id",
        "severity": "Alvorlighet",
        "description": "Beskrivelse",
        "evidence": "Bevis",
        "history": "Historikk (kjøringer som testet avviket)",
        "observations": "Manuelle observasjoner, notater og hoppede steg",
        "observations_none": "Ingen observasjoner eller notater ble registrert.",
        "kind": "Type",
        "author": "Av",
        "time": "Tid",
        "text": "Tekst",
        "provenance": "Sporbarhet for bevis (proveniens)",
        "vtlab_version": "vtlab-versjon",
        "git_revision": "Git-revisjon",
        "machine": "Maskin",
        "clock": "Klokkekilde",
        "input_files": "Inndatafiler (kontrakt, lab, scenarioer)",
        "lab_file": "Labfil (uten hemmeligheter)",
        "manifest": "SHA-256-manifest for bevispakken",
        "manifest_note": "Manifestet er også innebygd i PDF-en; «vtlab verify» sammenligner filene ved siden av rapporten med det.",  # noqa: E501
        "signoff": "Signering",
        "signoff_text": "Undertegnede bekrefter å ha gjennomgått rapporten og konklusjonen over.",
        "sig_customer": "Kundens prosjekteier",
        "sig_supplier": "Leverandør",
        "sig_field": "Digital signatur (PAdES), felt «{field}»",
        "name_date": "Navn, dato",
        "sev_A": "A – kritisk",
        "sev_B": "B – alvorlig",
        "sev_C": "C – mindre alvorlig",
        "sev_D": "D – kosmetisk",
        "v_pass": "bestått",
        "v_marginal": "bestått (marginalt)",
        "v_fail": "ikke bestått",
        "v_error": "feil",
        "v_not_run": "ikke kjørt",
        "v_not_covered": "ikke dekket",
        "st_open": "åpent",
        "st_fixed": "rettet",
        "st_retested": "retestet",
        "s_completed": "fullført",
        "s_error": "feil",
        "s_running": "avbrutt",
        "s_skipped": "hoppet over",
        "latest_run": "Avgjort av kjøring",
        "latency_hist": "Fordeling av {metric} (ms)",
        "latency_time": "{metric} over tid",
        "throughput": "Gjennomstrømning (alarmer per sekund)",
        "limit_off_scale": "Grensen {limit} ligger langt over målingene (maks {max}) og er ikke tegnet inn.",
        "no_samples": "Ingen målinger.",
        "lost": "tapte",
        "samples": "målinger",
        "generated": "Generert",
        "page": "Side",
        "of": "av",
        "toc": "Innhold",
        "not_signed": "Ikke signert ennå",
        "tls_off": "TLS-verifisering var slått av i labfilen.",
        "faults": "Injiserte feil",
        "none": "ingen",
    },
    "en": {
        "title": "Acceptance test report",
        "contract": "Contract",
        "reference": "Contract reference",
        "customer": "Customer",
        "supplier": "Supplier",
        "system": "System under test",
        "version": "Version",
        "firmware": "Firmware",
        "lab": "Test lab",
        "period": "Test period",
        "team": "Test team",
        "run": "Test run",
        "verdict": "Conclusion",
        "approved": "The delivery is approved.",
        "not_approved": "The delivery is not approved.",
        "incomplete": "The test is incomplete – no approval can be given.",
        "incomplete_banner": "INCOMPLETE: the run was interrupted. This report shows what was measured.",
        "rule": "Approval rule",
        "reason": "Reason",
        "matrix": "Requirements traceability matrix",
        "requirement": "Requirement",
        "priority": "Pri.",
        "class": "Cl.",
        "scenarios": "Scenarios",
        "criterion": "Criterion",
        "measured": "Measured",
        "limit": "Limit",
        "result": "Result",
        "uncovered": "Requirements not covered by any scenario",
        "uncovered_none": "Every requirement is covered by at least one scenario.",
        "per_scenario": "Scenarios",
        "status": "Status",
        "steps": "Steps",
        "step": "Step",
        "outcome": "Outcome",
        "count": "Count",
        "file": "File",
        "covers": "Covers",
        "criteria": "Criteria",
        "plots": "Plots",
        "deviations": "Deviations",
        "deviations_none": "No deviations were found.",
        "id": "Id",
        "severity": "Severity",
        "description": "Description",
        "evidence": "Evidence",
        "history": "History (runs that tested the deviation)",
        "observations": "Manual observations, tester notes and skipped steps",
        "observations_none": "No observations or notes were recorded.",
        "kind": "Kind",
        "author": "By",
        "time": "Time",
        "text": "Text",
        "provenance": "Provenance",
        "vtlab_version": "vtlab version",
        "git_revision": "Git revision",
        "machine": "Machine",
        "clock": "Clock source",
        "input_files": "Input files (contract, lab, scenarios)",
        "lab_file": "Lab file (without secrets)",
        "manifest": "SHA-256 manifest of the evidence bundle",
        "manifest_note": "The manifest is also embedded in the PDF; `vtlab verify` compares the files next to the report with it.",  # noqa: E501
        "signoff": "Sign-off",
        "signoff_text": "The undersigned confirm that they have reviewed this report and its conclusion.",
        "sig_customer": "Customer's project owner",
        "sig_supplier": "Supplier",
        "sig_field": "Digital signature (PAdES), field “{field}”",
        "name_date": "Name, date",
        "sev_A": "A – critical",
        "sev_B": "B – serious",
        "sev_C": "C – minor",
        "sev_D": "D – cosmetic",
        "v_pass": "pass",
        "v_marginal": "pass (marginal)",
        "v_fail": "fail",
        "v_error": "error",
        "v_not_run": "not run",
        "v_not_covered": "not covered",
        "st_open": "open",
        "st_fixed": "fixed",
        "st_retested": "retested",
        "s_completed": "completed",
        "s_error": "error",
        "s_running": "interrupted",
        "s_skipped": "skipped",
        "latest_run": "Decided by run",
        "latency_hist": "Distribution of {metric} (ms)",
        "latency_time": "{metric} over time",
        "throughput": "Throughput (alarms per second)",
        "limit_off_scale": "The limit {limit} lies far above the measurements (max {max}) and is not drawn.",
        "no_samples": "No samples.",
        "lost": "lost",
        "samples": "samples",
        "generated": "Generated",
        "page": "Page",
        "of": "of",
        "toc": "Contents",
        "not_signed": "Not signed yet",
        "tls_off": "TLS verification was turned off in the lab file.",
        "faults": "Injected faults",
        "none": "none",
    },
}


REASONS: dict[str, dict[str, str]] = {
    "nb": {
        "run_not_finished": "kjøringen ble ikke fullført",
        "harness_fault": "en del av vtlab sviktet under scenario(er) {items}; tallene derfra er ikke leverandørens, "
                         "og scenarioene må kjøres på nytt",
        "scenarios_unfinished": "scenario(er) ble ikke fullført: {items}",
        "no_scenario": "ingen scenarioer ble kjørt",
        "open_blocking": "åpne avvik i kategori {classes}: {items}",
        "part_not_run": "deler av testsettet er ikke kjørt; ikke testet: {items}",
        "untested_required": "godkjenningsregelen krever at alle {classes}-krav er testet; ikke testet: {items}",
        "no_open_blocking": "ingen åpne avvik i kategori {classes}",
        "retested": " (retestet: {items})",
    },
    "en": {
        "run_not_finished": "the run did not finish",
        "harness_fault": "a part of vtlab failed during scenario(s) {items}; their figures are not the supplier's, "
                         "and they must be run again",
        "scenarios_unfinished": "scenario(s) did not complete: {items}",
        "no_scenario": "no scenario ran",
        "open_blocking": "open deviations of class {classes}: {items}",
        "part_not_run": "part of the suite has not been run; not tested: {items}",
        "untested_required": "the approval rule requires every {classes} requirement to be tested; not tested: {items}",
        "no_open_blocking": "no open deviation of class {classes}",
        "retested": " (retested: {items})",
    },
}


class Lang:
    """Translations and number/date formatting for one language."""

    def __init__(self, code: str):
        if code not in TEXT:
            from harness.errors import InputError

            raise InputError(f"unknown report language `{code}`", place="--lang", fix=f"use one of {', '.join(LANGS)}")
        self.code = code
        self.text = TEXT[code]

    def t(self, key: str, **values: Any) -> str:
        s = self.text.get(key, key)
        return s.format(**values) if values else s

    def verdict(self, v: str | None) -> str:
        return self.text.get(f"v_{v}", str(v))

    def reason(self, code: dict[str, Any] | None, fallback: str = "") -> str:
        """The verdict's reason, worded in this language from its code (harness.outcomes.Reason)."""
        if not code or code.get("code") not in REASONS[self.code]:
            return fallback
        words = REASONS[self.code]
        text = words[str(code["code"])].format(items=", ".join(code.get("items") or []),
                                               classes="/".join(code.get("classes") or []))
        if code.get("retested"):
            text += words["retested"].format(items=", ".join(code["retested"]))
        return text

    def number(self, value: float | int | None, digits: int = 3) -> str:
        """A number with at most `digits` significant decimals, in this language's convention."""
        if value is None:
            return "–"
        if isinstance(value, int) or float(value).is_integer():
            s = f"{int(value):,}".replace(",", "\u00a0" if self.code == "nb" else ",")
            return s
        v = float(value)
        if abs(v) >= 100:
            s = f"{v:,.1f}"
        elif abs(v) >= 1:
            s = f"{v:,.{max(digits - 1, 0)}f}".rstrip("0").rstrip(".")
        else:
            s = f"{v:.{digits + 1}g}"
        if self.code == "nb":
            s = s.replace(",", "\u00a0").replace(".", ",")
        return s

    def quantity(self, value: float | None, unit: str) -> str:
        if value is None:
            return "–"
        if unit in ("count", ""):
            return self.number(value)
        if unit == "%":
            return f"{self.number(value)}\u00a0%"
        return f"{self.number(value)}\u00a0{unit}"

    def date(self, iso: str | None, seconds: bool = False) -> str:
        if not iso:
            return "–"
        try:
            d = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return iso
        hm = d.strftime("%H:%M:%S" if seconds else "%H:%M")
        if self.code == "nb":
            return f"{d:%d.%m.%Y} kl. {hm} UTC"
        return f"{d.day} {_MONTHS_EN[d.month - 1]} {d.year} {hm} UTC"
