"""The built-in transports: `mqtt` (paho, the real one) and `memory` (in-process, the mock beside it)."""

from __future__ import annotations

from typing import cast

from harness.hookspecs import hookimpl
from harness.transports.base import PubSubTransport
from harness.transports.memory import MemoryBus, MemoryTransport
from harness.transports.mqtt import MqttSettings, MqttTransport, StateListener
from harness.transports.registry import TransportContext, TransportKind


def _open_mqtt(ctx: TransportContext, identity: str, on_state: StateListener) -> PubSubTransport:
    transport = MqttTransport(cast(MqttSettings, ctx.mqtt_settings(identity)), identity, on_state=on_state)
    transport.connect()
    return transport


def _open_memory(ctx: TransportContext, identity: str, on_state: StateListener) -> PubSubTransport:
    transport = MemoryTransport(cast(MemoryBus, ctx.memory_bus()), identity)
    transport.connect()
    return transport


@hookimpl
def vtlab_transports() -> list[TransportKind]:
    return [
        TransportKind("mqtt", "MQTT 3.1.1 or 5 over TCP or TLS (docs/wire.md)", _open_mqtt),
        TransportKind("memory", "in-process bus: for vtlab's own tests and dry runs, never a real target",
                      _open_memory),
    ]
