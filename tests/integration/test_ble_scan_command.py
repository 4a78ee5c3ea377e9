"""`vtlab scan` as a tester runs it, against a fall sensor and an alarm button that advertise on an emulated
radio. The radio reaches the command's own process through an HCI bridge (the same Bumble transport a USB
controller is opened with), so the scan, the host stack and the decoders are the real ones."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from harness.lab.ble_bridge import AirBridge
from harness.protocols import ble_adv, bthome
from harness.transports.ble import BumblePeripheral
from harness.transports.ble_link import BleLink
from tests.helpers import ROOT

VTLAB = ROOT / ".venv" / "bin" / "vtlab"
KEY = "00112233445566778899aabbccddeeff"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def air() -> Iterator[tuple[AirBridge, BumblePeripheral, BumblePeripheral]]:
    with BleLink() as link:
        fall = BumblePeripheral(link, name="fall", profiles=[])
        button = BumblePeripheral(link, name="knapp", profiles=[])
        state = ble_adv.AlarmButtonAdvert(ble_adv.AlarmState.FALL, 64, 41)
        sealed = bthome.encode([(0x3A, bthome.ButtonEvent.LONG_PRESS)], key=bytes.fromhex(KEY),
                               address=fall.address, counter=9)
        fall.start_advertising(ble_adv.ad_manufacturer(0xFFFF, state.to_bytes()) + bthome.service_data_ad(sealed),
                               connectable=False)
        press = bthome.encode([(0x00, 7), (0x01, 90), (0x3A, bthome.ButtonEvent.PRESS)], trigger_based=True)
        button.start_advertising(ble_adv.ad_flags() + bthome.service_data_ad(press), connectable=False)
        bridge = AirBridge(link, "scan-test")
        try:
            yield bridge, fall, button
        finally:
            bridge.close()
            fall.close()
            button.close()


def scan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VTLAB), "scan", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def test_scan_lists_each_advertiser_once_with_its_decoded_data(air: tuple[AirBridge, BumblePeripheral,
                                                                         BumblePeripheral]) -> None:
    bridge, fall, button = air
    done = scan("--radio", bridge.spec, "--for", "3s", "--bthome-key-env", "FALL_KEY", env={"FALL_KEY": KEY})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    by_address = {x["address"]: x for x in lines}
    assert len(by_address) == len(lines), "an advertiser was listed twice"
    assert by_address[button.address.upper()]["reports"] >= 1
    assert "bthome" in json.dumps(by_address[button.address.upper()]).lower()
    fall_line = json.dumps(by_address[fall.address.upper()]).lower()
    assert "fall" in fall_line and "bind key" not in fall_line  # decrypted with the key from the environment
    assert "devices in 3 s" in done.stderr


def test_scan_without_the_key_shows_why_it_cannot_decrypt(air: tuple[AirBridge, BumblePeripheral,
                                                                     BumblePeripheral]) -> None:
    bridge, fall, _ = air
    done = scan("--radio", bridge.spec, "--for", "2s", "--address", fall.address)
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert "bind key" in json.dumps(line)


def test_a_radio_that_is_not_there_and_bad_options_are_clear_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = scan("--radio", f"tcp-client:127.0.0.1:{port}", "--for", "1s")
    assert done.returncode == 2 and "cannot open the radio" in done.stderr
    done = scan("--for", "2h")
    assert done.returncode == 2 and "at most" in done.stderr
    done = scan("--bthome-key-env", "NOT_SET_ANYWHERE", "--for", "1s")
    assert done.returncode == 2 and "not set" in done.stderr
