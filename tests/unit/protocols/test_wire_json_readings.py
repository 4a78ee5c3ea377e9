"""Readings in vtlab's JSON dialect (docs/wire.md): a meter's values travel as exact decimal text with their
units and the meter's own time stamp, on the device event and on the routed alarm, and the response
centre's link hands them over as Decimals. Decoded from bytes as a peer would send them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.links import Incoming, Outgoing, Refused
from harness.links.gateway import compare_readings
from harness.links.wire_json import WireJsonDeviceLink, incoming
from harness.protocols import ProtocolError
from harness.protocols.wire_json import (
    MAX_READINGS,
    DeviceEvent,
    Reading,
    RoutedAlarm,
    decode,
    decode_keeping,
    encode,
)
from harness.transports.base import Message

ROUTED = (
    b'{"v":1,"cid":"gw-7","device":"bp-odd","user":"persona/odd-79","event":"measurement","code":"995",'
    b'"qualifier":"1","priority":5,"centre":"rs-vest","zone":"001","routed":"2026-11-23T10:00:01.000Z",'
    b'"readings":{"systolic":{"value":"182","unit":"mmHg"},"diastolic":{"value":95,"unit":"mmHg"},'
    b'"weight":{"value":82.50,"unit":"kg"}},"measured":"2026-11-23T10:00:00Z"}'
)


def test_a_routed_reading_decodes_from_bytes_with_exact_values_units_and_time() -> None:
    alarm = decode(ROUTED, RoutedAlarm)
    assert alarm.readings == (
        Reading("systolic", Decimal("182"), "mmHg"),
        Reading("diastolic", Decimal("95"), "mmHg"),
        Reading("weight", Decimal("82.50"), "kg"),  # a JSON number is read as written, never via float
    )
    assert alarm.measured == "2026-11-23T10:00:00Z"
    assert str(alarm.readings[2].value) == "82.50"
    again = json.loads(encode(alarm))
    assert again["readings"]["weight"] == {"value": "82.50", "unit": "kg"}
    assert again["readings"]["diastolic"] == {"value": "95", "unit": "mmHg"}
    assert decode(encode(alarm), RoutedAlarm) == alarm


def test_a_device_event_carries_readings_and_the_device_link_sends_them() -> None:
    sent: list[tuple[str, bytes]] = []

    class Bus:
        def publish(self, topic: str, payload: bytes) -> None:
            sent.append((topic, payload))

    link = WireJsonDeviceLink(Bus(), lambda name, **kw: f"t/{name}/{kw['device']}", "bp-odd")  # type: ignore[arg-type]
    readings = {"systolic": (Decimal("182"), "mmHg"), "diastolic": (Decimal("95.0"), "mmHg")}
    link.send(Outgoing("c-1", "bp-odd", "persona/odd-79", "measurement", "995", readings=readings,
                       measured="2026-11-23T10:00:00Z"))
    ((topic, body),) = sent
    event = decode(body, DeviceEvent)
    assert topic == "t/device_event/bp-odd"
    assert {r.name: (r.value, r.unit) for r in event.readings or ()} == readings
    assert str(event.readings[1].value) == "95.0" and event.measured == "2026-11-23T10:00:00Z"  # type: ignore[index]


def test_the_centre_link_hands_readings_over_as_decimals_and_expect_reading_compares_them() -> None:
    got = incoming(Message("vtlab/x/centre/rs-vest/alarm", ROUTED, 5), RoutedAlarm)
    assert isinstance(got, Incoming) and got.defect is None
    assert got.key == "bp-odd:995:001" and got.fields["user"] == "persona/odd-79"
    assert got.fields["readings"]["weight"] == (Decimal("82.50"), "kg")
    assert got.evidence["readings"]["weight"] == {"value": "82.50", "unit": "kg"}  # evidence is JSON text
    sent = {
        "systolic": (Decimal("182"), "mmHg"),
        "diastolic": (Decimal("95"), "mmHg"),
        "weight": (Decimal("82.5"), "kg"),
    }
    assert compare_readings(sent, "2026-11-23T10:00:00+00:00", got.fields) == []
    sent["systolic"] = (Decimal("180"), "mmHg")
    assert compare_readings(sent, "2026-11-23T10:00:00Z", got.fields) == [
        "systolic value 182 mmHg, expected 180 mmHg"
    ]


def _with(readings: Any = None, measured: Any = None) -> bytes:
    body: dict[str, Any] = {"v": 1, "cid": "gw-1", "device": "bp", "code": "995", "zone": "002"}
    if readings is not None:
        body["readings"] = readings
    if measured is not None:
        body["measured"] = measured
    return json.dumps(body).encode()


BAD = [
    ([1, 2], "not an object"),
    ({"Systolic": {"value": "1", "unit": "mmHg"}}, "plain lower-case word"),
    ({"systolic": {"value": "1"}}, "{value, unit}"),
    ({"systolic": {"value": "1", "unit": "mmHg", "extra": 1}}, "{value, unit}"),
    ({"systolic": {"value": "1", "unit": "mm Hg"}}, "no usable unit"),
    ({"systolic": {"value": "1", "unit": "x" * 17}}, "no usable unit"),
    ({"systolic": {"value": True, "unit": "mmHg"}}, "not a number"),
    ({"systolic": {"value": None, "unit": "mmHg"}}, "not a number"),
    ({"systolic": {"value": "NaN", "unit": "mmHg"}}, "not a decimal number"),
    ({"systolic": {"value": "Infinity", "unit": "mmHg"}}, "not a decimal number"),
    ({"systolic": {"value": "1_000", "unit": "mmHg"}}, "not a decimal number"),
    ({"systolic": {"value": " 12", "unit": "mmHg"}}, "not a decimal number"),
    ({"systolic": {"value": "1" * 33, "unit": "mmHg"}}, "characters long"),
    ({"systolic": {"value": "1e999", "unit": "mmHg"}}, "out of any meter's range"),
    ({"systolic": {"value": "0e-999", "unit": "mmHg"}}, "out of any meter's range"),
    ({f"r{i}": {"value": "1", "unit": "kg"} for i in range(MAX_READINGS + 1)}, f"at most {MAX_READINGS}"),
]


@pytest.mark.parametrize(("readings", "reason"), BAD, ids=[r for _, r in BAD])
def test_malformed_or_oversized_readings_are_a_protocol_error(readings: Any, reason: str) -> None:
    with pytest.raises(ProtocolError, match=None) as caught:
        decode(_with(readings), RoutedAlarm)
    assert reason in caught.value.reason


@pytest.mark.parametrize("measured", ["yesterday", 12, "2026-13-01T00:00:00Z", "x" * 300])
def test_a_measured_time_that_is_not_iso_8601_text_is_a_protocol_error(measured: Any) -> None:
    with pytest.raises(ProtocolError):
        decode(_with({"weight": {"value": "80", "unit": "kg"}}, measured), RoutedAlarm)


def test_a_json_number_reading_beyond_floats_stays_exact() -> None:
    payload = b'{"v":1,"cid":"c","readings":{"glucose":{"value":5.100000000000000000001,"unit":"mmol/L"}}}'
    (r,) = decode(payload, RoutedAlarm).readings or ()
    assert r.value == Decimal("5.100000000000000000001")


def test_an_alarm_whose_only_fault_is_its_reading_still_arrives_with_the_defect() -> None:
    payload = _with({"systolic": {"value": "abc", "unit": "mmHg"}}, "2026-11-23T10:00:00Z")
    alarm, defect = decode_keeping(payload, RoutedAlarm)
    assert alarm.readings is None and alarm.device == "bp" and defect is not None and "abc" in defect
    got = incoming(Message("t", payload, 9), RoutedAlarm)
    assert isinstance(got, Incoming) and got.defect == defect and got.key == "bp:995:002"
    assert got.evidence["_defect"] == defect
    with pytest.raises(ProtocolError):  # something else wrong too: no arrival of that kind
        decode_keeping(b'{"v":1,"cid":7,"readings":{"a":{"value":"x","unit":"kg"}}}', RoutedAlarm)


def test_an_oversized_payload_with_readings_arrives_altered_and_its_values_are_never_compared() -> None:
    huge = {f"r{i}": {"value": "1" * 30, "unit": "kg"} for i in range(600)}
    got = incoming(Message("t", _with(huge), 1), RoutedAlarm)
    assert isinstance(got, Incoming) and got.defect is not None and "bytes" in got.defect
    assert "readings" not in got.fields and "readings" in got.evidence
    assert compare_readings({"r0": (Decimal(1), "kg")}, None, got.fields) == ["readings absent"]
    far_too_big = incoming(Message("t", b"{" + b" " * 70000 + b"}", 1), RoutedAlarm)
    assert isinstance(far_too_big, Refused)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    ),
    st.one_of(st.none(), st.text(max_size=50), st.integers()),
)
def test_any_readings_and_measured_decode_or_are_a_protocol_error(readings: Any, measured: Any) -> None:
    try:
        payload = _with(readings, measured)
    except ValueError:  # not JSON-encodable (nan is, but huge ints are fine): nothing to send
        return
    try:
        alarm = decode(payload, RoutedAlarm)
    except ProtocolError:
        return
    for r in alarm.readings or ():
        assert isinstance(r.value, Decimal) and r.value.is_finite()
    assert decode(encode(alarm), RoutedAlarm) == alarm  # what decodes re-encodes to the same message
