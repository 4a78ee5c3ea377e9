"""The reference lab as home gateway (a home hub or tablet): it reads serial devices and BLE peripherals and
forwards their events and readings into its own routing, as if they came from an MQTT device, so faults,
ledger and centres treat them alike.

Each `DeviceSettings.gateway` names the link: a serial line with its profile (harness.links.serial
SerialGateway; the simulated device's pty path, or /dev/ttyUSB0), or BLE through a Bumble transport
(`ble_hci`): a meter read over GATT (harness.links.ble BleGateway) or an alarm button heard by its
advertisements (AdvertisementGateway); a button whose advertisement lists vtlab's vendor alarm service
(harness.protocols.ble_alarm) is connected to, paired with and subscribed to, and its alarms arrive by GATT
notification. In the embedded lab, `ble_hci` is a `tcp-client:` bridge onto
vtlab's emulated air (harness.lab.ble_bridge); with a real dongle it is `usb:0`.

What the devices do wrong (garbage, a frame cut off, a vanished meter) is a ledger line `gateway_finding`,
never a crash; the gateway reconnects and reads on.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol

from harness.lab.config import GatewayDevice, LabConfig
from harness.links import Refused
from harness.links.gateway import GatewayEvent

__all__ = ["GatewaySink", "LabGateway", "device_model"]

log = logging.getLogger("harness.lab.gateway")

FINDING_TEXT = 200


class GatewaySink(Protocol):
    def take_gateway(self, event: GatewayEvent) -> None: ...
    def note(self, action: str, **fields: Any) -> None: ...


def device_model(name: str) -> Any:
    """The DeviceModel of a catalog or built-in model name."""
    from devices.catalog import CATALOG

    traits = CATALOG.get(name)
    if traits is not None:
        return traits.model
    from harness.plugins import device_models

    return device_models()[name]


class LabGateway:
    """Every gateway device of the config, read on their own threads; events go to `sink.take_gateway`."""

    def __init__(self, config: LabConfig, sink: GatewaySink) -> None:
        self.config = config
        self.sink = sink
        self._parts: list[Any] = []

    @property
    def devices(self) -> dict[str, GatewayDevice]:
        return {d: s.gateway for d, s in self.config.devices.items() if s.gateway is not None}

    def start(self) -> None:
        for device_id, g in self.devices.items():
            try:
                if g.serial is not None:
                    self._serial(device_id, g)
                else:
                    self._ble(device_id, g)
            except Exception:
                self.close()
                raise
            self.sink.note("gateway_device", device=device_id, link=g.serial or g.ble_hci, role=self._role(g))

    @staticmethod
    def _role(g: GatewayDevice) -> str:
        return "serial" if g.serial is not None else f"ble-{g.ble_role}"

    def _serial(self, device_id: str, g: GatewayDevice) -> None:
        from harness.links.serial import SerialGateway, load_codec
        from harness.transports.serial import SerialSettings

        assert g.serial is not None and g.profile is not None
        settings = SerialSettings(url=g.serial, baudrate=g.baudrate, frame_timeout=g.frame_timeout_s)
        gw = SerialGateway(
            device_id,
            device_model(g.model),
            load_codec(g.profile),
            settings,
            self.sink.take_gateway,
            self._finding(device_id),
        )
        self._parts.append(gw.start())

    def _ble(self, device_id: str, g: GatewayDevice) -> None:
        from harness.links.ble import AdvertisementGateway, BleGateway
        from harness.transports.ble import BumbleCentral

        assert g.ble_hci is not None and g.ble_address is not None
        central = BumbleCentral(transport=g.ble_hci, name=f"lab-gw-{device_id}")
        self._parts.append(central)
        model = device_model(g.model)
        part: Any
        if g.ble_role == "meter":
            part = BleGateway(
                central, device_id, g.ble_address, model, self.sink.take_gateway, self._finding(device_id)
            )
        else:
            part = AdvertisementGateway(
                central, {g.ble_address: (device_id, model)}, self.sink.take_gateway, self._finding(device_id)
            )
        self._parts.append(part.start())

    def _finding(self, device_id: str) -> Any:
        def finding(refused: Refused) -> None:
            self.sink.note(
                "gateway_finding",
                device=device_id,
                reason=refused.reason[:FINDING_TEXT],
                raw=refused.raw[:FINDING_TEXT] if refused.raw else None,
                where=refused.where[:FINDING_TEXT] if refused.where else None,
            )

        return finding

    def close(self) -> None:
        for part in reversed(self._parts):  # gateways before their centrals
            with contextlib.suppress(Exception):
                part.close()
        self._parts.clear()
