"""The built-in transports: `mqtt` (paho, the real one) and `memory` (in-process, the mock beside it),
both carrying vtlab's JSON dialect."""

from __future__ import annotations

from typing import cast

from harness.hookspecs import hookimpl
from harness.links import CentreLink, DeviceLink
from harness.links.wire_json import WireJsonCentreLink, WireJsonDeviceLink
from harness.transports.base import PubSubTransport
from harness.transports.memory import MemoryBus, MemoryTransport
from harness.transports.mqtt import MqttSettings, MqttTransport
from harness.transports.registry import TransportContext, TransportKind


def _mqtt(ctx: TransportContext, identity: str) -> PubSubTransport:
    transport = MqttTransport(cast(MqttSettings, ctx.mqtt_settings(identity)), identity,
                              on_state=ctx.on_transport_state)
    transport.connect()
    return transport


def _memory(ctx: TransportContext, identity: str) -> PubSubTransport:
    transport = MemoryTransport(cast(MemoryBus, ctx.memory_bus()), identity)
    transport.connect()
    return transport


def _centre_of(ctx: TransportContext, probe: str) -> str:
    return str(ctx.lab.spec.probes[probe].centre)


def mqtt_device(ctx: TransportContext, device_id: str) -> DeviceLink:
    return WireJsonDeviceLink(_mqtt(ctx, f"device-{device_id}"), ctx.lab.topic, device_id)


def mqtt_centre(ctx: TransportContext, probe: str) -> CentreLink:
    centre = _centre_of(ctx, probe)
    return WireJsonCentreLink(_mqtt(ctx, f"centre-{centre}"), ctx.lab.topic, centre)


def memory_device(ctx: TransportContext, device_id: str) -> DeviceLink:
    return WireJsonDeviceLink(_memory(ctx, f"device-{device_id}"), ctx.lab.topic, device_id)


def memory_centre(ctx: TransportContext, probe: str) -> CentreLink:
    centre = _centre_of(ctx, probe)
    return WireJsonCentreLink(_memory(ctx, f"centre-{centre}"), ctx.lab.topic, centre)


def _dc09_device(ctx: TransportContext, device_id: str) -> DeviceLink:
    from harness.links.dc09 import dc09_device

    return dc09_device(ctx, device_id)


def _dc09_centre(ctx: TransportContext, probe: str) -> CentreLink:
    from harness.links.dc09 import dc09_centre

    return dc09_centre(ctx, probe)


def _scaip_device(ctx: TransportContext, device_id: str) -> DeviceLink:
    from harness.links.scaip import scaip_device

    return scaip_device(ctx, device_id)


def _scaip_centre(ctx: TransportContext, probe: str) -> CentreLink:
    from harness.links.scaip import scaip_centre

    return scaip_centre(ctx, probe)


@hookimpl
def vtlab_transports() -> list[TransportKind]:
    return [
        TransportKind("mqtt", "vtlab's JSON dialect over MQTT 3.1.1 or 5, TCP or TLS (docs/wire.md)",
                      mqtt_device, mqtt_centre),
        TransportKind("dc09", "SIA DC-09 with Contact ID (ADM-CID) over TCP or UDP, optionally AES; devices are "
                      "transmitters, centres are receiving centres", _dc09_device, _dc09_centre),
        TransportKind("scaip", "SCAIP (SS 91100) in SIP MESSAGE over UDP, TCP or TLS; devices send <mrq>, "
                      "centres are SCAIP receivers", _scaip_device, _scaip_centre),
        TransportKind("memory", "vtlab's JSON dialect on an in-process bus: for vtlab's own tests and dry runs, "
                      "never a real target", memory_device, memory_centre),
    ]
