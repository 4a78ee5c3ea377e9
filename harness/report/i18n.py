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
        "s_harness_fault": "feil i vtlab",
        "repeat": "gjentakelser",
        "scenario": "Scenario",
        "fz_time": "tiden var ute",
        "fz_count": "antallet var nådd",
        "fz_scenario_end": "scenarioet sluttet",
        "fz_not_started": "ikke startet",
        "fz_running": "kjørte fortsatt",
        "pace": "takt",
        "time_scale": "komprimert tid",
        "lab_clock": "laboratoriets klokke (tid på døgnet)",
        "time_scale_text": "1:{scale} i referanselaboratoriet: hjerteslagsintervaller, ventetider og frister gikk "
        "{scale} ganger raskere enn skrevet, og alle målte varigheter er ganget med {scale}",
        "stimuli": "stimuli",
        "delivered": "levert riktig sted",
        "v_verified_otherwise": "verifisert på annen måte",
        "not_arrived_value": "ikke ankommet",
        "n_arrived": "n {n} · ankommet {arrived} · ikke ankommet {not_arrived}",
        "col_n": "n",
        "col_arrived": "Ankommet",
        "col_not_arrived": "Ikke ankommet",
        "col_max": "Maks",
        "metric": "Måling",
        "latencies": "Forsinkelser (alle forventede hendelser; de som ikke kom fram, teller over enhver grense)",
        "verified_otherwise": "Krav verifisert på annen måte",
        "verified_by": "Verifisert ved {method}: {where}",
        "harness_faults": "Feil i vtlab selv – ikke belastet leverandøren",
        "harness_faults_intro": "Disse feilene skjedde i vtlabs egne deler (simulert enhet, probe, megler, lab eller "
        "lastgenerator). Scenarioene de rammet er ufullstendige og må kjøres på nytt; "
        "ingenting her er et avvik hos leverandøren.",
        "security": "Sikkerhet",
        "security_intro": "Hvert sikkerhetsforsøk vtlab gjorde mot plattformen: hva som ble sendt, hva plattformen "
        "svarte (TLS-varsel, MQTT-årsakskode, HTTP-status, DC-09 NAK/DUH, SIP-status) og "
        "sertifikatet den viste. Beviset inneholder aldri nøkler, passord eller tokens.",
        "sec_check": "Forsøk",
        "sec_expected": "Forventet",
        "sec_seen": "Observert svar",
        "sec_request": "Forespørsel",
        "sec_refused": "avvist som krevd",
        "sec_ok": "godtatt sertifikat",
        "sec_accepted": "godtatt – sikkerhetsfunn",
        "sec_not_reached": "ikke prøvd – feil i vtlab",
        "sec_cert_bad": "sertifikat en klient må avvise – sikkerhetsfunn",
        "sec_no_answer": "intet svar registrert",
        "certificates": "Sertifikater plattformen viste",
        "cert_seen_in": "Sett i",
        "fuzzing": "Fuzzing (misdannede og muterte meldinger)",
        "fuzz_via": "Inngang",
        "fuzz_target": "Mål",
        "fuzz_seed": "Frø",
        "fuzz_sent": "Sendt",
        "fuzz_sent_of": "{sent} av høyst {limit} på {seconds} s (stoppet: {ended})",
        "fuzz_errors": "Sendefeil / gjenoppkoblinger",
        "fuzz_mutations": "Mutasjoner",
        "fuzz_lab": "Labens avvisninger under fuzzing",
        "fuzz_malformed": "Misdannede meldinger mottatt av vtlabs prober",
        "fuzz_routing": "Ruting av ekte alarmer under fuzzing",
        "integration": "Integrasjon med pasientjournal (EPJ)",
        "integration_intro": "Hendelser som plattformen leverte til pasientjournalproben (FHIR R4, VKP-formet). "
        "Forsinkelsestallene er de samme som kriteriene ble vurdert mot.",
        "epj_records": "Mottatte journalressurser",
        "epj_kind": "Ressurstype",
        "epj_resources": "FHIR-ressurs",
        "epj_codes": "Koder",
        "epj_readings": "Målinger",
        "epj_findings": "Funn i ressursene",
        "epj_no_findings": "Ingen funn i de mottatte ressursene.",
        "epj_latency": "Forsinkelse til journalen",
        "epj_outcomes": "Utfall",
        "epj_refusals": "Avviste forespørsler ved journalproben",
        "epj_no_refusals": "Journalproben avviste ingen forespørsler.",
        "epj_request": "Forespørsel",
        "epj_status": "HTTP-status",
        "epj_reason": "Årsak",
        "rk_alert": "varsel (DetectedIssue)",
        "rk_encounter": "hendelse (Encounter)",
        "rk_note": "notat (Composition)",
        "rk_dispense": "utlevering (MedicationDispense)",
        "rk_reading": "måling (Observation)",
        "rk_other": "annet",
        "capacity": "Kapasitet og last",
        "capacity_intro": "Scenarioer med gjennomstrømningskrav eller lastprofil: ønsket trafikk mot levert, "
        "forsinkelse over tid og lastgeneratorens helse.",
        "cap_shape": "Lastprofil",
        "cap_asked": "Bestilt",
        "cap_sent": "Sendt",
        "cap_delivered": "Levert riktig sted",
        "cap_not_delivered": "Ikke levert",
        "cap_throughput": "Oppnådd gjennomstrømning",
        "cap_per_s": "{rate} per sekund",
        "cap_devices": "{devices} enheter",
        "cap_pace": "takt {pace}, {repeat} gjentakelser",
        "cap_generator": "Lastgeneratorens helse",
        "cap_gen_intro": "En lastgenerator som ikke holder tidsplanen sin, gjør tallene ugyldige; da er kjøringen "
        "en feil i vtlab, ikke et avvik hos leverandøren.",
        "cap_lag": "Forsinkelse i sendeplanen (faktisk minus planlagt sendetid)",
        "cap_cpu": "CPU-bruk per generatorprosess mens den sendte",
        "cap_loop": "Største forsinkelse i hendelsesløkken",
        "cap_rss": "Største minnebruk",
        "cap_connected": "Tilkoblede enheter (maks)",
        "cap_nodes": "Generatorprosesser",
        "cap_limit": "grense {limit}",
        "cap_within": "innenfor",
        "cap_over": "over grensen",
        "cap_files": "Locust-filer i bevispakken",
        "cap_no_load_file": "Lastkjøringens kapasitetsfil (load/capacity.json) mangler; tallene over kommer fra "
        "bevislageret alene.",
        "shape_asked": "Bestilt og levert trafikk (alarmer per sekund)",
        "lag_time": "Lastgenerator: CPU og forsinkelse over tid",
        "vm_document_review": "dokumentgjennomgang",
        "vm_inspection": "inspeksjon",
        "vm_demonstration": "demonstrasjon",
        "vm_operation_period": "driftsperioden",
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
        "s_harness_fault": "vtlab fault",
        "repeat": "repetitions",
        "scenario": "Scenario",
        "fz_time": "time was up",
        "fz_count": "count reached",
        "fz_scenario_end": "the scenario ended",
        "fz_not_started": "not started",
        "fz_running": "still running",
        "pace": "pace",
        "time_scale": "compressed time",
        "lab_clock": "the lab's clock (time of day)",
        "time_scale_text": "1:{scale} on the reference lab: heartbeat intervals, waits and deadlines ran {scale} "
        "times faster than written, and every measured duration is multiplied by {scale}",
        "stimuli": "stimuli",
        "delivered": "delivered in place",
        "v_verified_otherwise": "verified otherwise",
        "not_arrived_value": "not arrived",
        "n_arrived": "n {n} · arrived {arrived} · not arrived {not_arrived}",
        "col_n": "n",
        "col_arrived": "Arrived",
        "col_not_arrived": "Not arrived",
        "col_max": "Max",
        "metric": "Metric",
        "latencies": "Latencies (every expected event; those that did not arrive count above any limit)",
        "verified_otherwise": "Requirements verified otherwise",
        "verified_by": "Verified by {method}: {where}",
        "harness_faults": "Faults in vtlab itself – not charged to the supplier",
        "harness_faults_intro": "These faults happened in vtlab's own parts (simulated device, probe, broker, lab or "
        "load generator). The scenarios they hit are incomplete and must be run again; "
        "nothing here is a deviation of the supplier.",
        "security": "Security",
        "security_intro": "Every security attempt vtlab made against the platform: what was sent, what the platform "
        "answered (TLS alert, MQTT reason code, HTTP status, DC-09 NAK/DUH, SIP status) and the "
        "certificate it presented. The evidence never holds keys, passwords or tokens.",
        "sec_check": "Attempt",
        "sec_expected": "Expected",
        "sec_seen": "Answer seen",
        "sec_request": "Request",
        "sec_refused": "refused as required",
        "sec_ok": "certificate accepted",
        "sec_accepted": "accepted – security finding",
        "sec_not_reached": "not tried – vtlab fault",
        "sec_cert_bad": "a certificate a client must refuse – security finding",
        "sec_no_answer": "no answer recorded",
        "certificates": "Certificates the platform presented",
        "cert_seen_in": "Seen in",
        "fuzzing": "Fuzzing (malformed and mutated messages)",
        "fuzz_via": "Ingress",
        "fuzz_target": "Target",
        "fuzz_seed": "Seed",
        "fuzz_sent": "Sent",
        "fuzz_sent_of": "{sent} of at most {limit} in {seconds} s (stopped: {ended})",
        "fuzz_errors": "Send errors / reconnects",
        "fuzz_mutations": "Mutations",
        "fuzz_lab": "The lab's refusals while fuzzed",
        "fuzz_malformed": "Malformed messages received by vtlab's probes",
        "fuzz_routing": "Routing of real alarms while fuzzed",
        "integration": "Integration with the patient record (EPJ)",
        "integration_intro": "Events the platform delivered to the patient-record probe (FHIR R4, VKP-shaped). "
        "The latency figures are the ones the criteria were judged against.",
        "epj_records": "Patient-record resources received",
        "epj_kind": "Resource kind",
        "epj_resources": "FHIR resource",
        "epj_codes": "Codes",
        "epj_readings": "Readings",
        "epj_findings": "Findings in the resources",
        "epj_no_findings": "No findings in the resources received.",
        "epj_latency": "Latency to the patient record",
        "epj_outcomes": "Outcomes",
        "epj_refusals": "Requests refused at the patient-record probe",
        "epj_no_refusals": "The patient-record probe refused no request.",
        "epj_request": "Request",
        "epj_status": "HTTP status",
        "epj_reason": "Reason",
        "rk_alert": "alert (DetectedIssue)",
        "rk_encounter": "encounter (Encounter)",
        "rk_note": "note (Composition)",
        "rk_dispense": "dispense (MedicationDispense)",
        "rk_reading": "reading (Observation)",
        "rk_other": "other",
        "capacity": "Capacity and load",
        "capacity_intro": "Scenarios with a throughput criterion or a load shape: the traffic asked for against "
        "the traffic delivered, latency over time and the load generator's health.",
        "cap_shape": "Load shape",
        "cap_asked": "Asked",
        "cap_sent": "Sent",
        "cap_delivered": "Delivered in place",
        "cap_not_delivered": "Not delivered",
        "cap_throughput": "Throughput achieved",
        "cap_per_s": "{rate} per second",
        "cap_devices": "{devices} devices",
        "cap_pace": "pace {pace}, {repeat} repetitions",
        "cap_generator": "Load generator health",
        "cap_gen_intro": "A load generator that does not keep its schedule makes the figures invalid; such a run "
        "is a vtlab fault, not a deviation of the supplier.",
        "cap_lag": "Schedule lag (actual minus intended send time)",
        "cap_cpu": "CPU use per generator process while sending",
        "cap_loop": "Largest event-loop lag",
        "cap_rss": "Largest memory use",
        "cap_connected": "Devices connected (max)",
        "cap_nodes": "Generator processes",
        "cap_limit": "limit {limit}",
        "cap_within": "within",
        "cap_over": "above the limit",
        "cap_files": "Locust files in the evidence bundle",
        "cap_no_load_file": "The load run's capacity file (load/capacity.json) is missing; the figures above come "
        "from the evidence store alone.",
        "shape_asked": "Traffic asked for and delivered (alarms per second)",
        "lag_time": "Load generator: CPU and schedule lag over time",
        "vm_document_review": "document review",
        "vm_inspection": "inspection",
        "vm_demonstration": "demonstration",
        "vm_operation_period": "the operation period",
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


# security attempts (harness.scenario.security): what vtlab tried, and the refusal the platform owes
ATTEMPTS: dict[str, dict[str, tuple[str, str]]] = {
    "nb": {
        "plain_tcp": ("MQTT uten TLS", "forbindelsen avvist eller lukket uten CONNACK"),
        "no_client_certificate": ("MQTT over TLS uten klientsertifikat", "TLS-håndtrykk eller CONNACK avvist"),
        "untrusted_certificate": (
            "klientsertifikat fra en CA plattformen ikke skal stole på",
            "TLS-håndtrykk eller CONNACK avvist",
        ),
        "no_credentials": ("MQTT uten brukernavn og passord", "CONNACK med feilkode"),
        "wrong_password": ("MQTT med feil passord", "CONNACK med feilkode"),
        "tls_1_0": ("bare TLS 1.0 tilbudt", "TLS-håndtrykket avvist"),
        "tls_1_1": ("bare TLS 1.1 tilbudt", "TLS-håndtrykket avvist"),
        "weak_cipher": ("bare svake chifferserier tilbudt", "TLS-håndtrykket avvist for hver serie"),
        "publish_as_other_device": ("publisere som en annen enhet", "PUBACK 0x87 eller frakobling; alarmen rutes ikke"),
        "read_other_centre": ("lese et annet responssenters alarmer", "SUBACK med feilkode; ingenting leveres"),
        "control_topic": ("publisere til plattformens kontrollemne", "PUBACK 0x87 eller frakobling"),
        "session_takeover": (
            "overta en annen identitets sesjon (samme klient-id)",
            "den andre identiteten avvist; første sesjon beholdes",
        ),
        "dc09_replay": ("DC-09-melding spilt av på nytt", "NAK (tidsstempel utenfor vinduet)"),
        "dc09_stale_timestamp": ("DC-09 med gammelt tidsstempel", "NAK"),
        "dc09_future_timestamp": ("DC-09 med tidsstempel fram i tid", "NAK"),
        "dc09_wrong_key": ("DC-09 kryptert med feil nøkkel", "DUH (kan ikke dekrypteres)"),
        "dc09_unencrypted": ("ukryptert DC-09 der kryptering kreves", "DUH"),
        "scaip_without_tls": ("SCAIP (SIP MESSAGE) uten TLS", "ingen 2xx: avvist eller ubesvart"),
        "fhir_without_token": ("FHIR-innsending uten token", "HTTP 401 (eller 403)"),
        "server_certificate": (
            "plattformens serversertifikat kontrollert som en nøye klient gjør",
            "utstedt av forventet CA, gyldig nå og for vertsnavnet",
        ),
    },
    "en": {
        "plain_tcp": ("MQTT without TLS", "connection refused or closed without CONNACK"),
        "no_client_certificate": ("MQTT over TLS without a client certificate", "TLS handshake or CONNACK refused"),
        "untrusted_certificate": (
            "client certificate from a CA the platform must not trust",
            "TLS handshake or CONNACK refused",
        ),
        "no_credentials": ("MQTT without user name and password", "CONNACK with an error code"),
        "wrong_password": ("MQTT with a wrong password", "CONNACK with an error code"),
        "tls_1_0": ("only TLS 1.0 offered", "TLS handshake refused"),
        "tls_1_1": ("only TLS 1.1 offered", "TLS handshake refused"),
        "weak_cipher": ("only weak cipher suites offered", "TLS handshake refused for each suite"),
        "publish_as_other_device": ("publish as another device", "PUBACK 0x87 or disconnect; the alarm is not routed"),
        "read_other_centre": ("read another response centre's alarms", "SUBACK with an error code; nothing served"),
        "control_topic": ("publish to the platform's control topic", "PUBACK 0x87 or disconnect"),
        "session_takeover": (
            "take over another identity's session (same client id)",
            "the second identity refused; the first session kept",
        ),
        "dc09_replay": ("DC-09 message played back later", "NAK (timestamp outside the window)"),
        "dc09_stale_timestamp": ("DC-09 with an old timestamp", "NAK"),
        "dc09_future_timestamp": ("DC-09 with a timestamp in the future", "NAK"),
        "dc09_wrong_key": ("DC-09 encrypted with a wrong key", "DUH (cannot be decrypted)"),
        "dc09_unencrypted": ("unencrypted DC-09 where encryption is required", "DUH"),
        "scaip_without_tls": ("SCAIP (SIP MESSAGE) without TLS", "no 2xx: refused or unanswered"),
        "fhir_without_token": ("FHIR push without a token", "HTTP 401 (or 403)"),
        "server_certificate": (
            "the platform's server certificate checked as a careful client does",
            "issued by the expected CA, valid now and for the host name",
        ),
    },
}

# certificate details (harness.security.tls.certificate_details)
CERT_FIELDS: dict[str, dict[str, str]] = {
    "nb": {
        "subject": "Subjekt",
        "issuer": "Utsteder",
        "serial": "Serienummer",
        "not_before": "Gyldig fra",
        "not_after": "Gyldig til",
        "subject_alt_names": "Alternative navn (SAN)",
        "public_key": "Offentlig nøkkel",
        "signature_hash": "Signaturhash",
        "sha256": "SHA-256-fingeravtrykk",
    },
    "en": {
        "subject": "Subject",
        "issuer": "Issuer",
        "serial": "Serial number",
        "not_before": "Valid from",
        "not_after": "Valid until",
        "subject_alt_names": "Alternative names (SAN)",
        "public_key": "Public key",
        "signature_hash": "Signature hash",
        "sha256": "SHA-256 fingerprint",
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

    def attempt(self, name: str) -> str:
        """What a security attempt is, in words (the attempt's own name when unknown)."""
        return ATTEMPTS[self.code].get(name, (name, ""))[0]

    def expected(self, name: str) -> str:
        return ATTEMPTS[self.code].get(name, ("", "–"))[1] or "–"

    def cert_field(self, key: str) -> str:
        return CERT_FIELDS[self.code].get(key, key)

    def duration(self, ns: float | None) -> str:
        """A duration in nanoseconds, in ms below 10 s and in s above; None: a dash."""
        if ns is None:
            return "–"
        if ns < 10e9:
            return f"{self.number(round(ns / 1e6, 3))}\u00a0ms"
        return f"{self.number(round(ns / 1e9, 2))}\u00a0s"

    def statistic(self, ns: float | None, n: int | None) -> str:
        """A latency statistic over n expectations: None with n > 0 means it falls among the events that did not
        arrive (censored above any limit), shown as words, never as a number."""
        if ns is None:
            return self.t("not_arrived_value") if n else "–"
        return self.duration(ns)

    def measured(self, c: dict[str, Any]) -> str:
        """A criterion's measured value (summary.json criterion); a censored one in words."""
        if c.get("censored") or (c.get("measured") is None and c.get("not_arrived")):
            return self.t("not_arrived_value")
        return self.quantity(c.get("measured"), str(c.get("unit", "")))

    def verdict(self, v: str | None) -> str:
        return self.text.get(f"v_{v}", str(v))

    def reason(self, code: dict[str, Any] | None, fallback: str = "") -> str:
        """The verdict's reason, worded in this language from its code (harness.outcomes.Reason)."""
        if not code or code.get("code") not in REASONS[self.code]:
            return fallback
        words = REASONS[self.code]
        text = words[str(code["code"])].format(
            items=", ".join(code.get("items") or []), classes="/".join(code.get("classes") or [])
        )
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
