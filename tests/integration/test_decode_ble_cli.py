"""`.venv/bin/vtlab decode ble` as a tester runs it: bytes copied from a sniffer or nRF Connect in, one JSON
object or a one-line error out, never a traceback. The last test captures an advertisement with `vtlab scan`
from a vendor alarm button advertising on an emulated radio and decodes its raw bytes: decode and scan agree.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from harness.lab.ble_bridge import AirBridge
from harness.protocols import ble_alarm
from harness.transports.ble import BumblePeripheral
from harness.transports.ble_link import BleLink
from tests.helpers import ROOT

VTLAB = ROOT / ".venv" / "bin" / "vtlab"
ALARM = "911e0002-0c92-42e3-97bf-2a12643687cd"
pytestmark = pytest.mark.timeout(90)


def vtlab_decode(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(VTLAB), "decode", "ble", *args], capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_vendor_alarm_value_and_bthome_advertisement_through_the_command() -> None:
    done = vtlab_decode("--uuid", ALARM, "01 03 57 02 01")  # FALL, 87 %, counter 0x0102 little-endian
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["event"], doc["battery_percent"], doc["counter"]) == ("FALL", 87, 258)
    done = vtlab_decode("--adv", "020106", "0B094449592D73656E736F72", "0A16D2FC4002C40903BF13")  # bthome.io
    assert done.returncode == 0, done.stderr
    objects = json.loads(done.stdout)["bthome"]["objects"]
    assert [(o["name"], o["value"]) for o in objects] == [("temperature", "25.00"), ("humidity", "50.55")]


def test_errors_name_what_is_wrong_with_exit_codes() -> None:
    short = vtlab_decode("--uuid", ALARM, "0105a700")  # the device's bytes are malformed: a JSON finding, exit 1
    assert short.returncode == 1 and short.stderr == ""
    assert "4 bytes, expected 5" in json.loads(short.stdout)["error"]
    for args, words in [
        (["--uuid", ALARM, "01zz"], "'z' is not a hex digit"),
        (["--uuid", "911e0009-0c92-42e3-97bf-2a12643687cd", "00"], "known: 2A00"),
        (["--uuid", ble_alarm.SERVICE_UUID, "00"], "not a characteristic"),
        (["--adv", "--uuid", "2A19", "64"], "not allowed with"),
    ]:
        done = vtlab_decode(*args)
        assert done.returncode == 2 and done.stdout == "" and words in done.stderr, (args, done.stderr)


@pytest.fixture
def air() -> Iterator[tuple[AirBridge, BumblePeripheral]]:
    with BleLink() as link:
        button = BumblePeripheral(link, name="knapp", profiles=[])
        button.start_advertising(ble_alarm.advertisement("Knapp"), connectable=True)
        bridge = AirBridge(link, "decode-test")
        try:
            yield bridge, button
        finally:
            bridge.close()
            button.close()


def test_an_advertisement_captured_by_scan_decodes_to_what_scan_showed(air: tuple[AirBridge, BumblePeripheral]) -> None:
    bridge, button = air
    scanned = subprocess.run(
        [str(VTLAB), "scan", "--radio", bridge.spec, "--for", "2s", "--address", button.address],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr
    (line,) = [json.loads(x) for x in scanned.stdout.splitlines()]
    done = vtlab_decode("--adv", line["raw"])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["vendor_services"] == line["vendor_services"]
    assert doc["vendor_services"][0]["alarm_characteristic"] == ALARM and doc["local_name"] == "Knapp"
    shared = set(doc) - {"kind"}
    assert {k: doc[k] for k in shared} == {k: line[k] for k in shared}
