"""A health meter's readings as the reference lab records them in the patient record: vital-signs
Observations (blood-pressure panel with components, heart rate on its own) in LOINC and UCUM, validated by
the FHIR library and free of VKP findings; values stay exact decimals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fhir.resources.R4B.bundle import Bundle

from harness.protocols import vkp
from harness.protocols.vkp import Ident

PATIENT = Ident(vkp.FNR_SYSTEM, "persona/odd-79")
METER = Ident(vkp.DEVICE_SYSTEM, "bt-odd")
AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_a_blood_pressure_reading_is_a_panel_and_a_heart_rate_validated_by_the_library() -> None:
    readings = {
        "systolic": (Decimal("182"), "mmHg"),
        "diastolic": (Decimal("95.5"), "mmHg"),
        "pulse": (Decimal("71"), "bpm"),
        "mean_arterial_pressure": (Decimal("124"), "mmHg"),
    }
    bundle, uncoded = vkp.meter_readings(PATIENT, METER, AT, readings)
    assert uncoded == ("mean_arterial_pressure",)  # no LOINC code in the table: left out, and said so
    Bundle.model_validate_json(vkp.encode(bundle))
    parsed = vkp.parse_bundle(vkp.encode(bundle))
    by_code = {r.code: r for r in parsed.resources}
    assert set(by_code) == {"85354-9", "8867-4"}
    assert all(r.kind == "reading" and not r.findings for r in parsed.resources)
    assert all(r.patient == PATIENT and r.device == METER and r.time == AT for r in parsed.resources)
    assert {(x.loinc, x.value, x.unit) for x in by_code["85354-9"].readings} == {
        ("8480-6", Decimal("182"), "mm[Hg]"),
        ("8462-4", Decimal("95.5"), "mm[Hg]"),
    }
    assert [(x.loinc, x.value, x.unit) for x in by_code["8867-4"].readings] == [("8867-4", Decimal("71"), "/min")]


@pytest.mark.parametrize(
    ("name", "value", "unit", "loinc", "ucum"),
    [
        ("weight", "82.50", "kg", "29463-7", "kg"),
        ("weight", "181.9", "lb", "29463-7", "[lb_av]"),
        ("temperature", "37.8", "Cel", "8310-5", "Cel"),
        ("spo2", "93", "%", "59408-5", "%"),
        ("glucose", "6.1", "mmol/L", "15074-8", "mmol/L"),
    ],
)
def test_other_meters_readings_are_one_observation_each(
    name: str, value: str, unit: str, loinc: str, ucum: str
) -> None:
    bundle, uncoded = vkp.meter_readings(PATIENT, METER, AT, {name: (Decimal(value), unit)})
    (summary,) = vkp.parse_bundle(vkp.encode(bundle)).resources
    assert uncoded == () and summary.code == loinc and not summary.findings
    assert [(x.value, x.unit) for x in summary.readings] == [(Decimal(value), ucum)]


def test_readings_with_no_code_at_all_are_refused() -> None:
    with pytest.raises(ValueError, match="no LOINC code"):
        vkp.meter_readings(PATIENT, METER, AT, {"bmi": (Decimal("25"), "kg/m2")})
