"""The embedded lab's gateway reads BLE devices only on vtlab's emulated radio: a device on a real radio,
or a real device vtlab observes, is refused at its lab-file line with what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.labfile import load_lab
from harness.reference_lab import _gateway_device
from tests.helpers import LAB


@pytest.mark.parametrize("ble", [{"radio": "tcp-client:127.0.0.1:9"}, {"mode": "observe"}, {"radio": "usb:0"}])
def test_a_ble_device_off_the_emulated_radio_is_refused_for_the_embedded_lab(tmp_path: Path,
                                                                              ble: dict[str, str]) -> None:
    data = yaml.safe_load(LAB.read_text(encoding="utf-8"))
    data["users"] = str(LAB.parent.parent / "users" / "personas.yaml")
    data["devices"]["dor-kari"]["ble"].update(ble)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(InputError) as info:
        _gateway_device(load_lab(path), "dor-kari", [])
    assert "emulated radio only" in info.value.problem and "external" in (info.value.fix or "")
    assert info.value.place is not None and str(info.value.place).startswith(str(path))
