"""The device catalog against the independent sources it must agree with (the dispenser's serial profile,
Contact ID and SCAIP code formats), the reading codec of gateway-forwarded messages (hypothesis: bad input is a
ProtocolError, never another exception), field-by-field comparison, and the device steps' load-time errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.catalog import CATALOG, MODELS, VTLAB_CODES, DeviceFault, FaultSet, parse_reading
from harness.errors import InputError
from harness.links.gateway import compare_readings, decode_readings, keyed_incoming
from harness.protocols import ProtocolError
from harness.protocols.serial_profile import load_profile
from harness.transports.base import Message
from tests.device_helpers import device_lab, device_plugins
from tests.helpers import CONTRACT, ROOT, Suite


@pytest.fixture(autouse=True)
def plugins() -> Iterator[None]:
    with device_plugins():
        yield


def test_every_model_is_registered_and_its_codes_are_well_formed() -> None:
    from harness.scenario.registry import device_models

    registered = device_models()
    for model in MODELS:
        assert registered[model.name] is model
        assert re.fullmatch(r"[0-9]{4}", model.scaip_dty)
        wire = [(s.code, s.qualifier) for s in model.events.values() if s.wire]
        assert len(wire) == len(set(wire)), f"{model.name}: two events a centre cannot tell apart"
        for spec in model.events.values():
            assert re.fullmatch(r"[0-9]{3}", spec.code) and spec.qualifier in ("1", "3", "6")
            assert spec.scaip_stc is None or re.fullmatch(r"[0-9]{4}", spec.scaip_stc)
            assert 1 <= spec.priority <= 5
            if spec.code.startswith("9"):
                assert spec.code in VTLAB_CODES, f"{model.name}.{spec.event}: 9xx code not documented"


def test_the_dispenser_model_agrees_with_its_serial_profile() -> None:
    """The profile (fixtures/profiles/medicine_dispenser.yaml) was written from the device's annex: every event it
    can send is in the model, with the same Contact ID code and SCAIP status code wherever the profile has one."""
    model = CATALOG["medicine_dispenser"].model
    by_event = {s.event: s for s in model.events.values() if s.wire}
    for rule in load_profile(ROOT / "fixtures" / "profiles" / "medicine_dispenser.yaml").events:
        if rule.event == "heartbeat":
            continue  # the periodic test report is the link's heartbeat, not a scenario event
        spec = by_event[rule.event]
        if rule.contact_id:
            assert (spec.code, spec.qualifier) == (rule.contact_id, rule.qualifier or "1")
        assert spec.scaip_stc == rule.scaip_stc


def test_every_meter_has_readings_and_a_ble_profile() -> None:
    for traits in CATALOG.values():
        if traits.readings:
            assert traits.ble_profile and "measurement" in traits.model.events and not traits.model.heartbeat


@pytest.mark.parametrize(
    "text,expected", [("182 mmHg", (Decimal("182"), "mmHg")), ("24.3 kPa", (Decimal("24.3"), "kPa"))]
)
def test_a_reading_is_a_number_and_a_unit_the_meter_measures_in(text: str, expected: tuple[Decimal, str]) -> None:
    assert parse_reading("systolic", text, CATALOG["blood_pressure_meter"].readings["systolic"]) == expected


@pytest.mark.parametrize("text,problem", [("182", "no unit"), ("182 bpm", "does not measure in"), (True, "is True")])
def test_a_reading_without_a_usable_unit_is_refused(text: object, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_reading("systolic", text, CATALOG["blood_pressure_meter"].readings["systolic"])


def test_faults_count_down_and_standing_ones_stay() -> None:
    faults = FaultSet()
    faults.add(DeviceFault("garbled", count=2))
    faults.add(DeviceFault("low_battery", count=0, battery=7))
    assert [faults.take("garbled") is not None for _ in range(3)] == [True, True, False]
    assert all(faults.take("low_battery") is not None for _ in range(5))
    with pytest.raises(InputError, match="unknown device fault"):
        DeviceFault("explode")  # type: ignore[arg-type]


def test_readings_compare_as_exact_values_units_and_instants() -> None:
    sent = {"weight": (Decimal("82.5"), "kg")}
    same = {"readings": {"weight": (Decimal("82.500"), "kg")}, "measured": "2026-01-02T03:04:05+00:00"}
    assert compare_readings(sent, "2026-01-02T03:04:05Z", same) == []
    changed = {
        "readings": {"weight": (Decimal("82.505"), "kg"), "bmi": (Decimal(25), "kg/m2")},
        "measured": "2026-01-02T03:04:06Z",
    }
    wrong = compare_readings(sent, "2026-01-02T03:04:05Z", changed)
    assert wrong == [
        "weight value 82.505 kg, expected 82.5 kg",
        "readings not measured: bmi",
        "measured 2026-01-02T03:04:06Z, expected 2026-01-02T03:04:05Z",
    ]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_readings_value_decodes_or_is_a_protocol_error(raw: object) -> None:
    try:
        decoded = decode_readings(raw)
    except ProtocolError:
        return
    assert all(isinstance(v, Decimal) and isinstance(u, str) for v, u in decoded.values())


@given(st.binary(max_size=300))
def test_any_bytes_at_a_gateway_centre_are_an_arrival_or_refused(payload: bytes) -> None:
    got = keyed_incoming(Message("t", payload, 1))
    assert got.t_ns == 1


def test_a_forwarded_alarm_with_a_bad_reading_is_an_arrival_with_a_defect() -> None:
    body = {"v": 1, "cid": "plat-1", "device": "bp", "code": "995", "zone": "001", "readings": {"sys": {"value": "x"}}}
    got = keyed_incoming(Message("t", json.dumps(body).encode(), 1))
    assert got.key == "bp:995:001" and got.cid is None and got.defect is not None and "unit" in got.defect


# --- load-time errors of the device steps -------------------------------------------------------------------------

SCENARIO = """
title: Måling
covers: [TA-2.2]
devices:
  meter: {{id: bp-solveig}}
steps:
  - measure: {{device: meter, {readings}}}
  - expect_reading: {{from: meter, within: 5s}}
criteria:
  - {{metric: lost, count: "== 0"}}
"""


@pytest.mark.parametrize(
    "readings,problem",
    [
        ("systolic: 182 mmHg", "needs diastolic"),
        ("systolic: 182 mmHg, diastolic: 95 bpm", "does not measure in"),
        ("systolic: 182 mmHg, diastolic: 95 mmHg, glucose: 5 mmol/L", "does not measure glucose"),
    ],
)
def test_a_measure_step_with_wrong_readings_is_refused_at_its_line(
    suite: Suite, tmp_path: Path, readings: str, problem: str
) -> None:
    from harness.contract import load_contract
    from harness.scenario.loader import load_scenario

    lab = device_lab(tmp_path)
    contract, _ = load_contract(CONTRACT)
    with pytest.raises(InputError, match=problem) as err:
        load_scenario(suite.scenario("m", SCENARIO.format(readings=readings)), contract, lab, "m")
    assert err.value.place is not None and err.value.place.line == 6


def test_a_device_fault_on_a_link_without_faults_is_refused(suite: Suite, tmp_path: Path) -> None:
    from harness.contract import load_contract
    from harness.scenario.loader import load_scenario

    text = """
title: Dør
covers: [TA-2.1]
devices:
  dor: {id: dor-henrik}
steps:
  - device_fault: {device: dor, fault: dropout}
  - trigger: {device: dor, event: door_open}
criteria:
  - {metric: lost, count: "== 0"}
"""
    contract, _ = load_contract(CONTRACT)
    with pytest.raises(InputError, match="applies no device faults"):
        load_scenario(suite.scenario("d", text), contract, device_lab(tmp_path), "d")
