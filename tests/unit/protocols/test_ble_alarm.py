"""vtlab's vendor GATT alarm service: the alarm value from bytes (every state, battery unknown, counter
byte order, every malformed shape) and the 128-bit UUIDs as they go on the air, checked against Python's
uuid module, Bumble's UUID and vtlab's own advertisement parser."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.protocols import ble_adv
from harness.protocols import ble_alarm as alarm
from harness.protocols.base import ProtocolError


@pytest.mark.parametrize(
    ("hexed", "event", "battery", "counter"),
    [
        ("0101640100", alarm.AlarmEvent.PRESS, 100, 1),
        ("0102503412", alarm.AlarmEvent.LONG_PRESS, 80, 0x1234),  # counter little-endian
        ("010300ffff", alarm.AlarmEvent.FALL, 0, 0xFFFF),
        ("0104ff0000", alarm.AlarmEvent.CANCEL, None, 0),  # 0xFF: battery unknown
        ("0105050a00", alarm.AlarmEvent.TAMPER, 5, 10),
        ("0106090200", alarm.AlarmEvent.LOW_BATTERY, 9, 2),
    ],
)
def test_alarm_values_from_bytes(hexed: str, event: alarm.AlarmEvent, battery: int | None, counter: int) -> None:
    value = alarm.decode(bytes.fromhex(hexed))
    assert (value.event, value.battery_percent, value.counter, value.version) == (event, battery, counter, 1)
    assert value.to_bytes().hex() == hexed


@pytest.mark.parametrize(
    ("hexed", "offset", "words"),
    [
        ("", None, "0 bytes"),
        ("01016401", None, "4 bytes"),  # cut off
        ("010164010000", None, "6 bytes"),  # one byte too many
        ("0201640100", 0, "version 2"),
        ("0001640100", 0, "version 0"),
        ("0100640100", 1, "state 0"),
        ("0107640100", 1, "state 7"),
        ("0101650100", 2, "battery 101"),
        ("0101fe0100", 2, "battery 254"),
    ],
)
def test_malformed_alarm_values_are_refused_with_the_place(hexed: str, offset: int | None, words: str) -> None:
    with pytest.raises(ProtocolError) as err:
        alarm.decode(bytes.fromhex(hexed))
    assert err.value.protocol == "ble-alarm" and err.value.offset == offset and words in str(err.value)


@given(st.binary(max_size=12))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        value = alarm.decode(data)
    except ProtocolError:
        return
    assert value.to_bytes() == data


def test_the_encoder_refuses_what_no_button_can_send() -> None:
    with pytest.raises(ValueError, match="battery"):
        alarm.AlarmValue(alarm.AlarmEvent.PRESS, 101, 1).to_bytes()
    with pytest.raises(ValueError, match="16 bits"):
        alarm.AlarmValue(alarm.AlarmEvent.PRESS, 50, 0x10000).to_bytes()


def test_uuids_are_128_bit_vendor_uuids_on_the_air_in_little_endian() -> None:
    from bumble.core import UUID as BumbleUUID

    for text in (alarm.SERVICE_UUID, alarm.ALARM_UUID):
        assert not text.endswith("-0000-1000-8000-00805f9b34fb")  # not in the SIG's base range
        assert alarm.uuid128_bytes(text) == uuid.UUID(text).bytes[::-1]
        assert alarm.uuid128_bytes(text) == bytes(BumbleUUID(text).to_bytes())
    assert alarm.SERVICE_UUID != alarm.ALARM_UUID
    with pytest.raises(ValueError, match="128-bit"):
        alarm.uuid128_bytes("2A35")


def test_the_advertisement_lists_the_alarm_service_and_fits_a_legacy_pdu() -> None:
    data = alarm.advertisement("vtlab-knapp-ragnhild")
    assert len(data) <= 31
    parsed = ble_adv.parse(data)
    assert parsed.service_uuids == (alarm.SERVICE_UUID,)
    assert parsed.local_name == "vtlab-kn" and not parsed.complete_name and len(data) == 31
    assert ble_adv.parse(alarm.advertisement("k1")).complete_name
    assert ble_adv.parse(alarm.advertisement("aæææææ")).local_name == "aæææ"  # no half character
