"""Registers the built-in device models with vtlab's plugin manager."""

from __future__ import annotations

from devices.model import DeviceModel
from devices.safety_alarm import FALL_DETECTOR, SAFETY_ALARM
from harness.hookspecs import hookimpl


@hookimpl
def vtlab_device_models() -> list[DeviceModel]:
    return [SAFETY_ALARM, FALL_DETECTOR]
