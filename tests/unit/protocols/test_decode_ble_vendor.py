"""`vtlab decode ble` on vtlab's vendor formats and on BTHome v2, from bytes written out here by hand.

The vendor alarm value follows the layout in harness/protocols/ble_alarm.py's docstring (version u8 | state
u8 | battery u8 | counter u16 LE), packed with `struct`, never with vtlab's encoder. BTHome v2 vectors are
bthome.io/format's example advertisement, and its encryption recipe (bthome.io/encryption: key, MAC,
counter 0x00112233, plaintext 02CA09 03BF13) sealed with `cryptography`'s AES-CCM directly.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import ble_health, ble_tool

ALARM = "911e0002-0c92-42e3-97bf-2a12643687cd"  # the alarm characteristic, written out
SERVICE = "911e0001-0c92-42e3-97bf-2a12643687cd"  # the vendor alarm service
EVENTS = {1: "PRESS", 2: "LONG_PRESS", 3: "FALL", 4: "CANCEL", 5: "TAMPER", 6: "LOW_BATTERY"}


def decode(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ble_tool.main(["decode", *argv])
    return code, out.getvalue(), err.getvalue()


def alarm_value(state: int, battery: int, counter: int, version: int = 1) -> str:
    return struct.pack("<BBBH", version, state, battery, counter).hex()


# --- the vendor alarm value -------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(EVENTS))
def test_every_alarm_state_decodes_with_battery_and_little_endian_counter(state: int) -> None:
    code, out, _ = decode("--uuid", ALARM, alarm_value(state, 87, 0x0102))
    assert code == 0
    assert json.loads(out) == {
        "kind": "gatt",
        "characteristic": "vtlab alarm",
        "uuid": ALARM,
        "type": "AlarmValue",
        "event": EVENTS[state],
        "battery_percent": 87,
        "counter": 258,
        "version": 1,
    }


@pytest.mark.parametrize(
    "spelled",
    [ALARM.upper(), ALARM.replace("-", ""), "{" + ALARM + "}"],
)
def test_the_uuid_as_nrf_connect_and_sniffers_write_it(spelled: str) -> None:
    code, out, _ = decode("--uuid", spelled, "(0x)", "01-03-FF-FF-FF")  # nRF Connect's way of showing bytes
    doc = json.loads(out)
    assert code == 0 and doc["event"] == "FALL" and doc["battery_percent"] is None and doc["counter"] == 0xFFFF


@pytest.mark.parametrize(
    ("hexed", "offset", "words"),
    [
        ("0105a700", None, "4 bytes, expected 5: version u8"),  # one byte short
        ("", None, "0 bytes, expected 5"),
        (alarm_value(1, 50, 1) + "00", None, "6 bytes, expected 5"),
        (alarm_value(1, 50, 1, version=2), 0, "version 2"),
        (alarm_value(0, 50, 1), 1, "state 0 is not a known event (1 PRESS"),
        (alarm_value(7, 50, 1), 1, "state 7"),
        (alarm_value(1, 101, 1), 2, "battery 101"),
    ],
)
def test_malformed_alarm_values_say_what_was_expected(hexed: str, offset: int | None, words: str) -> None:
    args = ["--uuid", ALARM] + ([hexed] if hexed else ["--file", "/dev/null"])
    code, out, _ = decode(*args)
    doc = json.loads(out)
    assert code == 1 and doc["protocol"] == "ble-alarm" and doc["offset"] == offset and words in doc["error"]
    assert doc["input"] == hexed


def test_the_service_uuid_points_at_the_characteristic() -> None:
    code, out, err = decode("--uuid", SERVICE, alarm_value(1, 50, 1))
    assert code == 2 and out == ""
    assert "is the vtlab alarm service, not a characteristic" in err and ALARM in err


@pytest.mark.parametrize("unknown", ["911e0003-0c92-42e3-97bf-2a12643687cd", "911e0002", "FFF0", "nonsense"])
def test_an_unknown_uuid_lists_the_known_ones(unknown: str) -> None:
    code, out, err = decode("--uuid", unknown, "00")
    assert code == 2 and out == ""
    assert err.startswith("vtlab decode ble: --uuid: ") and "known: 2A00" in err
    assert "2A35" in err and ALARM in err and "Traceback" not in err


def test_standard_health_values_still_decode_with_0x_uuid() -> None:
    code, out, _ = decode("--uuid", "0x2A35", "1e8a0058007800000004111429 3b3c00012700".replace(" ", ""))
    doc = json.loads(out)
    assert code == 0 and doc["characteristic"] == "Blood Pressure Measurement"
    assert doc["systolic"] == {"value": "138", "unit": "mmHg"}


# --- advertisements ---------------------------------------------------------------------------------------------


def test_gatt_button_advertisement_names_the_vendor_service() -> None:
    service_le = uuid.UUID(SERVICE).bytes[::-1]  # 128-bit UUIDs go on the air little-endian
    name = b"Knapp"
    data = bytes([2, 0x01, 0x06, 17, 0x07]) + service_le + bytes([len(name) + 1, 0x09]) + name
    code, out, _ = decode("--adv", data.hex())
    doc = json.loads(out)
    assert code == 0 and doc["service_uuids"] == [SERVICE] and doc["local_name"] == "Knapp"
    assert doc["vendor_services"] == [
        {
            "uuid": SERVICE,
            "name": "vtlab alarm service",
            "alarm_characteristic": ALARM,
            "reports_by": "GATT notification or indication after connecting and pairing (Just Works)",
        }
    ]
    other = bytes([2, 0x01, 0x06, 17, 0x07]) + uuid.UUID(ALARM).bytes[::-1]  # not the service: not named
    assert "vendor_services" not in json.loads(decode("--adv", other.hex())[1])


def test_manufacturer_alarm_button_advertisement() -> None:
    # flags | manufacturer data: company 0xFFFF, version 1, state ALARM|FALL, battery 87 %, counter 513 LE
    data = "020106" + "08ffffff" + "01" + "03" + "57" + "0102"
    code, out, _ = decode("--adv", data)
    doc = json.loads(out)
    assert code == 0
    assert doc["decoded_manufacturer_data"] == [
        {
            "company_id": "0xFFFF",
            "event": {
                "type": "AlarmButtonAdvert",
                "state": ["ALARM", "FALL"],
                "battery_percent": 87,
                "counter": 513,
                "version": 1,
            },
        }
    ]


BTHOME_IO_EXAMPLE = "020106 0B094449592D73656E736F72 0A16D2FC4002C40903BF13"  # bthome.io/format


@pytest.mark.parametrize("flag", [["--adv"], []])  # --adv says it; without it an advertisement is the default
def test_bthome_v2_published_example(flag: list[str]) -> None:
    code, out, _ = decode(*flag, *BTHOME_IO_EXAMPLE.split())
    doc = json.loads(out)
    assert (
        code == 0
        and doc["local_name"] == "DIY-sensor"
        and doc["flags"]
        == [
            "LE_GENERAL_DISCOVERABLE",
            "BR_EDR_NOT_SUPPORTED",
        ]
    )
    assert doc["bthome"]["version"] == 2 and not doc["bthome"]["encrypted"]
    assert doc["bthome"]["objects"] == [
        {"id": "0x02", "name": "temperature", "value": "25.00", "unit": "Cel"},
        {"id": "0x03", "name": "humidity", "value": "50.55", "unit": "%"},
    ]


@pytest.mark.parametrize(
    ("obj", "name", "value", "unit"),
    [  # single objects from the bthome.io/format object table (example bytes -> result)
        ("0161", "battery", "97", "%"),
        ("12E204", "co2", "1250", "ppm"),
        ("04138A01", "pressure", "1008.83", "hPa"),
        ("05138A14", "illuminance", "13460.67", "lx"),
    ],
)
def test_bthome_v2_table_examples(obj: str, name: str, value: str, unit: str) -> None:
    service_data = bytes.fromhex("D2FC40" + obj)
    data = bytes([len(service_data) + 1, 0x16]) + service_data
    code, out, _ = decode("--adv", data.hex())
    (got,) = json.loads(out)["bthome"]["objects"]
    assert code == 0 and (got["name"], str(got["value"]), got["unit"]) == (name, value, unit)  # ints stay ints


def test_bthome_v2_encrypted_by_the_published_recipe() -> None:
    key, mac, counter = "231d39c1d7cc1ab1aee224cd096db932", "5448E68F80A5", bytes.fromhex("00112233")
    nonce = bytes.fromhex(mac) + bytes.fromhex("D2FC") + b"\x41" + counter
    sealed = AESCCM(bytes.fromhex(key), tag_length=4).encrypt(nonce, bytes.fromhex("02CA0903BF13"), None)
    service_data = bytes.fromhex("D2FC41") + sealed[:-4] + counter + sealed[-4:]
    data = bytes.fromhex("020106") + bytes([len(service_data) + 1, 0x16]) + service_data
    address = ":".join(mac[i : i + 2] for i in range(0, 12, 2))
    code, out, _ = decode("--adv", data.hex(), "--bthome-key", key, "--address", address)
    doc = json.loads(out)
    assert code == 0 and doc["bthome"]["encrypted"] and "errors" not in doc
    assert [(o["name"], o["value"]) for o in doc["bthome"]["objects"]] == [
        ("temperature", "25.06"),
        ("humidity", "50.55"),
    ]
    code, out, _ = decode("--adv", data.hex(), "--bthome-key", "00" * 16, "--address", address)
    assert code == 0 and "bthome" not in json.loads(out) and json.loads(out)["errors"]  # wrong key: said, no crash


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--adv", "02 01 0g"], "'g' is not a hex digit"),
        (["--adv", "020"], "3 digits is odd"),
        (["--uuid", ALARM, "0x"], "there are none"),
    ],
)
def test_bad_hex_is_named(argv: list[str], words: str) -> None:
    code, out, err = decode(*argv)
    assert code == 2 and out == "" and words in err and "write bytes as hex" in err


def test_adv_and_uuid_together_are_refused() -> None:
    with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit) as stop:
        ble_tool.main(["decode", "--adv", "--uuid", ALARM, "0101640100"])
    assert stop.value.code == 2 and "not allowed with" in err.getvalue()


CHARACTERISTICS = [ALARM, *(f"{u:04X}" for u in ble_health.supported_uuids())]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["--adv", *CHARACTERISTICS]), st.binary(max_size=40))
def test_random_bytes_give_one_json_object_never_a_traceback(what: str, data: bytes) -> None:
    argv = ["--adv"] if what == "--adv" else ["--uuid", what]
    code, out, err = decode(*argv, data.hex() or "--file=/dev/null")
    assert code in (0, 1), err
    doc = json.loads(out)
    assert isinstance(doc, dict) and (("error" in doc) == (code == 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=0, max_size=3), st.one_of(st.none(), st.text(max_size=40)))
def test_random_arguments_end_in_an_exit_code_never_a_traceback(words: list[str], uuid_text: str | None) -> None:
    argv = [w for w in words if not w.startswith("-")]
    if uuid_text is not None:
        argv = [f"--uuid={uuid_text}", *argv]
    code, out, err = decode(*argv)
    assert code in (0, 1, 2)
    if code == 2:
        assert out == "" and err.startswith("vtlab decode ble: ")
    else:
        assert isinstance(json.loads(out), dict)
