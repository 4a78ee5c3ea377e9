"""The transport registry: a lab file's `via:` names a transport kind; the kind opens a connection for
one identity (a device or a probe) of the test bed. No if/else over transport names anywhere else."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from harness.transports.base import PubSubTransport
from harness.transports.mqtt import StateListener


class TransportContext(Protocol):
    """What a transport kind may ask of the test bed when it opens a connection."""

    def mqtt_settings(self, identity: str) -> object: ...

    def memory_bus(self) -> object: ...

    def on_transport_state(self, state: str, detail: str) -> None: ...


@dataclass(frozen=True, slots=True)
class TransportKind:
    name: str
    description: str
    open: Callable[[TransportContext, str, StateListener], PubSubTransport]
    """Open and connect a transport for `identity`; report connection losses to the listener."""


@functools.cache
def transport_kinds() -> dict[str, TransportKind]:
    from harness.plugins import plugin_manager

    kinds: dict[str, TransportKind] = {}
    for batch in plugin_manager().hook.vtlab_transports():
        for kind in batch:
            kinds[kind.name] = kind
    return dict(sorted(kinds.items()))
