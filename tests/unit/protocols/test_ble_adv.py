"""Advertising data (AD structures) and the manufacturer-specific decoder registry.

Vectors: a BTHome v2 advertisement as the bthome.io format page and the bthome-ble tests lay it out
(flags 02 01 06, then service data 0x16 D2 FC ...); AD layout from Core Spec Vol 3 Part C §11.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import ble_adv as adv
from harness.protocols import bthome
from harness.protocols.base import ProtocolError


def test_bthome_advertisement_with_flags_name_and_service_data() -> None:
    data = bytes.fromhex("020106") + bytes.fromhex("0b094449592d73656e736f72") + bytes.fromhex("0a16d2fc4000c401643a01")
    d = adv.decode_advertisement(data)
    assert d.data.flags == adv.AdFlags.LE_GENERAL_DISCOVERABLE | adv.AdFlags.BR_EDR_NOT_SUPPORTED
    assert d.data.local_name == "DIY-sensor" and d.data.complete_name
    assert d.data.service_data == (("FCD2", bytes.fromhex("4000c401643a01")),)
    assert d.bthome is not None and d.bthome.packet_id == 0xC4 and d.bthome.battery == 100
    assert d.bthome.button_events == [bthome.ButtonEvent.PRESS]


def test_uuid_lists_tx_power_appearance_and_padding() -> None:
    data = (
        adv.ad_uuid16_list([0x1810, 0x180F])
        + adv.ad(adv.AdType.COMPLETE_UUID128, bytes(range(16)))
        + adv.ad(adv.AdType.TX_POWER, b"\xf8")
        + adv.ad(adv.AdType.APPEARANCE, (0x0C40).to_bytes(2, "little"))
        + b"\x00\x00\x00"  # early termination: zero padding
    )
    d = adv.parse(data)
    assert d.service_uuids == ("1810", "180F", "0f0e0d0c-0b0a-0908-0706-050403020100")
    assert d.tx_power == -8 and d.appearance == 0x0C40
    assert len(d.structures) == 4


@pytest.mark.parametrize(("data", "match"), [
    (bytes([0x05, 0x09, 0x41]), "runs past the end"),
    (bytes([0x01, 0x01]), "FLAGS needs 1"),
    (bytes([0x02, 0xFF, 0x01]), "MANUFACTURER_DATA needs 2"),
    (bytes([0x04, 0x03, 0x10, 0x18, 0x0F]), "multiple of 2"),
    (bytes([0x03, 0x09, 0xFF, 0xFE]), "not UTF-8"),
    (bytes([0x02, 0x16, 0xD2]), "SERVICE_DATA_UUID16 needs 2"),
    (bytes(1651), "longer than any"),
])  # fmt: skip
def test_malformed_ad_structures(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        adv.parse(data)


def test_example_alarm_button_decoder() -> None:
    event = adv.AlarmButtonAdvert(adv.AlarmState.ALARM | adv.AlarmState.LOW_BATTERY, 12, 0x0102)
    payload = event.to_bytes()
    assert payload == bytes([0x01, 0x05, 0x0C, 0x02, 0x01])
    d = adv.decode_advertisement(adv.ad_flags() + adv.ad_manufacturer(0xFFFF, payload))
    assert d.manufacturer == ((0xFFFF, event),)
    js = adv.to_json(d)
    assert js["decoded_manufacturer_data"][0]["event"]["state"] == ["ALARM", "LOW_BATTERY"]


@pytest.mark.parametrize(("payload", "match"), [
    (bytes([0x01, 0x00, 0x10]), "expected 5"),
    (bytes([0x02, 0x00, 0x10, 0, 0]), "version 2"),
    (bytes([0x01, 0x00, 0x65, 0, 0]), "above 100"),
])  # fmt: skip
def test_alarm_button_bad_payloads_are_kept_as_errors_not_raised(payload: bytes, match: str) -> None:
    d = adv.decode_advertisement(adv.ad_manufacturer(0xFFFF, payload))
    assert d.manufacturer == ()
    assert len(d.errors) == 1 and match in str(d.errors[0])


@dataclass(frozen=True, slots=True)
class AcmeFall:
    fallen: bool


def test_registry_plugs_in_a_vendor_and_refuses_duplicates() -> None:
    registry = adv.DEFAULT_REGISTRY.copy()
    registry.register(0x1234, lambda b: AcmeFall(bool(b[0])), name="Acme fall sensor")
    data = adv.ad_manufacturer(0x1234, b"\x01") + adv.ad_manufacturer(0x9999, b"\x07")
    d = adv.decode_advertisement(data, registry=registry)
    assert d.manufacturer == ((0x1234, AcmeFall(True)),)  # 0x9999 has no decoder: raw data only
    assert d.data.manufacturer_data[1] == (0x9999, b"\x07")
    assert adv.decode_advertisement(data).manufacturer == ()  # the default registry was not changed
    with pytest.raises(ValueError, match="already has a decoder"):
        registry.register(0x1234, lambda b: None, name="again")


def test_encrypted_bthome_without_key_is_an_error_beside_the_rest() -> None:
    key = bytes(range(16))
    data = adv.ad_name("knapp") + bthome.service_data_ad(
        bthome.encode([(0x3A, 1)], key=key, address="C0:00:00:00:00:01")
    )
    d = adv.decode_advertisement(data)
    assert d.bthome is None and d.data.local_name == "knapp"
    assert "bind key" in str(d.errors[0])
    d = adv.decode_advertisement(data, bthome_key=key, address="C0:00:00:00:00:01")
    assert d.bthome is not None and d.bthome.button_events == [bthome.ButtonEvent.PRESS]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=62))
def test_random_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        adv.to_json(adv.decode_advertisement(data))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x01, 0x03, 0x09, 0x0A, 0x16, 0x19, 0xFF]), st.binary(max_size=8)),
                max_size=4))  # fmt: skip
def test_well_framed_random_structures_never_raise_anything_else(parts: list[tuple[int, bytes]]) -> None:
    data = b"".join(adv.ad(t, d) for t, d in parts)
    with contextlib.suppress(ProtocolError):
        adv.decode_advertisement(data)
