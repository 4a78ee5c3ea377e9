"""`vtlab decode ble` (run through `python -m harness.protocols.ble_tool` and through `run` directly)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.protocols import ble_tool, bthome

NORDIC_BP = "1e8a0058007800000004111429 3b3c00012700".replace(" ", "")  # Nordic BPM test, full


def tool(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.protocols.ble_tool", "decode", *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def test_gatt_value_as_hex_through_python_dash_m() -> None:
    code, out, _ = tool("--uuid", "2A35", NORDIC_BP)
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "gatt" and doc["characteristic"] == "Blood Pressure Measurement"
    assert doc["systolic"] == {"value": "138", "unit": "mmHg"} and doc["user_id"] == 1


def test_advertisement_with_encrypted_bthome_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    key = "00112233445566778899aabbccddeeff"
    sealed = bthome.encode([(0x3A, 1)], key=bytes.fromhex(key), address="C0:00:00:00:00:09", counter=3)
    ad = bthome.service_data_ad(sealed).hex(":")
    args = ["decode", ad, "--bthome-key", key, "--address", "C0:00:00:00:00:09"]
    assert ble_tool.main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "advertisement"
    assert doc["bthome"]["objects"] == [{"id": "0x3A", "name": "button", "value": "press"}]
    assert ble_tool.main(["decode", ad]) == 0  # without the key the rest still decodes, the error is reported
    assert "bind key" in json.loads(capsys.readouterr().out)["errors"][0]


def test_file_input_raw_and_hex(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "hr.bin"
    raw.write_bytes(bytes([0x06, 72]))
    assert ble_tool.main(["decode", "--uuid", "2A37", "--file", str(raw)]) == 0
    assert json.loads(capsys.readouterr().out)["heart_rate"] == {"value": "72", "unit": "bpm"}
    text = tmp_path / "battery.txt"
    text.write_text("64\n")
    assert ble_tool.main(["decode", "--uuid", "0x2a19", "--file", str(text)]) == 0
    assert json.loads(capsys.readouterr().out)["level"] == {"value": "100", "unit": "%"}


def test_malformed_bytes_exit_1_with_reason_and_offset(capsys: pytest.CaptureFixture[str]) -> None:
    assert ble_tool.main(["decode", "--uuid", "2A35", "1e8a00"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert "truncated" in doc["error"] and doc["offset"] == 3 and doc["input"] == "1e8a00"


@pytest.mark.parametrize(("argv", "message"), [
    (["decode", "xyz"], "not an even number of hex digits"),
    (["decode"], "no bytes given"),
    (["decode", "--uuid", "2A35Q", "00"], "not a 16-bit UUID"),
    (["decode", "--uuid", "FFF0", "00"], "no decoder for characteristic 0xFFF0"),
    (["decode", "--bthome-key", "0011", "00"], "16 bytes"),
    (["decode", "--file", "/nonexistent/x.bin"], "cannot read it"),
])  # fmt: skip
def test_bad_input_exits_2_and_says_what_to_write(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ble_tool.main(argv) == 2
    assert message in capsys.readouterr().err
