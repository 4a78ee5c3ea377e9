"""VKP-shaped FHIR: what the builders make validates with fhir.resources; parsing extracts the correlation
fields, turns VKP mistakes into findings and malformed input into ProtocolError only."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.protocols import vkp
from harness.protocols.base import ProtocolError
from harness.protocols.vkp import FhirError, Ident, OAuthError

T0 = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
PATIENT = Ident(vkp.FNR_SYSTEM, "13896999876", "Ragnhild Testbruker")  # synthetic (month + 80)
BUTTON = Ident(vkp.DEVICE_SYSTEM, "button-0007")
DISPENSER = Ident(vkp.DEVICE_SYSTEM, "dispenser-0042")
METER = Ident(vkp.DEVICE_SYSTEM, "bp-meter-0003")
OPERATOR = Ident(vkp.OPERATOR_SYSTEM, "op-17", "Operatør Sytten")
SUPERVISION = "9.99"  # the lab's code for supervision loss (not published); added to the table below
CODES = vkp.DEFAULT_CODES.with_alert_codes({SUPERVISION: "Mistet tilsyn"})


def roundtrip(bundle: dict[str, Any]) -> vkp.ParsedBundle:
    return vkp.parse_bundle(vkp.encode(bundle), codes=CODES)


def all_bundles() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for bt in ("transaction", "message"):
        out += [
            (
                f"handled_alarm-{bt}",
                vkp.handled_alarm(
                    PATIENT,
                    BUTTON,
                    "1.17",
                    T0,
                    T0 + timedelta(minutes=4),
                    OPERATOR,
                    "Ringte bruker. Alt i orden.",
                    type=bt,
                ),
            ),
            (f"missed_dose-{bt}", vkp.missed_dose(PATIENT, DISPENSER, T0, type=bt)),
            (f"taken_dose-{bt}", vkp.taken_dose(PATIENT, DISPENSER, T0, type=bt)),
            (f"low_battery-{bt}", vkp.low_battery(PATIENT, BUTTON, T0, level_percent=8, type=bt)),
            (f"power-{bt}", vkp.power_disconnected(PATIENT, BUTTON, T0, type=bt)),
            (f"supervision-{bt}", vkp.supervision_loss(PATIENT, BUTTON, T0, code=SUPERVISION, codes=CODES, type=bt)),
            (f"bp-{bt}", vkp.bundle([vkp.blood_pressure(PATIENT, METER, T0, 142, 91)], type=bt, at=T0)),
            (f"spo2-{bt}", vkp.health_reading(PATIENT, METER, T0, "spo2", 96, "%", type=bt)),
            (f"pulse-{bt}", vkp.health_reading(PATIENT, METER, T0, "pulse", 72, "/min", type=bt)),
            (f"weight-{bt}", vkp.health_reading(PATIENT, METER, T0, "weight", Decimal("71.4"), "kg", type=bt)),
            (f"temp-{bt}", vkp.health_reading(PATIENT, METER, T0, "temperature", Decimal("37.8"), "Cel", type=bt)),
            (f"glucose-{bt}", vkp.health_reading(PATIENT, METER, T0, "glucose", Decimal("6.1"), "mmol/L", type=bt)),
        ]
    return out


@pytest.mark.parametrize(("name", "bundle"), all_bundles(), ids=[n for n, _ in all_bundles()])
def test_built_bundles_validate_with_the_library_and_have_no_findings(name: str, bundle: dict[str, Any]) -> None:
    model = Bundle.model_validate(json.loads(vkp.encode(bundle)))  # the library's own check, independent of ours
    assert model.type in ("transaction", "message")
    parsed = roundtrip(bundle)
    assert parsed.all_findings == ()
    assert parsed.resources and all(r.patient == PATIENT for r in parsed.resources)
    entries: Any = model.entry
    if model.type == "message":
        assert entries[0].resource.get_resource_type() == "MessageHeader"
    else:
        assert all(e.request.method == "POST" for e in entries)


def test_handled_alarm_carries_issue_encounter_and_the_operators_note() -> None:
    b = vkp.handled_alarm(
        PATIENT, BUTTON, "1.17", T0, T0 + timedelta(minutes=4), OPERATOR, "Ringte bruker <b>kl 08:31</b> & sendte vakt"
    )
    parsed = roundtrip(b)
    kinds = [r.kind for r in parsed.resources]
    assert kinds == ["alert", "encounter", "note"]
    issue, enc, note = parsed.resources
    assert (issue.code, issue.code_system, issue.display) == ("1.17", vkp.ALERT_SYSTEM, "Batteri lavt")
    assert issue.device == BUTTON and issue.severity == "high" and issue.time == T0
    assert enc.device == BUTTON and enc.time == T0
    assert note.code == "34133-9" and note.time == T0 + timedelta(minutes=4)
    assert note.note == "Ringte bruker <b>kl 08:31</b> & sendte vakt"  # escaped on the way out, text on the way in
    comp = b["entry"][2]["resource"]
    assert comp["section"][0]["entry"][0]["reference"] == b["entry"][0]["fullUrl"]  # note points at the alert
    assert comp["encounter"]["reference"] == b["entry"][1]["fullUrl"]
    assert parsed.identifier == b["identifier"]["value"]


def test_readings_carry_loinc_codes_and_ucum_units() -> None:
    bp = roundtrip(vkp.bundle([vkp.blood_pressure(PATIENT, METER, T0, 142, 91)], at=T0)).resources[0]
    assert bp.code == "85354-9" and bp.device == METER
    assert [(r.loinc, r.value, r.unit) for r in bp.readings] == [
        ("8480-6", Decimal(142), "mm[Hg]"),
        ("8462-4", Decimal(91), "mm[Hg]"),
    ]
    temp = roundtrip(vkp.health_reading(PATIENT, METER, T0, "temperature", Decimal("37.8"), "Cel")).resources[0]
    assert temp.readings == (vkp.Reading("8310-5", Decimal("37.8"), "Cel"),)
    spo2 = roundtrip(vkp.health_reading(PATIENT, METER, T0, "2708-6", 97, "%")).resources[0]
    assert spo2.code == "2708-6"


def test_taken_dose_is_a_medication_dispense_and_missed_dose_is_alert_1_1() -> None:
    taken = roundtrip(vkp.taken_dose(PATIENT, DISPENSER, T0)).resources[0]
    assert (taken.resource_type, taken.kind, taken.device, taken.time) == (
        "MedicationDispense",
        "dispense",
        DISPENSER,
        T0,
    )
    missed = roundtrip(vkp.missed_dose(PATIENT, DISPENSER, T0)).resources[0]
    assert (missed.resource_type, missed.code, missed.display) == ("DetectedIssue", "1.1", "Ikke utlevert")


def test_builders_refuse_codes_the_table_does_not_know() -> None:
    with pytest.raises(ValueError, match="not in the lab's VKP code table"):
        vkp.supervision_loss(PATIENT, BUTTON, T0, code="9.99")  # default table lacks it
    with pytest.raises(ValueError, match="timezone"):
        vkp.missed_dose(PATIENT, DISPENSER, datetime(2024, 5, 1, 8, 30))


# ----------------------------------------------------------------------------------------- findings


def _first(bundle: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = bundle["entry"][0]["resource"]
    return res


def codes_of(parsed: vkp.ParsedBundle) -> set[str]:
    return {f.code for f in parsed.all_findings}


def test_unknown_alert_code_is_a_finding_with_its_path() -> None:
    b = vkp.missed_dose(PATIENT, DISPENSER, T0)
    _first(b)["code"]["coding"][0]["code"] = "7.77"
    parsed = roundtrip(b)
    (f,) = parsed.all_findings
    assert (f.code, f.path) == ("unknown-code", "Bundle.entry[0].resource.code.coding[0].code")
    assert parsed.resources[0].code == "7.77"  # still extracted, for correlation


def test_alert_code_from_another_system_is_a_finding() -> None:
    b = vkp.low_battery(PATIENT, BUTTON, T0)
    _first(b)["code"]["coding"][0]["system"] = "http://example.org/alerts"
    assert "unknown-code" in codes_of(roundtrip(b))


def test_missing_patient_is_a_finding() -> None:
    b = vkp.missed_dose(PATIENT, DISPENSER, T0)
    del _first(b)["patient"]
    parsed = roundtrip(b)
    assert [(f.code, f.path) for f in parsed.all_findings] == [("missing-patient", "Bundle.entry[0].resource.patient")]
    assert parsed.resources[0].patient is None


def test_wrong_unit_is_a_finding() -> None:
    b = vkp.health_reading(PATIENT, METER, T0, "temperature", Decimal("99.1"), "Cel")
    q = _first(b)["valueQuantity"]
    q["code"] = q["unit"] = "mm[Hg]"
    (f,) = roundtrip(b).all_findings
    assert f.code == "wrong-unit" and f.path == "Bundle.entry[0].resource.valueQuantity.code"
    b2 = vkp.bundle([vkp.blood_pressure(PATIENT, METER, T0, 142, 91)], at=T0)
    _first(b2)["component"][1]["valueQuantity"]["system"] = "http://example.org/units"
    assert [f.code for f in roundtrip(b2).all_findings] == ["wrong-unit"]


def test_bad_status_and_severity_are_findings_though_the_library_accepts_them() -> None:
    b = vkp.missed_dose(PATIENT, DISPENSER, T0)
    _first(b)["status"] = "done"
    _first(b)["severity"] = "urgent"
    assert codes_of(roundtrip(b)) == {"bad-status"}
    assert len(roundtrip(b).all_findings) == 2


def test_patient_referenced_through_a_bundle_entry_is_resolved() -> None:
    b = vkp.missed_dose(PATIENT, DISPENSER, T0)
    patient = {"resourceType": "Patient", "identifier": [{"system": vkp.FNR_SYSTEM, "value": PATIENT.value}]}
    b["entry"].append({"fullUrl": "urn:uuid:p1", "resource": patient, "request": {"method": "POST", "url": "Patient"}})
    _first(b)["patient"] = {"reference": "urn:uuid:p1"}
    issue = roundtrip(b).resources[0]
    assert issue.patient == Ident(vkp.FNR_SYSTEM, PATIENT.value)


HL7_R4_BLOOD_PRESSURE = {
    # The HL7 FHIR R4 example Observation/blood-pressure (observation-example-bloodpressure), narrative and
    # interpretation omitted: published content, not made by our builder.
    "resourceType": "Observation",
    "id": "blood-pressure",
    "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
    "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"}],
    "basedOn": [{"identifier": {"system": "https://acme.org/identifiers", "value": "1234"}}],
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs",
                }
            ]
        }
    ],
    "code": {
        "coding": [
            {
                "system": "http://loinc.org",
                "code": "85354-9",
                "display": "Blood pressure panel with all children optional",
            }
        ],
        "text": "Blood pressure systolic & diastolic",
    },
    "subject": {"reference": "Patient/example"},
    "effectiveDateTime": "2012-09-17",
    "performer": [{"reference": "Practitioner/example"}],
    "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003", "display": "Right arm"}]},
    "component": [
        {
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]
            },
            "valueQuantity": {"value": 107, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
        {
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]
            },
            "valueQuantity": {"value": 60, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
    ],
}


def test_hl7_blood_pressure_example_parses_and_shows_what_vkp_would_miss() -> None:
    raw, s = vkp.parse_resource(json.dumps(HL7_R4_BLOOD_PRESSURE).encode(), expected_type="Observation")
    assert raw["id"] == "blood-pressure"
    assert [(r.loinc, r.value, r.unit) for r in s.readings] == [("8480-6", 107, "mm[Hg]"), ("8462-4", 60, "mm[Hg]")]
    # A literal reference to Patient/example carries no national identity number; a date has no time of day;
    # no measuring device: each is a finding for a VKP record.
    assert {f.code for f in s.findings} == {"missing-patient", "imprecise-time", "missing-device"}


# ---------------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (b"", ""),
        (b"{", ""),
        (b"[]", ""),
        (b"\xff\xfe{}", ""),
        (b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": 5}]}', "Bundle.entry[0]"),
        (
            b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Nope"}}]}',
            "Bundle",
        ),
        (
            b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": '
            b'"DetectedIssue", "status": "final", "bogus": 1}, '
            b'"request": {"method": "POST", "url": "DetectedIssue"}}]}',
            "Bundle.entry[0].resource.bogus",
        ),
        (b'{"resourceType": "Bundle", "type": "transaction", "timestamp": "yesterday"}', "Bundle.timestamp"),
        (
            b'{"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "DetectedIssue",'
            b' "status": "final"}}]}',
            "Bundle.entry[0]",
        ),
        (
            b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": '
            b'"DetectedIssue", "status": "final"}}]}',
            "Bundle.entry[0].request",
        ),
        (b'{"resourceType": "Patient"}', "resourceType"),
        (b'{"resourceType": "Bundle", "type": "transaction", "timestamp": null}', "Bundle.timestamp"),
        (b'{"resourceType": "Bundle", "type": "transaction", "total": NaN}', ""),
        (
            b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": '
            b'"Observation", "status": "final", "code": {"text": "x"}, "effectiveDateTime": "2024-05-01T08:30:00"}, '
            b'"request": {"method": "POST", "url": "Observation"}}]}',
            "Bundle.entry[0].resource.effectiveDateTime",
        ),
    ],
)
def test_malformed_input_raises_protocol_error_with_the_fhir_path(data: bytes, path: str) -> None:
    with pytest.raises(FhirError) as e:
        vkp.parse_bundle(data)
    assert isinstance(e.value, ProtocolError)
    assert e.value.path.startswith(path)


def test_size_and_depth_are_bounded() -> None:
    with pytest.raises(FhirError, match="exceeds the limit"):
        vkp.parse_bundle(b" " * (vkp.MAX_FHIR_BYTES + 1))
    deep = b'{"resourceType": "Bundle", "type": "collection", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(FhirError, match="nested deeper"):
        vkp.parse_bundle(deep)
    many = {"resourceType": "Bundle", "type": "collection", "entry": [{}] * (vkp.MAX_ENTRIES + 1)}
    with pytest.raises(FhirError, match="entries exceed"):
        vkp.parse_bundle(json.dumps(many).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        vkp.parse_bundle(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(max_size=12)
    | st.sampled_from(["1.17", "final", "Device", "urn:uuid:x", "2024-05-01T08:30:00Z", "Bundle", "Observation"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


_ALARM = vkp.handled_alarm(PATIENT, BUTTON, "1.17", T0, T0 + timedelta(minutes=2), OPERATOR, "ok")
BASE = json.loads(
    vkp.encode(
        vkp.bundle(
            [e["resource"] for e in _ALARM["entry"]]
            + [vkp.medication_dispense(PATIENT, DISPENSER, T0), vkp.blood_pressure(PATIENT, METER, T0, 120, 80)],
            type="message",
            at=T0,
        )
    )
)
BASE_PATHS = _paths(BASE)[1:]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(BASE_PATHS), st.booleans(), json_values), min_size=1, max_size=4))
def test_mutated_bundles_parse_or_raise_protocol_error_only(mutations: list[tuple[Any, bool, Any]]) -> None:
    doc = copy.deepcopy(BASE)
    for path, delete, value in mutations:
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if delete:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        parsed = vkp.parse_bundle(json.dumps(doc).encode())
    except ProtocolError:
        return
    assert isinstance(parsed, vkp.ParsedBundle)


# ------------------------------------------------------------------------------------------- HelseID

TOKEN_URL = "https://127.0.0.1:8443/connect/token"


def test_client_assertion_round_trip_and_refusals() -> None:
    key = vkp.generate_key("ES256")
    other = vkp.generate_key("ES256")
    now = time.time()
    a = vkp.make_client_assertion("vtlab-platform", TOKEN_URL, key, now=now)
    claims = vkp.verify_client_assertion(
        a, client_id="vtlab-platform", public_keys=[key.public_key()], token_urls=[TOKEN_URL], now=now
    )
    assert claims.client_id == "vtlab-platform" and claims.exp == int(now) + 60

    def refused(assertion: str, *, at: float = now, keys: list[Any] | None = None) -> str:
        with pytest.raises(OAuthError) as e:
            vkp.verify_client_assertion(
                assertion,
                client_id="vtlab-platform",
                public_keys=keys or [key.public_key()],
                token_urls=[TOKEN_URL],
                now=at,
            )
        assert e.value.error == "invalid_client" and e.value.status == 401
        return e.value.description

    assert "expired" in refused(a, at=now + 600)
    assert "audience" in refused(
        vkp.make_client_assertion("vtlab-platform", "https://elsewhere/connect/token", key, now=now)
    )
    assert "signature" in refused(vkp.make_client_assertion("vtlab-platform", TOKEN_URL, other, now=now))
    assert "iss" in refused(vkp.make_client_assertion("someone-else", TOKEN_URL, key, now=now))
    assert "longer than" in refused(
        vkp.make_client_assertion("vtlab-platform", TOKEN_URL, key, now=now, lifetime_s=3600)
    )
    assert "alg" in refused(vkp.make_client_assertion("vtlab-platform", TOKEN_URL, vkp.generate_key("RS256"), now=now))
    assert "not a JWT" in refused("not.a.jwt")
    import jwt as pyjwt

    hs = pyjwt.encode(
        {"iss": "vtlab-platform", "sub": "vtlab-platform", "aud": TOKEN_URL, "exp": int(now) + 60, "jti": "x"},
        "shared-secret-long-enough-for-hmac-sha256!",
        algorithm="HS256",
    )
    assert "alg" in refused(hs)


def test_rs256_assertion_is_accepted_with_an_rsa_key() -> None:
    key = vkp.generate_key("RS256")
    now = time.time()
    a = vkp.make_client_assertion("c", TOKEN_URL, key, now=now)
    pub = vkp.public_key_from(vkp.public_pem(key))
    assert vkp.verify_client_assertion(a, client_id="c", public_keys=[pub], token_urls=[TOKEN_URL], now=now).jti


def test_jti_cache_refuses_replay_until_expiry() -> None:
    cache = vkp.JtiCache(max_size=2)
    assert cache.check_and_add("c", "j1", exp=100, now=50)
    assert not cache.check_and_add("c", "j1", exp=100, now=60)
    assert cache.check_and_add("c", "j2", exp=70, now=60)
    assert cache.check_and_add("c", "j3", exp=200, now=150)  # full: expired j1, j2 dropped
    with pytest.raises(OAuthError):
        cache.check_and_add("c", "j4", exp=300, now=150) and cache.check_and_add("c", "j5", exp=300, now=150)


def test_access_token_scopes_and_refusals() -> None:
    key = vkp.generate_key("ES256")
    now = time.time()
    scopes = [vkp.scope_for("DetectedIssue", "write"), vkp.scope_for("Observation", "read")]
    assert scopes[0] == "nhn:vkp/api/user/detectedissue.write"
    token = vkp.make_access_token(key, issuer="https://idp", client_id="c", scopes=scopes, now=now, lifetime_s=60)
    claims = vkp.verify_access_token(token, public_key=key.public_key(), issuer="https://idp", now=now)
    assert claims.allows("DetectedIssue", "write") and not claims.allows("Observation", "write")
    assert claims.allows("Observation", "read")
    with pytest.raises(OAuthError, match="expired"):
        vkp.verify_access_token(token, public_key=key.public_key(), issuer="https://idp", now=now + 120)
    with pytest.raises(OAuthError, match="signature"):
        vkp.verify_access_token(token, public_key=vkp.generate_key().public_key(), issuer="https://idp", now=now)
    with pytest.raises(OAuthError, match="audience"):
        vkp.verify_access_token(token, public_key=key.public_key(), issuer="https://idp", now=now, audience="other")


def test_token_request_parsing() -> None:
    body = (
        b"grant_type=client_credentials&client_id=c&scope=a+b&client_assertion_type="
        b"urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=x.y.z"
    )
    req = vkp.parse_token_request(body)
    assert (req.client_id, req.scopes, req.assertion) == ("c", ("a", "b"), "x.y.z")
    assert "x.y.z" not in repr(req)
    with pytest.raises(OAuthError, match="client_credentials"):
        vkp.parse_token_request(b"grant_type=password")
    with pytest.raises(OAuthError, match="jwt-bearer"):
        vkp.parse_token_request(b"grant_type=client_credentials&client_secret=s")
    with pytest.raises(OAuthError, match="more than once"):
        vkp.parse_token_request(b"grant_type=client_credentials&grant_type=client_credentials")


def test_untyped_device_identifier_is_taken_as_the_device_and_extra_readings_can_be_added() -> None:
    b = vkp.low_battery(PATIENT, BUTTON, T0)
    del _first(b)["author"]["type"]
    issue = roundtrip(b).resources[0]
    assert issue.device == BUTTON and issue.findings == ()
    height = vkp.health_reading(PATIENT, METER, T0, "8302-2", 172, "cm")
    assert codes_of(roundtrip(height)) == {"unknown-code"}
    tables = CODES.with_readings([vkp.ReadingSpec("8302-2", "body height", ("cm",))])
    assert vkp.parse_bundle(vkp.encode(height), codes=tables).all_findings == ()
