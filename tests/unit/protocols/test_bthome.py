"""BTHome v2 against the bthome-ble parser (Home Assistant's, run here as an independent implementation),
the encryption example that ships with it, and random bytes.

Sources: bthome.io/format; Bluetooth-Devices/bthome-ble src/bthome_ble/{const,parser,bthome_v2_encryption}.py.
"""

from __future__ import annotations

import contextlib
import io
import os
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import bthome
from harness.protocols.base import ProtocolError

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")  # bthome-ble's encryption example
MAC = "54:48:E6:8F:80:A5"


def _bthome_ble() -> tuple[object, object] | None:
    try:
        from bthome_ble import BTHomeBluetoothDeviceData
        from habluetooth import BluetoothServiceInfoBleak
    except ImportError:
        if os.environ.get("CI"):
            raise
        return None
    return BTHomeBluetoothDeviceData, BluetoothServiceInfoBleak


needs_oracle = pytest.mark.skipif(_bthome_ble() is None, reason="bthome-ble not installed (pip install -e .[dev])")


def oracle_values(payload: bytes, *, key: bytes | None = None, address: str = "A4:C1:38:8D:18:B2") -> dict[str, object]:
    found = _bthome_ble()
    assert found is not None
    data_cls, info_cls = found
    info = info_cls(  # type: ignore[operator]
        name="vtlab", address=address, rssi=-60, manufacturer_data={},
        service_data={"0000fcd2-0000-1000-8000-00805f9b34fb": payload},
        service_uuids=["0000fcd2-0000-1000-8000-00805f9b34fb"], source="local", device=None, advertisement=None,
        connectable=False, time=0, tx_power=None,
    )  # fmt: skip
    update = data_cls(bindkey=key).update(info)  # type: ignore[operator]
    values: dict[str, object] = {k.key: v.native_value for k, v in update.entity_values.items()}
    values.update({k.key: v.native_value for k, v in update.binary_entity_values.items()})
    values.update({k.key: v.event_type for k, v in update.events.items()})
    return values


def test_button_press_with_packet_id_and_battery() -> None:
    payload = bthome.encode([(0x00, 9), (0x01, 100), (0x3A, bthome.ButtonEvent.PRESS)], trigger_based=True)
    assert payload == bytes.fromhex("44 00 09 01 64 3a 01")
    packet = bthome.decode(payload)
    assert packet.version == 2 and packet.trigger_based and not packet.encrypted
    assert packet.packet_id == 9 and packet.battery == 100
    assert packet.button_events == [bthome.ButtonEvent.PRESS]


@needs_oracle
def test_our_packets_read_the_same_in_bthome_ble() -> None:
    payload = bthome.encode(
        [(0x00, 17), (0x01, 87), (0x02, Decimal("-5.25")), (0x03, Decimal("45.50")), (0x0C, Decimal("2.975")),
         (0x21, True), (0x2B, False), (0x3A, bthome.ButtonEvent.LONG_PRESS)]
    )  # fmt: skip
    got = oracle_values(payload)
    assert got["packet_id"] == 17 and got["battery"] == 87
    assert got["temperature"] == pytest.approx(-5.25) and got["humidity"] == pytest.approx(45.5)
    assert got["voltage"] == pytest.approx(2.975)
    assert got["motion"] is True and got["tamper"] is False
    assert got["button"] == "long_press"
    ours = bthome.decode(payload)
    assert ours.values("temperature") == [Decimal("-5.25")] and ours.values("motion") == [True]


@needs_oracle
@pytest.mark.parametrize("event", list(bthome.ButtonEvent)[1:])
def test_every_button_event_name_matches_bthome_ble(event: bthome.ButtonEvent) -> None:
    got = oracle_values(bthome.encode([(0x3A, event)], trigger_based=True))
    assert got["button"] == event.name.lower()


def test_bthome_ble_example_encryption_decrypts_here() -> None:
    try:
        from bthome_ble.bthome_v2_encryption import encrypt_payload
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("bthome-ble not installed")
    with contextlib.redirect_stdout(io.StringIO()):  # the example prints as it goes
        sealed = encrypt_payload(
            data=bytes.fromhex("02CA0903BF13"), mac=bytes.fromhex("5448E68F80A5"), uuid16=b"\xd2\xfc",
            sw_version=b"\x41", count_id=(1122867).to_bytes(4, "little"), key=KEY,
        )  # fmt: skip
    packet = bthome.decode(sealed[2:], key=KEY, address=MAC)
    assert packet.encrypted and packet.counter == 1122867
    assert packet.values("temperature") == [Decimal("25.06")] and packet.values("humidity") == [Decimal("50.55")]
    ours = bthome.encode([(0x02, Decimal("25.06")), (0x03, Decimal("50.55"))], key=KEY, address=MAC, counter=1122867)
    assert ours == sealed[2:]


@needs_oracle
def test_our_encrypted_packet_decrypts_in_bthome_ble() -> None:
    payload = bthome.encode([(0x00, 3), (0x3A, 1)], key=KEY, address=MAC, counter=7, trigger_based=True)
    got = oracle_values(payload, key=KEY, address=MAC)
    assert got["packet_id"] == 3 and got["button"] == "press"


def test_encrypted_payload_without_key_is_refused_clearly() -> None:
    payload = bthome.encode([(0x3A, 1)], key=KEY, address=MAC, counter=1)
    with pytest.raises(ProtocolError, match=r"encrypted.*bind key"):
        bthome.decode(payload)
    with pytest.raises(ProtocolError, match="address is needed"):
        bthome.decode(payload, key=KEY)
    with pytest.raises(ProtocolError, match="decryption failed"):
        bthome.decode(payload, key=bytes(16), address=MAC)
    with pytest.raises(ProtocolError, match="decryption failed"):
        bthome.decode(payload, key=KEY, address="54:48:E6:8F:80:A6")
    tampered = payload[:-5] + bytes([payload[-5] ^ 1]) + payload[-4:]
    with pytest.raises(ProtocolError, match="decryption failed"):
        bthome.decode(tampered, key=KEY, address=MAC)


def test_mac_included_flag() -> None:
    payload = bthome.encode([(0x01, 50)], include_mac="11:22:33:44:55:66")
    assert payload[0] == 0x42 and payload[1:7] == bytes.fromhex("665544332211")
    packet = bthome.decode(payload)
    assert packet.mac == "11:22:33:44:55:66" and packet.battery == 50
    sealed = bthome.encode([(0x01, 50)], include_mac="11:22:33:44:55:66", key=KEY, counter=5)
    assert bthome.decode(sealed, key=KEY).battery == 50  # nonce uses the included MAC; no address needed


@pytest.mark.parametrize(("oid", "raw", "value", "unit"), [
    (0x02, "ca09", Decimal("25.06"), "Cel"),
    (0x45, "0f01", Decimal("27.1"), "Cel"),
    (0x58, "fe", Decimal("-0.70"), "Cel"),
    (0x04, "138a01", Decimal("1008.83"), "hPa"),
    (0x0C, "020c", Decimal("3.074"), "V"),
    (0x3E, "2a2c0960", 0x60092C2A, None),
    (0x5A, "feff", -2, None),
    (0x42, "4e3400", Decimal("13.390"), "s"),
])  # fmt: skip
def test_scaled_objects_decode_exactly(oid: int, raw: str, value: Decimal | int, unit: str | None) -> None:
    obj = bthome.decode(bytes([0x40, oid]) + bytes.fromhex(raw)).objects[0]
    assert obj.value == value and obj.unit == unit
    assert bthome.encode_object(oid, value) == bytes([oid]) + bytes.fromhex(raw)


def test_text_raw_dimmer_and_firmware_objects() -> None:
    payload = bthome.encode([(0x53, "Hei på deg"), (0x54, b"\x01\x02"), (0xF1, (1, 2, 3, 4))])
    payload += bthome.encode_object(0x3C, bthome.DimmerEvent.ROTATE_LEFT, steps=3)
    packet = bthome.decode(payload)
    assert packet.values("text") == ["Hei på deg"] and packet.values("raw") == [b"\x01\x02"]
    assert packet.values("firmware_version") == [(1, 2, 3, 4)]
    dimmer = packet.objects[-1]
    assert dimmer.value is bthome.DimmerEvent.ROTATE_LEFT and dimmer.steps == 3
    objects = bthome.to_json(packet)["objects"]
    assert isinstance(objects, list) and objects[2]["value"] == "1.2.3.4"


@pytest.mark.parametrize(("payload", "match"), [
    (b"", "empty"),
    (bytes([0x20, 0x01, 0x50]), "version 1"),
    (bytes([0x40, 0x02, 0xCA]), "truncated"),
    (bytes([0x40, 0x53]), "no length byte"),
    (bytes([0x40, 0x53, 0x05, 0x41]), "truncated"),
    (bytes([0x40, 0xEE, 0x00]), "unknown object id 0xEE"),
    (bytes([0x40, 0x21, 0x02]), "binary"),
    (bytes([0x42, 0x01, 0x02]), "MAC flagged"),
    (bytes([0x41, 0x01, 0x02]), "encrypted"),
])  # fmt: skip
def test_malformed_payloads(payload: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        bthome.decode(payload)


def test_encoder_refuses_values_it_cannot_send_exactly() -> None:
    with pytest.raises(ValueError, match="multiple"):
        bthome.encode_object(0x02, Decimal("21.555"))
    with pytest.raises(ValueError, match="does not fit"):
        bthome.encode_object(0x01, 300)
    with pytest.raises(ValueError, match="unknown"):
        bthome.encode_object(0xEE, 1)


def test_objects_are_sorted_by_id() -> None:
    assert bthome.encode([(0x3A, 1), (0x00, 4), (0x01, 9)]) == bytes.fromhex("40 00 04 01 09 3a 01")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_give_a_packet_or_a_protocol_error(data: bytes) -> None:
    try:
        packet = bthome.decode(data, key=KEY, address=MAC)
    except ProtocolError:
        return
    bthome.to_json(packet)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x0C, 0x21, 0x3A, 0x3D, 0x53]), max_size=6), st.data())
def test_mutated_valid_packets(ids: list[int], data: st.DataObject) -> None:
    payload = bytearray(bthome.encode([(i, 1 if i not in (0x53,) else "x") for i in ids]))
    if payload:
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        bthome.decode(bytes(payload))
