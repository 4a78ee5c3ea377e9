"""VKP-shaped FHIR R4 (velferdsteknologisk knutepunkt): what a welfare-tech platform sends to the patient record.

Sans-I/O: dicts and bytes in, typed summaries out; no sockets, threads or clocks (every time is a parameter).

Three parts:
- builders: the resources a platform sends for an alarm handled at a response centre (DetectedIssue +
  Encounter + Composition with the operator's note), a missed dose (DetectedIssue 1.1), a taken dose
  (MedicationDispense), low battery (1.17), supervision loss, and a health-meter reading (Observation with
  LOINC codes and UCUM units), wrapped in transaction or message Bundles;
- parsing: incoming JSON is validated with the fhir.resources models (structure, cardinality, datatypes);
  what is valid FHIR but wrong for VKP (unknown alert code, missing patient, wrong unit) becomes a
  `Finding`; malformed input raises `FhirError` (a `ProtocolError`) naming the FHIR path;
- HelseID-shaped OAuth2 (client credentials with a private_key_jwt client assertion): the assertion, its
  verification, the access token the probe issues, and the replay cache for assertion ids.

Models: fhir.resources 8 ships R4B (4.3.0), not R4 (4.0.1). For the resources used here (Bundle,
DetectedIssue, Encounter, Composition, MedicationDispense, Observation, MessageHeader, OperationOutcome)
R4B made no change to R4's elements, so the R4B models validate VKP's R4 content.

Facts from the VKP R4 implementation guide (simplifier.net, VelferdsteknologiskknutepunktVKP-R4): several
resources travel in one Bundle; DetectedIssue.code from vkp-alert-code-v090, severity from
DetectedIssueSeverity, identifiedDateTime, author the device or person; Encounter status finished, class VR,
participant.individual the devices and operators; Composition status final, type LOINC 34133-9, title
"Journalnotat for respons på hendelse", section.entry pointing to the DetectedIssue; MedicationDispense
only for successful dispenses. Only three alert codes were confirmed (1.1, 1.17, 1.19): a lab adds the
supplier's other codes with `CodeTables.with_alert_codes`.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from harness.protocols.base import ProtocolError

__all__ = [
    "ALERT_SYSTEM",
    "CLIENT_ASSERTION_TYPE",
    "DEFAULT_CODES",
    "DNR_SYSTEM",
    "FHIR_JSON",
    "FNR_SYSTEM",
    "LOINC",
    "MAX_ENTRIES",
    "MAX_FHIR_BYTES",
    "SCOPE_PREFIX",
    "UCUM",
    "AccessClaims",
    "AssertionClaims",
    "CodeTables",
    "FhirError",
    "Finding",
    "Ident",
    "JtiCache",
    "OAuthError",
    "ParsedBundle",
    "PrivateKey",
    "PublicKey",
    "Reading",
    "ReadingSpec",
    "ResourceSummary",
    "TokenRequest",
    "alert_issue",
    "blood_pressure",
    "bundle",
    "composition_note",
    "decode",
    "encode",
    "encounter",
    "generate_key",
    "handled_alarm",
    "health_reading",
    "load_private_key",
    "low_battery",
    "make_access_token",
    "make_client_assertion",
    "medication_dispense",
    "missed_dose",
    "observation",
    "operation_outcome",
    "parse_bundle",
    "parse_resource",
    "parse_token_request",
    "power_disconnected",
    "private_pem",
    "public_key_from",
    "public_pem",
    "scope_for",
    "scopes_of",
    "searchset",
    "summarize",
    "supervision_loss",
    "taken_dose",
    "transaction_response",
    "unverified_issuer",
    "validate_model",
    "verify_access_token",
    "verify_client_assertion",
]

PROTOCOL = "vkp"
FHIR_JSON = "application/fhir+json"
MAX_FHIR_BYTES = 1024 * 1024
"""A VKP Bundle is a handful of resources and a note; a megabyte is generous and bounds what we parse."""
MAX_ENTRIES = 500
MAX_DEPTH = 64

ALERT_SYSTEM = "http://ehelse.no/fhir/CodeSystem/vkp-alert-code-v090"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
"""Norwegian national identity number (fødselsnummer); synthetic test users use synthetic numbers."""
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
HNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.3"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
NOTE_TYPE = "34133-9"
NOTE_TITLE = "Journalnotat for respons på hendelse"
DEVICE_SYSTEM = "urn:vtlab:device"
"""Identifier system for simulated devices (a lab maps real ones in its file)."""
OPERATOR_SYSTEM = "urn:vtlab:operator"
MESSAGE_EVENT = "urn:vtlab:vkp-event"
"""MessageHeader.eventUri for message Bundles; VKP's own event code system was not found in public text."""

BundleType = Literal["transaction", "message"]


# --------------------------------------------------------------------------------------------- errors


class FhirError(ProtocolError):
    """Input that is not valid FHIR (or not JSON): refused with 400 and an OperationOutcome naming `path`."""

    def __init__(self, reason: str, *, path: str = "", issues: Sequence[tuple[str, str]] = ()) -> None:
        self.path = path
        self.issues: tuple[tuple[str, str], ...] = tuple(issues) or ((path, reason),)
        super().__init__(PROTOCOL, f"{path}: {reason}" if path else reason)


@dataclass(frozen=True, slots=True)
class Finding:
    """Valid FHIR that VKP or the contract would not accept: an unknown code, a missing patient, a wrong unit."""

    path: str
    code: str  # unknown-code, missing-patient, missing-device, wrong-unit, bad-status, missing-time, ...
    message: str


# ---------------------------------------------------------------------------------------- code tables


@dataclass(frozen=True, slots=True)
class ReadingSpec:
    """A health-meter reading: its LOINC code, what it is, the UCUM units it may be given in."""

    loinc: str
    name: str
    units: tuple[str, ...]


_READINGS = (
    ReadingSpec("85354-9", "blood pressure panel", ()),
    ReadingSpec("8480-6", "systolic blood pressure", ("mm[Hg]",)),
    ReadingSpec("8462-4", "diastolic blood pressure", ("mm[Hg]",)),
    ReadingSpec("59408-5", "oxygen saturation by pulse oximetry", ("%",)),
    ReadingSpec("2708-6", "oxygen saturation in arterial blood", ("%",)),
    ReadingSpec("8867-4", "heart rate", ("/min",)),
    ReadingSpec("29463-7", "body weight", ("kg", "g", "[lb_av]")),
    ReadingSpec("8310-5", "body temperature", ("Cel", "[degF]")),
    ReadingSpec("15074-8", "glucose in blood (moles/volume)", ("mmol/L",)),
    ReadingSpec("14743-9", "glucose in capillary blood by glucometer (moles/volume)", ("mmol/L",)),
    ReadingSpec("2339-0", "glucose in blood (mass/volume)", ("mg/dL",)),
    ReadingSpec("41653-7", "glucose in capillary blood by glucometer (mass/volume)", ("mg/dL",)),
)

READING_KINDS: Mapping[str, str] = {
    "systolic": "8480-6",
    "diastolic": "8462-4",
    "spo2": "59408-5",
    "pulse": "8867-4",
    "weight": "29463-7",
    "temperature": "8310-5",
    "glucose": "15074-8",
}
"""Short names used by device models and scenario files for the reading codes."""

_STATUS: Mapping[str, frozenset[str]] = {
    # FHIR R4 required bindings; the models accept any code, so these are checked here.
    "DetectedIssue": frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
    ),
    "Observation": frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
    ),
    "Encounter": frozenset(
        {
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    "Composition": frozenset({"preliminary", "final", "amended", "entered-in-error"}),
    "MedicationDispense": frozenset(
        {
            "preparation",
            "in-progress",
            "cancelled",
            "on-hold",
            "completed",
            "entered-in-error",
            "stopped",
            "declined",
            "unknown",
        }
    ),
}
_SEVERITY = frozenset({"high", "moderate", "low"})
_BUNDLE_TYPES = frozenset({"transaction", "batch", "message", "document", "collection", "searchset", "history"})
_PATIENT_RESOURCES = frozenset({"DetectedIssue", "Encounter", "Composition", "MedicationDispense", "Observation"})


@dataclass(frozen=True, slots=True)
class CodeTables:
    """The codes a lab accepts. A supplier's full VKP alert code list goes in with `with_alert_codes`."""

    alert_system: str = ALERT_SYSTEM
    alert_codes: Mapping[str, str] = field(
        default_factory=lambda: {
            "1.1": "Ikke utlevert",
            "1.17": "Batteri lavt",
            "1.19": "Ikke tilkoblet strøm",
        }
    )
    readings: Mapping[str, ReadingSpec] = field(default_factory=lambda: {r.loinc: r for r in _READINGS})
    patient_systems: frozenset[str] = frozenset({FNR_SYSTEM, DNR_SYSTEM, HNR_SYSTEM})

    def with_alert_codes(self, extra: Mapping[str, str]) -> CodeTables:
        return CodeTables(self.alert_system, {**self.alert_codes, **extra}, self.readings, self.patient_systems)

    def with_patient_systems(self, extra: Iterable[str]) -> CodeTables:
        return CodeTables(self.alert_system, self.alert_codes, self.readings, self.patient_systems | set(extra))

    def with_readings(self, extra: Iterable[ReadingSpec]) -> CodeTables:
        readings = {**self.readings, **{r.loinc: r for r in extra}}
        return CodeTables(self.alert_system, self.alert_codes, readings, self.patient_systems)


DEFAULT_CODES = CodeTables()

# ------------------------------------------------------------------------------------------- builders


@dataclass(frozen=True, slots=True)
class Ident:
    """A business identifier (system + value) with an optional display name: patients, devices, operators."""

    system: str
    value: str
    display: str | None = None

    def reference(self, resource_type: str) -> dict[str, Any]:
        ref: dict[str, Any] = {"type": resource_type, "identifier": {"system": self.system, "value": self.value}}
        if self.display:
            ref["display"] = self.display
        return ref


def _ts(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("FHIR dateTime with a time needs a timezone: pass an aware datetime")
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    return str(uuid.uuid4())


def alert_issue(
    patient: Ident,
    device: Ident,
    code: str,
    at: datetime,
    *,
    severity: str | None = "high",
    detail: str | None = None,
    codes: CodeTables = DEFAULT_CODES,
) -> dict[str, Any]:
    """A VkpDetectedIssue: an alert from `device` about `patient` with a code from the VKP alert code system."""
    if code not in codes.alert_codes:
        raise ValueError(f"alert code {code!r} is not in the lab's VKP code table; add it with with_alert_codes")
    res: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "status": "final",
        "code": {"coding": [{"system": codes.alert_system, "code": code, "display": codes.alert_codes[code]}]},
        "patient": patient.reference("Patient"),
        "identifiedDateTime": _ts(at),
        "author": device.reference("Device"),
    }
    if severity is not None:
        res["severity"] = severity
    if detail:
        res["detail"] = detail
    return res


def encounter(
    patient: Ident,
    device: Ident,
    start: datetime,
    end: datetime,
    *,
    operator: Ident | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A VkpEncounter: the follow-up of an alarm (class VR), its devices and the operator who handled it."""
    participants: list[dict[str, Any]] = [{"individual": device.reference("Device"), "period": _period(start, end)}]
    if operator is not None:
        participants.append({"individual": operator.reference("Practitioner"), "period": _period(start, end)})
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": V3_ACT_CODE, "code": "VR", "display": "virtual"},
        "subject": patient.reference("Patient"),
        "participant": participants,
        "period": _period(start, end),
    }
    if reason:
        res["reasonCode"] = [{"text": reason}]
    return res


def _period(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": _ts(start), "end": _ts(end)}


def composition_note(
    patient: Ident,
    operator: Ident,
    at: datetime,
    note: str,
    *,
    issue_ref: str | None = None,
    encounter_ref: str | None = None,
    events: Sequence[tuple[str, datetime]] = (),
) -> dict[str, Any]:
    """A VkpComposition: the response centre's note (LOINC 34133-9), pointing to the alert it follows up."""
    div = f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(note)}</p></div>'
    section: dict[str, Any] = {"title": "Oppfølging", "text": {"status": "additional", "div": div}}
    if issue_ref:
        section["entry"] = [{"reference": issue_ref}]
    res: dict[str, Any] = {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": LOINC, "code": NOTE_TYPE, "display": "Summarization of episode note"}]},
        "subject": patient.reference("Patient"),
        "date": _ts(at),
        "author": [operator.reference("Practitioner")],
        "title": NOTE_TITLE,
        "section": [section],
    }
    if encounter_ref:
        res["encounter"] = {"reference": encounter_ref}
    if events:
        res["event"] = [{"code": [{"text": text}], "period": {"start": _ts(t)}} for text, t in events]
    return res


def medication_dispense(
    patient: Ident, dispenser: Ident, at: datetime, *, medication: str = "Multidose"
) -> dict[str, Any]:
    """A VkpMedicationDispense: a dose the dispenser handed over (only successful dispenses are sent this way)."""
    return {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": {"text": medication},
        "subject": patient.reference("Patient"),
        "performer": [{"actor": dispenser.reference("Device")}],
        "whenHandedOver": _ts(at),
    }


def observation(
    patient: Ident,
    device: Ident,
    at: datetime,
    loinc: str,
    value: Decimal | int | str | None = None,
    unit: str | None = None,
    *,
    components: Sequence[tuple[str, Decimal | int | str, str]] = (),
    codes: CodeTables = DEFAULT_CODES,
) -> dict[str, Any]:
    """An Observation of a health-meter reading, category vital-signs, valueQuantity in UCUM units."""
    spec = codes.readings.get(loinc)
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": loinc, **({"display": spec.name} if spec else {})}]},
        "subject": patient.reference("Patient"),
        "effectiveDateTime": _ts(at),
        "device": device.reference("Device"),
    }
    if value is not None:
        if unit is None:
            raise ValueError("a reading value needs its UCUM unit")
        res["valueQuantity"] = _quantity(value, unit)
    if components:
        res["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": c}]}, "valueQuantity": _quantity(v, u)}
            for c, v, u in components
        ]
    return res


def _quantity(value: Decimal | int | str, unit: str) -> dict[str, Any]:
    return {"value": Decimal(str(value)), "unit": unit, "system": UCUM, "code": unit}


def blood_pressure(
    patient: Ident, device: Ident, at: datetime, systolic: Decimal | int, diastolic: Decimal | int
) -> dict[str, Any]:
    """Blood pressure as the vital-signs panel 85354-9 with systolic 8480-6 and diastolic 8462-4 in mm[Hg]."""
    return observation(
        patient, device, at, "85354-9", components=(("8480-6", systolic, "mm[Hg]"), ("8462-4", diastolic, "mm[Hg]"))
    )


def bundle(
    resources: Sequence[dict[str, Any]],
    *,
    type: BundleType = "transaction",
    at: datetime,
    full_urls: Sequence[str] | None = None,
    source: str = "urn:vtlab:platform",
    event: str = MESSAGE_EVENT,
) -> dict[str, Any]:
    """Wrap resources in a transaction Bundle (POST each) or a message Bundle (MessageHeader first)."""
    urls = list(full_urls) if full_urls is not None else [f"urn:uuid:{_new_id()}" for _ in resources]
    entries: list[dict[str, Any]] = []
    for url, res in zip(urls, resources, strict=True):
        entry: dict[str, Any] = {"fullUrl": url, "resource": res}
        if type == "transaction":
            entry["request"] = {"method": "POST", "url": res["resourceType"]}
        entries.append(entry)
    if type == "message":
        header = {
            "resourceType": "MessageHeader",
            "eventUri": event,
            "source": {"endpoint": source},
            "focus": [{"reference": u} for u in urls],
        }
        entries.insert(0, {"fullUrl": f"urn:uuid:{_new_id()}", "resource": header})
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{_new_id()}"},
        "type": type,
        "timestamp": _ts(at),
        "entry": entries,
    }


def handled_alarm(
    patient: Ident,
    device: Ident,
    code: str,
    raised_at: datetime,
    handled_at: datetime,
    operator: Ident,
    note: str,
    *,
    severity: str | None = "high",
    type: BundleType = "transaction",
    codes: CodeTables = DEFAULT_CODES,
) -> dict[str, Any]:
    """An alarm handled at a response centre: DetectedIssue + Encounter + Composition with the operator's note."""
    urls = [f"urn:uuid:{_new_id()}" for _ in range(3)]
    issue = alert_issue(patient, device, code, raised_at, severity=severity, codes=codes)
    enc = encounter(patient, device, raised_at, handled_at, operator=operator, reason=codes.alert_codes[code])
    note_res = composition_note(
        patient,
        operator,
        handled_at,
        note,
        issue_ref=urls[0],
        encounter_ref=urls[1],
        events=(("Alarm mottatt", raised_at), ("Alarm avsluttet", handled_at)),
    )
    return bundle([issue, enc, note_res], type=type, at=handled_at, full_urls=urls)


def _alert_bundle(
    patient: Ident, device: Ident, code: str, at: datetime, type: BundleType, codes: CodeTables, **kw: Any
) -> dict[str, Any]:
    return bundle([alert_issue(patient, device, code, at, codes=codes, **kw)], type=type, at=at)


def missed_dose(
    patient: Ident,
    dispenser: Ident,
    at: datetime,
    *,
    type: BundleType = "transaction",
    codes: CodeTables = DEFAULT_CODES,
) -> dict[str, Any]:
    """A dose the dispenser did not hand over: DetectedIssue 1.1 'ikke utlevert'."""
    return _alert_bundle(patient, dispenser, "1.1", at, type, codes)


def taken_dose(
    patient: Ident, dispenser: Ident, at: datetime, *, medication: str = "Multidose", type: BundleType = "transaction"
) -> dict[str, Any]:
    """A dose taken from the dispenser: one MedicationDispense."""
    return bundle([medication_dispense(patient, dispenser, at, medication=medication)], type=type, at=at)


def low_battery(
    patient: Ident,
    device: Ident,
    at: datetime,
    *,
    level_percent: int | None = None,
    type: BundleType = "transaction",
    codes: CodeTables = DEFAULT_CODES,
) -> dict[str, Any]:
    """Low battery: DetectedIssue 1.17 'batteri lavt' (the level, if known, as detail text)."""
    detail = f"Batterinivå {level_percent} %" if level_percent is not None else None
    return _alert_bundle(patient, device, "1.17", at, type, codes, severity="moderate", detail=detail)


def power_disconnected(
    patient: Ident, device: Ident, at: datetime, *, type: BundleType = "transaction", codes: CodeTables = DEFAULT_CODES
) -> dict[str, Any]:
    """Mains power lost: DetectedIssue 1.19 'ikke tilkoblet strøm'."""
    return _alert_bundle(patient, device, "1.19", at, type, codes, severity="moderate")


def supervision_loss(
    patient: Ident,
    device: Ident,
    at: datetime,
    *,
    code: str,
    type: BundleType = "transaction",
    codes: CodeTables = DEFAULT_CODES,
) -> dict[str, Any]:
    """A device that stopped reporting (missed heartbeats).

    The VKP code for supervision loss was not in the public text found, so the lab file names it (`code`)
    and adds it to its code table; the builder refuses a code the table does not know.
    """
    return _alert_bundle(patient, device, code, at, type, codes, severity="high", detail="Mistet kontakt med enhet")


def health_reading(
    patient: Ident,
    device: Ident,
    at: datetime,
    kind: str,
    value: Decimal | int | str,
    unit: str,
    *,
    type: BundleType = "transaction",
    codes: CodeTables = DEFAULT_CODES,
) -> dict[str, Any]:
    """One health-meter reading (kind: spo2, pulse, weight, temperature, glucose, or a LOINC code)."""
    loinc = READING_KINDS.get(kind, kind)
    return bundle([observation(patient, device, at, loinc, value, unit, codes=codes)], type=type, at=at)


UCUM_OF_UNIT: Mapping[str, str] = {"mmHg": "mm[Hg]", "bpm": "/min", "lb": "[lb_av]", "degF": "[degF]"}
"""Device units (devices.catalog) whose UCUM code is spelt differently; every other unit is already UCUM."""
BLOOD_PRESSURE_PANEL = "85354-9"


def meter_readings(
    patient: Ident,
    device: Ident,
    at: datetime,
    readings: Mapping[str, tuple[Decimal | int | str, str]],
    *,
    type: BundleType = "transaction",
    codes: CodeTables = DEFAULT_CODES,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A meter's readings (catalog names, device units) as vital-signs Observations in one Bundle: systolic
    and diastolic as components of the blood-pressure panel 85354-9, every other named reading on its own.
    Returns the Bundle and the reading names it could not code (no LOINC code in READING_KINDS);
    ValueError when nothing could be coded."""

    def q(name: str) -> tuple[Decimal | int | str, str]:
        value, unit = readings[name]
        return value, UCUM_OF_UNIT.get(unit, unit)

    resources: list[dict[str, Any]] = []
    left = dict(readings)
    if "systolic" in readings and "diastolic" in readings:
        parts = tuple((READING_KINDS[n], *q(n)) for n in ("systolic", "diastolic"))
        resources.append(observation(patient, device, at, BLOOD_PRESSURE_PANEL, components=parts, codes=codes))
        del left["systolic"], left["diastolic"]
    uncoded = tuple(n for n in left if n not in READING_KINDS)
    for name in left:
        if name in READING_KINDS:
            resources.append(observation(patient, device, at, READING_KINDS[name], *q(name), codes=codes))
    if not resources:
        raise ValueError(f"no LOINC code for the readings {sorted(readings)}")
    return bundle(resources, type=type, at=at), uncoded


# ------------------------------------------------------------------------------------ server answers


def operation_outcome(
    issues: Sequence[tuple[str, str, str, str | None]],
) -> dict[str, Any]:
    """An OperationOutcome from (severity, code, diagnostics, expression) tuples."""
    out = []
    for severity, code, diagnostics, expression in issues:
        issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
        if expression:
            issue["expression"] = [expression]
        out.append(issue)
    return {"resourceType": "OperationOutcome", "issue": out}


def transaction_response(
    entries: Sequence[tuple[str, str | None, str | None]], *, type: str = "transaction-response"
) -> dict[str, Any]:
    """A transaction-response (or batch-response) Bundle from (status line, location, lastModified) tuples."""
    out = []
    for status, location, last_modified in entries:
        response: dict[str, Any] = {"status": status}
        if location:
            response["location"] = location
            response["etag"] = 'W/"1"'
        if last_modified:
            response["lastModified"] = last_modified
        out.append({"response": response})
    return {"resourceType": "Bundle", "type": type, "entry": out}


def searchset(
    resources: Sequence[dict[str, Any]], *, self_url: str, next_url: str | None, total: int | None = None
) -> dict[str, Any]:
    """A searchset Bundle page with its self and next links."""
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if total is not None:
        out["total"] = total
    out["entry"] = [
        {"fullUrl": f"{r['resourceType']}/{r.get('id', '')}", "resource": r, "search": {"mode": "match"}}
        for r in resources
    ]
    return out


# ------------------------------------------------------------------------------------ bytes <-> JSON


def _json_default(o: object) -> Any:
    if isinstance(o, Decimal):
        return int(o) if o == o.to_integral_value() else float(o)
    if isinstance(o, datetime):
        return _ts(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


def encode(resource: Mapping[str, Any]) -> bytes:
    """FHIR JSON bytes (UTF-8) of a resource dict built here or parsed by `decode`."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_tree(obj: dict[str, Any], limit: int) -> None:
    """Depth bound (iteratively: a deep array must not exhaust the validators' stack later) and no
    `"name": null` members, which FHIR JSON forbids and the models would take for an absent element."""
    root = obj.get("resourceType") if isinstance(obj.get("resourceType"), str) else "Resource"
    stack: list[tuple[Any, int, str]] = [(obj, 1, str(root)[:60])]
    while stack:
        cur, d, path = stack.pop()
        if d > limit:
            raise FhirError(f"JSON nested deeper than {limit} levels", path=path)
        if isinstance(cur, dict):
            for k, v in cur.items():
                if v is None:
                    raise FhirError("null is not a FHIR JSON value (leave the element out)", path=f"{path}.{k}")
                stack.append((v, d + 1, f"{path}.{k}"))
        elif isinstance(cur, list):
            stack.extend((v, d + 1, f"{path}[{i}]") for i, v in enumerate(cur))


def decode(data: bytes) -> dict[str, Any]:
    """Bytes to a JSON object, bounded in size and depth; FHIR decimals kept exact as Decimal."""
    if len(data) > MAX_FHIR_BYTES:
        raise FhirError(f"body of {len(data)} bytes exceeds the limit of {MAX_FHIR_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FhirError(f"not UTF-8 at byte {e.start}") from None
    text = text.removeprefix("\ufeff")
    try:
        obj = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise FhirError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, int digit limit, NaN/Infinity
        raise FhirError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise FhirError(f"expected a JSON object (a FHIR resource), got {type(obj).__name__}")
    _check_tree(obj, MAX_DEPTH)
    return obj


# ------------------------------------------------------------------------------------ model validation


def _fhir_path(root: str, loc: Sequence[int | str]) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def validate_model(resource: Mapping[str, Any], *, path: str | None = None) -> Any:
    """Validate a resource dict with the fhir.resources (R4B) model of its resourceType; return the model.

    Any failure of the library (a ValidationError, or the KeyError it raises for an unknown nested
    resourceType) becomes a `FhirError` naming the FHIR path of the first problem.
    """
    rtype = resource.get("resourceType")
    root = path or (rtype if isinstance(rtype, str) else "Resource")
    if not isinstance(rtype, str) or not rtype:
        raise FhirError("resourceType missing", path=root)
    try:
        model_cls = get_fhir_model_class(rtype)
    except (ValueError, KeyError, AttributeError):
        raise FhirError(f"unknown resourceType {rtype[:60]!r}", path=f"{root}.resourceType") from None
    try:
        return model_cls.model_validate(dict(resource))
    except ValidationError as e:
        issues = []
        for err in e.errors(include_url=False, include_input=False)[:20]:
            issues.append((_fhir_path(root, err.get("loc", ())), str(err.get("msg", "invalid"))))
        first_path, first_msg = issues[0] if issues else (root, "invalid")
        raise FhirError(first_msg, path=first_path, issues=issues) from None
    except KeyError as e:  # fhir_core's lookup of a nested resource type it does not know
        raise FhirError(f"unknown resourceType {str(e)[:60]}", path=root) from None
    except (TypeError, ValueError, AttributeError, RecursionError, InvalidOperation) as e:
        raise FhirError(f"invalid: {type(e).__name__}", path=root) from None


# ------------------------------------------------------------------------------------------- summaries


@dataclass(frozen=True, slots=True)
class Reading:
    """A measured value with its LOINC code and UCUM unit."""

    loinc: str
    value: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class ResourceSummary:
    """The correlation fields of one resource: whose, from which device, what, which values, when."""

    resource_type: str
    path: str  # FHIR path in what arrived, e.g. Bundle.entry[1].resource
    kind: str  # alert, encounter, note, dispense, reading, other
    id: str | None = None
    full_url: str | None = None
    version: str | None = None
    last_updated: datetime | None = None
    patient: Ident | None = None
    device: Ident | None = None
    code: str | None = None
    code_system: str | None = None
    display: str | None = None
    severity: str | None = None
    status: str | None = None
    time: datetime | None = None
    readings: tuple[Reading, ...] = ()
    note: str | None = None
    bundle_id: str | None = None
    orgnr: str | None = None  # the municipality the record was addressed to (set by the probe)
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    type: str
    id: str | None
    identifier: str | None
    timestamp: datetime | None
    resources: tuple[ResourceSummary, ...]
    findings: tuple[Finding, ...]
    raw_resources: tuple[dict[str, Any], ...] = field(repr=False, default=())
    next_url: str | None = None

    @property
    def all_findings(self) -> tuple[Finding, ...]:
        return self.findings + tuple(f for r in self.resources for f in r.findings)


_KIND = {
    "DetectedIssue": "alert",
    "Encounter": "encounter",
    "Composition": "note",
    "MedicationDispense": "dispense",
    "Observation": "reading",
}
_TAG = re.compile(r"<[^>]*>")


def _ident_of(obj: Any) -> Ident | None:
    if obj is None:
        return None
    system, value = getattr(obj, "system", None), getattr(obj, "value", None)
    if value is None:
        return None
    return Ident(str(system or ""), str(value))


class _Index:
    """Resolves references inside one Bundle: fullUrl or Type/id to the entry's resource model."""

    def __init__(self) -> None:
        self.by_ref: dict[str, Any] = {}

    def add(self, full_url: str | None, model: Any) -> None:
        if full_url:
            self.by_ref[full_url] = model
        rid = getattr(model, "id", None)
        if rid:
            self.by_ref[f"{model.get_resource_type()}/{rid}"] = model

    def ident(self, ref: Any) -> tuple[Ident | None, str | None]:
        """The identifier a Reference points at, and the resource type it names (if it says)."""
        if ref is None:
            return None, None
        rtype = getattr(ref, "type", None)
        display = getattr(ref, "display", None)
        ident = _ident_of(getattr(ref, "identifier", None))
        target = None
        reference = getattr(ref, "reference", None)
        if reference:
            target = self.by_ref.get(reference)
            if rtype is None and "/" in reference and not reference.startswith("urn:"):
                rtype = reference.rsplit("/", 2)[-2]
        if ident is None and target is not None:
            rtype = target.get_resource_type()
            for i in getattr(target, "identifier", None) or []:
                ident = _ident_of(i)
                if ident:
                    break
        if ident is not None and display:
            ident = Ident(ident.system, ident.value, str(display))
        return ident, rtype


def _time_of(value: Any, path: str, findings: list[Finding]) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    findings.append(Finding(path, "imprecise-time", f"{value!s} is a date without a time of day"))
    return None


def _coding_check(
    codings: Sequence[Any], system: str, known: Mapping[str, Any], path: str, findings: list[Finding], what: str
) -> tuple[str | None, str | None, str | None]:
    """First coding of `system`; finding if it is absent or its code is not in `known`."""
    for i, c in enumerate(codings):
        if getattr(c, "system", None) == system:
            code = getattr(c, "code", None)
            if code not in known:
                findings.append(Finding(f"{path}.coding[{i}].code", "unknown-code", f"{what} {code!r} not in {system}"))
            return code, system, getattr(c, "display", None)
    systems = sorted({str(getattr(c, "system", None)) for c in codings})
    findings.append(Finding(f"{path}.coding", "unknown-code", f"no {what} from {system} (got systems {systems})"))
    first = codings[0] if codings else None
    return (getattr(first, "code", None), getattr(first, "system", None), getattr(first, "display", None))


def _quantity_reading(
    q: Any, loinc: str | None, path: str, codes: CodeTables, findings: list[Finding]
) -> Reading | None:
    if q is None:
        return None
    value = getattr(q, "value", None)
    unit = getattr(q, "code", None) or getattr(q, "unit", None)
    if value is None:
        findings.append(Finding(f"{path}.value", "missing-value", "quantity without a value"))
        return None
    if getattr(q, "system", None) != UCUM:
        findings.append(Finding(f"{path}.system", "wrong-unit", f"unit system is {q.system!r}, not UCUM ({UCUM})"))
    spec = codes.readings.get(loinc or "")
    if spec is not None and spec.units and unit not in spec.units:
        findings.append(Finding(f"{path}.code", "wrong-unit", f"{spec.name} in {unit!r}; expected one of {spec.units}"))
    return Reading(loinc or "", Decimal(str(value)), str(unit or ""))


def summarize(
    model: Any,
    *,
    path: str,
    full_url: str | None = None,
    index: _Index | None = None,
    codes: CodeTables = DEFAULT_CODES,
    bundle_id: str | None = None,
) -> ResourceSummary:
    """The correlation fields of a validated resource model, with the VKP findings about it."""
    idx = index or _Index()
    rtype = model.get_resource_type()
    findings: list[Finding] = []
    patient: Ident | None = None
    device: Ident | None = None
    code = system = display = severity = note = None
    when: datetime | None = None
    readings: list[Reading] = []
    status = getattr(model, "status", None)

    allowed = _STATUS.get(rtype)
    if allowed is not None and status not in allowed:
        findings.append(Finding(f"{path}.status", "bad-status", f"{status!r} is not a {rtype} status"))

    def patient_from(ref: Any, where: str) -> Ident | None:
        ident, _ = idx.ident(ref)
        if ident is None:
            findings.append(Finding(where, "missing-patient", "no patient identifier (the synthetic user's)"))
        elif ident.system not in codes.patient_systems:
            findings.append(
                Finding(f"{where}.identifier.system", "unknown-code", f"patient id system {ident.system!r}")
            )
        return ident

    def device_from(refs: Iterable[tuple[Any, str]]) -> Ident | None:
        untyped = None
        for ref, _where in refs:
            ident, t = idx.ident(ref)
            if ident is not None and t == "Device":
                return ident
            if ident is not None and t is None and untyped is None and ident.system not in codes.patient_systems:
                untyped = ident  # an identifier without a type that is not a person's: taken as the device
        return untyped

    if rtype == "DetectedIssue":
        patient = patient_from(model.patient, f"{path}.patient")
        c = model.code
        if c is None:
            findings.append(Finding(f"{path}.code", "unknown-code", "DetectedIssue without a code"))
        else:
            code, system, display = _coding_check(
                c.coding or [], codes.alert_system, codes.alert_codes, f"{path}.code", findings, "alert code"
            )
        severity = model.severity
        if severity is not None and severity not in _SEVERITY:
            findings.append(Finding(f"{path}.severity", "bad-status", f"severity {severity!r}"))
        when = _time_of(model.identifiedDateTime, f"{path}.identifiedDateTime", findings)
        if model.identifiedDateTime is None and model.identifiedPeriod is None:
            findings.append(Finding(f"{path}.identifiedDateTime", "missing-time", "no time the alert was identified"))
        device = device_from([(model.author, f"{path}.author")] + [(r, "") for r in model.implicated or []])
        if device is None:
            findings.append(Finding(f"{path}.author", "missing-device", "no device identifier as author"))
    elif rtype == "Encounter":
        patient = patient_from(model.subject, f"{path}.subject")
        device = device_from((p.individual, "") for p in model.participant or [])
        period = model.period
        when = _time_of(period.start if period else None, f"{path}.period.start", findings)
        if model.reasonCode:
            display = model.reasonCode[0].text
    elif rtype == "Composition":
        patient = patient_from(model.subject, f"{path}.subject")
        code, system, display = _coding_check(
            model.type.coding or [], LOINC, {NOTE_TYPE: 1}, f"{path}.type", findings, "note type"
        )
        when = _time_of(model.date, f"{path}.date", findings)
        texts = []
        for s in model.section or []:
            if s.text is not None and s.text.div:
                texts.append(html.unescape(_TAG.sub(" ", str(s.text.div))))
        note = " ".join(" ".join(texts).split()) or None
    elif rtype == "MedicationDispense":
        patient = patient_from(model.subject, f"{path}.subject")
        device = device_from((p.actor, "") for p in model.performer or [])
        if device is None:
            findings.append(Finding(f"{path}.performer", "missing-device", "no dispenser identifier as performer"))
        when = _time_of(model.whenHandedOver, f"{path}.whenHandedOver", findings)
        if model.whenHandedOver is None:
            findings.append(Finding(f"{path}.whenHandedOver", "missing-time", "no time the dose was handed over"))
        if model.category is not None and model.category.coding:
            code, system, display = model.category.coding[0].code, model.category.coding[0].system, None
    elif rtype == "Observation":
        patient = patient_from(model.subject, f"{path}.subject")
        device = device_from([(model.device, f"{path}.device")])
        if device is None:
            findings.append(Finding(f"{path}.device", "missing-device", "no measuring device identifier"))
        code, system, display = _coding_check(
            model.code.coding or [], LOINC, codes.readings, f"{path}.code", findings, "reading code"
        )
        when = _time_of(model.effectiveDateTime, f"{path}.effectiveDateTime", findings)
        if model.effectiveDateTime is None and model.effectivePeriod is None and model.effectiveInstant is None:
            findings.append(Finding(f"{path}.effective", "missing-time", "no time of measurement"))
        r = _quantity_reading(model.valueQuantity, code, f"{path}.valueQuantity", codes, findings)
        if r is not None:
            readings.append(r)
        for i, comp in enumerate(model.component or []):
            cpath = f"{path}.component[{i}]"
            ccode, _, _ = _coding_check(
                comp.code.coding or [], LOINC, codes.readings, f"{cpath}.code", findings, "code"
            )
            r = _quantity_reading(comp.valueQuantity, ccode, f"{cpath}.valueQuantity", codes, findings)
            if r is not None:
                readings.append(r)
        if not readings:
            findings.append(Finding(path, "missing-value", "an Observation without a quantity"))
    meta = getattr(model, "meta", None)
    return ResourceSummary(
        resource_type=rtype,
        path=path,
        kind=_KIND.get(rtype, "other"),
        id=getattr(model, "id", None),
        full_url=full_url,
        version=getattr(meta, "versionId", None) if meta else None,
        last_updated=getattr(meta, "lastUpdated", None) if meta else None,
        patient=patient,
        device=device,
        code=code,
        code_system=system,
        display=display,
        severity=severity,
        status=status,
        time=when,
        readings=tuple(readings),
        note=note,
        bundle_id=bundle_id,
        findings=tuple(findings),
    )


def _checked(obj: dict[str, Any]) -> dict[str, Any]:
    _check_tree(obj, MAX_DEPTH)
    return obj


def _summarize_safely(model: Any, **kw: Any) -> ResourceSummary:
    """`summarize`, with any gap the models left (an element they let through empty) as a FhirError."""
    try:
        return summarize(model, **kw)
    except (AttributeError, TypeError, ValueError, IndexError, InvalidOperation) as e:
        raise FhirError(f"incomplete resource ({type(e).__name__})", path=str(kw.get("path", ""))) from None


def parse_resource(
    data: bytes | Mapping[str, Any], *, expected_type: str | None = None, codes: CodeTables = DEFAULT_CODES
) -> tuple[dict[str, Any], ResourceSummary]:
    """One resource POSTed on its own (`.../<Resource>`): validated, summarised."""
    obj = decode(data) if isinstance(data, bytes | bytearray) else _checked(dict(data))
    rtype = obj.get("resourceType")
    if expected_type is not None and rtype != expected_type:
        raise FhirError(f"resourceType {str(rtype)[:60]!r} posted to {expected_type}", path="resourceType")
    model = validate_model(obj)
    return obj, _summarize_safely(model, path=str(rtype), codes=codes)


def parse_bundle(data: bytes | Mapping[str, Any], *, codes: CodeTables = DEFAULT_CODES) -> ParsedBundle:
    """A Bundle (transaction, batch, message, document, collection or searchset): validated, summarised."""
    obj = decode(data) if isinstance(data, bytes | bytearray) else _checked(dict(data))
    if obj.get("resourceType") != "Bundle":
        raise FhirError(f"expected a Bundle, got {str(obj.get('resourceType'))[:60]!r}", path="resourceType")
    entries_raw = obj.get("entry")
    if isinstance(entries_raw, list) and len(entries_raw) > MAX_ENTRIES:
        raise FhirError(f"{len(entries_raw)} entries exceed the limit of {MAX_ENTRIES}", path="Bundle.entry")
    model = validate_model(obj, path="Bundle")
    btype = model.type
    findings: list[Finding] = []
    if btype not in _BUNDLE_TYPES:
        raise FhirError(f"Bundle.type {btype!r} cannot be submitted", path="Bundle.type")
    entries = model.entry or []
    if btype == "message" and (
        not entries or entries[0].resource is None or entries[0].resource.get_resource_type() != "MessageHeader"
    ):
        raise FhirError("a message Bundle starts with a MessageHeader (bdl-12)", path="Bundle.entry[0]")
    if btype == "document" and (
        not entries or entries[0].resource is None or entries[0].resource.get_resource_type() != "Composition"
    ):
        raise FhirError("a document Bundle starts with a Composition (bdl-11)", path="Bundle.entry[0]")
    index = _Index()
    for e in entries:
        if e.resource is not None:
            index.add(e.fullUrl, e.resource)
    bundle_id = model.identifier.value if model.identifier is not None else model.id
    summaries: list[ResourceSummary] = []
    raws: list[dict[str, Any]] = []
    raw_entries = obj.get("entry") or []
    for i, e in enumerate(entries):
        path = f"Bundle.entry[{i}]"
        if btype in ("transaction", "batch"):
            if e.request is None:
                raise FhirError("a transaction entry needs a request (bdl-3)", path=f"{path}.request")
            if e.request.method in ("POST", "PUT") and e.resource is None:
                raise FhirError(f"{e.request.method} entry without a resource", path=f"{path}.resource")
        if e.resource is None:
            continue
        rtype = e.resource.get_resource_type()
        if rtype == "MessageHeader":
            continue
        if btype in ("transaction", "batch") and e.request is not None and e.request.method == "POST":
            url = str(e.request.url or "")
            if url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] != rtype:
                findings.append(Finding(f"{path}.request.url", "wrong-url", f"POST {url!r} for a {rtype}"))
        summaries.append(
            _summarize_safely(
                e.resource, path=f"{path}.resource", full_url=e.fullUrl, index=index, codes=codes, bundle_id=bundle_id
            )
        )
        raws.append(raw_entries[i]["resource"])
    if not summaries and btype in ("transaction", "batch", "message", "document"):
        findings.append(Finding("Bundle.entry", "empty", "a Bundle with no resources to record"))
    next_url = None
    for link in model.link or []:
        if link.relation == "next":
            next_url = str(link.url)
    return ParsedBundle(
        type=str(btype),
        id=model.id,
        identifier=bundle_id,
        timestamp=model.timestamp if isinstance(model.timestamp, datetime) else None,
        resources=tuple(summaries),
        findings=tuple(findings),
        raw_resources=tuple(raws),
        next_url=next_url,
    )


# ---------------------------------------------------------------------------- HelseID: OAuth2 + JWT

SCOPE_PREFIX = "nhn:vkp/api/user/"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS256", "ES256")
ACCESS_AUDIENCE = "nhn:vkp"


def scope_for(resource_type: str, access: Literal["read", "write"]) -> str:
    """`nhn:vkp/api/user/<resource>.<read|write>` (resource in lower case; compared case-insensitively)."""
    return f"{SCOPE_PREFIX}{resource_type.lower()}.{access}"


def scopes_of(resource_types: Iterable[str], access: Literal["read", "write"]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(scope_for(t, access) for t in resource_types))


class OAuthError(Exception):
    """A refused token request or access token (RFC 6749 section 5.2 / RFC 6750 error codes)."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}")


@dataclass(frozen=True, slots=True)
class TokenRequest:
    client_id: str | None
    assertion: str = field(repr=False)
    scopes: tuple[str, ...]


def parse_token_request(body: bytes) -> TokenRequest:
    """A client-credentials token request with a JWT client assertion (form-encoded body)."""
    from urllib.parse import parse_qs

    if len(body) > 64 * 1024:
        raise OAuthError("invalid_request", "request body too large")
    try:
        form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "body is not application/x-www-form-urlencoded") from None
    for name, values in form.items():
        if len(values) > 1:
            raise OAuthError("invalid_request", f"parameter {name} given more than once")
    one = {k: v[0] for k, v in form.items()}
    if one.get("grant_type") != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    if one.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise OAuthError("invalid_client", "client_assertion_type must be jwt-bearer (private_key_jwt)", status=401)
    assertion = one.get("client_assertion", "")
    if not assertion:
        raise OAuthError("invalid_client", "client_assertion missing", status=401)
    return TokenRequest(one.get("client_id") or None, assertion, tuple(one.get("scope", "").split()))


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def public_key_from(key: bytes | str | Mapping[str, Any]) -> PublicKey:
    """A public key from PEM or a JWK (the two forms a HelseID client registration carries)."""
    try:
        if isinstance(key, Mapping):
            loaded: Any = jwt.PyJWK(dict(key)).key
        else:
            loaded = serialization.load_pem_public_key(key.encode() if isinstance(key, str) else key)
    except (ValueError, TypeError, jwt.exceptions.PyJWKError) as e:
        raise ValueError(f"not a public key: {type(e).__name__}") from None
    if isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return loaded
    raise ValueError("only RSA and EC P-256 keys can sign client assertions")


def _alg_for(key: PublicKey | PrivateKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) else "ES256"


def make_client_assertion(
    client_id: str,
    token_url: str,
    private_key: PrivateKey,
    *,
    now: float,
    lifetime_s: int = 60,
    jti: str | None = None,
    kid: str | None = None,
) -> str:
    """The signed JWT a HelseID client sends as client_assertion (iss = sub = client_id, aud = token URL)."""
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": jti or _new_id(),
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + lifetime_s,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, private_key, algorithm=_alg_for(private_key), headers=headers)


@dataclass(frozen=True, slots=True)
class AssertionClaims:
    client_id: str
    jti: str
    exp: int


def _check_times(claims: Mapping[str, Any], now: float, leeway: float, what: str) -> int:
    try:
        exp = int(claims["exp"])
        iat = int(claims.get("iat", exp))
        nbf = int(claims.get("nbf", iat))
    except (KeyError, TypeError, ValueError):
        raise OAuthError("invalid_client", f"{what}: exp/iat/nbf must be numbers", status=401) from None
    if exp < now - leeway:
        raise OAuthError("invalid_client", f"{what} expired {int(now - exp)} s ago", status=401)
    if nbf > now + leeway or iat > now + leeway:
        raise OAuthError("invalid_client", f"{what} not yet valid (iat/nbf in the future)", status=401)
    return exp


def unverified_issuer(token: str) -> str | None:
    """The iss claim before verification (to choose the client's registered keys); None if unreadable."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    public_keys: Sequence[PublicKey],
    token_urls: Iterable[str],
    now: float,
    leeway_s: float = 5,
    max_lifetime_s: int = 300,
) -> AssertionClaims:
    """Check a client assertion: signature by one of the client's keys (RS256/ES256), iss = sub = client_id,
    aud = the token endpoint, exp in the future and not too far, jti present. Replay is the caller's
    `JtiCache`. Refusals raise `OAuthError('invalid_client', reason, status=401)`."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise OAuthError("invalid_client", "client_assertion is not a JWT", status=401) from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGS:
        raise OAuthError("invalid_client", f"client_assertion alg {str(alg)[:20]!r} not accepted", status=401)
    audiences = list(token_urls)
    claims: dict[str, Any] | None = None
    reason = "no registered key"
    for key in public_keys:
        if _alg_for(key) != alg:
            reason = f"alg {alg} does not match the registered key type"
            continue
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[alg],
                audience=audiences,
                issuer=client_id,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                },
            )
            break
        except jwt.InvalidAudienceError:
            raise OAuthError(
                "invalid_client", "client_assertion audience is not this token endpoint", status=401
            ) from None
        except jwt.InvalidIssuerError:
            raise OAuthError("invalid_client", "client_assertion iss is not the client id", status=401) from None
        except jwt.MissingRequiredClaimError as e:
            raise OAuthError("invalid_client", f"client_assertion lacks claim {e.claim}", status=401) from None
        except jwt.InvalidSignatureError:
            reason = "signature does not verify with a registered key"
        except jwt.PyJWTError as e:
            reason = f"unreadable ({type(e).__name__})"
    if claims is None:
        raise OAuthError("invalid_client", f"client_assertion: {reason}", status=401)
    if claims.get("sub") != client_id:
        raise OAuthError("invalid_client", "client_assertion sub is not the client id", status=401)
    exp = _check_times(claims, now, leeway_s, "client_assertion")
    if exp - now > max_lifetime_s:
        raise OAuthError("invalid_client", f"client_assertion lives longer than {max_lifetime_s} s", status=401)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise OAuthError("invalid_client", "client_assertion jti must be a non-empty string", status=401)
    return AssertionClaims(client_id, jti, exp)


class JtiCache:
    """Assertion ids seen until they expire: a second use of the same (client, jti) is a replay."""

    def __init__(self, max_size: int = 100_000) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._max = max_size

    def check_and_add(self, client_id: str, jti: str, exp: int, now: float) -> bool:
        """True if new (and now remembered); False if replayed."""
        if len(self._seen) >= self._max:
            self._seen = {k: v for k, v in self._seen.items() if v >= now}
        key = (client_id, jti)
        if key in self._seen:
            return False
        if len(self._seen) >= self._max:
            raise OAuthError("temporarily_unavailable", "too many live client assertions", status=503)
        self._seen[key] = exp
        return True


def make_access_token(
    signing_key: PrivateKey,
    *,
    issuer: str,
    client_id: str,
    scopes: Sequence[str],
    now: float,
    lifetime_s: int,
    kid: str | None = None,
    audience: str = ACCESS_AUDIENCE,
) -> str:
    """A HelseID-shaped access token: a JWT with client_id, scope (a list) and the API audience."""
    claims = {
        "iss": issuer,
        "aud": audience,
        "client_id": client_id,
        "sub": client_id,
        "scope": list(scopes),
        "jti": _new_id(),
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + lifetime_s,
    }
    return jwt.encode(claims, signing_key, algorithm=_alg_for(signing_key), headers={"kid": kid} if kid else None)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    client_id: str
    scopes: frozenset[str]
    exp: int

    def allows(self, resource_type: str, access: Literal["read", "write"]) -> bool:
        want = scope_for(resource_type, access)
        return any(s.lower() == want for s in self.scopes)


def verify_access_token(
    token: str, *, public_key: PublicKey, issuer: str, now: float, audience: str = ACCESS_AUDIENCE, leeway_s: float = 5
) -> AccessClaims:
    """Check a bearer token the probe issued; refusals raise `OAuthError('invalid_token', reason, status=401)`."""
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[_alg_for(public_key)],
            audience=audience,
            issuer=issuer,
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["iss", "aud", "exp", "client_id"],
            },
        )
    except jwt.InvalidAudienceError:
        raise OAuthError("invalid_token", "token audience is not the VKP API", status=401) from None
    except jwt.InvalidIssuerError:
        raise OAuthError("invalid_token", "token not issued by this HelseID", status=401) from None
    except jwt.InvalidSignatureError:
        raise OAuthError("invalid_token", "token signature does not verify", status=401) from None
    except jwt.MissingRequiredClaimError as e:
        raise OAuthError("invalid_token", f"token lacks claim {e.claim}", status=401) from None
    except jwt.PyJWTError as e:
        raise OAuthError("invalid_token", f"token unreadable ({type(e).__name__})", status=401) from None
    try:
        exp = _check_times(claims, now, leeway_s, "token")
    except OAuthError as e:
        raise OAuthError("invalid_token", e.description, status=401) from None
    raw_scope = claims.get("scope", [])
    scopes = raw_scope.split() if isinstance(raw_scope, str) else [str(s) for s in raw_scope]
    return AccessClaims(str(claims["client_id"]), frozenset(scopes), exp)


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise ValueError("only RSA and EC private keys sign HelseID assertions")


def generate_key(alg: Literal["ES256", "RS256"] = "ES256") -> PrivateKey:
    """A fresh signing key (EC P-256 for ES256, RSA 2048 for RS256)."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
