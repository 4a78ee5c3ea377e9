"""Transport kinds for devices behind a gateway: `serial` and `ble` devices (and a serial printer-port
centre), and `gateway-memory` / `gateway-mqtt` centres that receive vtlab's JSON dialect for alarms and
readings a gateway forwarded (matched by key, readings compared field by field; harness.links.gateway).
Register this module with vtlab's plugin manager (harness.plugins)."""

from __future__ import annotations

from typing import Any

from harness.hookspecs import hookimpl
from harness.links import CentreLink, DeviceLink
from harness.transports.registry import TransportContext, TransportKind


def _serial_device(ctx: TransportContext, device_id: str) -> DeviceLink:
    from harness.links.serial import serial_device

    return serial_device(ctx, device_id)


def _serial_centre(ctx: TransportContext, probe: str) -> CentreLink:
    from harness.links.serial import serial_centre

    return serial_centre(ctx, probe)


def _ble_device(ctx: TransportContext, device_id: str) -> DeviceLink:
    from harness.links.ble import ble_device

    return ble_device(ctx, device_id)


def _ble_centre(ctx: TransportContext, probe: str) -> CentreLink:
    from harness.links.ble import ble_centre

    return ble_centre(ctx, probe)


def _wire_device(kind: str) -> Any:
    def open_device(ctx: TransportContext, device_id: str) -> DeviceLink:
        from harness.transports.builtin import memory_device, mqtt_device

        return (memory_device if kind == "memory" else mqtt_device)(ctx, device_id)

    return open_device


def _gateway_centre(kind: str) -> Any:
    def open_centre(ctx: TransportContext, probe: str) -> CentreLink:
        from harness.links.gateway import gateway_memory_centre, gateway_mqtt_centre

        return (gateway_memory_centre if kind == "memory" else gateway_mqtt_centre)(ctx, probe)

    return open_centre


@hookimpl
def vtlab_transports() -> list[TransportKind]:
    return [
        TransportKind(
            "serial",
            "a serial device (profile from fixtures/profiles) that vtlab plays on a "
            "pseudo-terminal or observes on a real port; on a probe, an alarm receiver's Contact ID "
            "printer port",
            _serial_device,
            _serial_centre,
        ),
        TransportKind(
            "ble",
            "a BLE health meter or alarm button that vtlab plays as a Bumble peripheral "
            "(readings by GATT indication, alarms by advertisement)",
            _ble_device,
            _ble_centre,
        ),
        TransportKind(
            "gateway-memory",
            "centre: vtlab's JSON dialect with readings on the in-process bus, for "
            "events a gateway forwarded (matched by key); for vtlab's own tests",
            _wire_device("memory"),
            _gateway_centre("memory"),
        ),
        TransportKind(
            "gateway-mqtt",
            "centre: vtlab's JSON dialect with readings over MQTT, for events and "
            "readings a gateway forwarded (matched by device, code and per-event number)",
            _wire_device("mqtt"),
            _gateway_centre("mqtt"),
        ),
    ]
