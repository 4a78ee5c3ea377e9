"""The transport registry: a lab file's `via:` names a transport kind, and the kind opens a link for a
device or a response-centre probe of the test bed (a codec bound to a transport, harness.links). No
if/else over transport names anywhere else."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from harness.links import CentreLink, DeviceLink


class TransportContext(Protocol):
    """What a transport kind may ask of the test bed when it opens a link."""

    lab: Any  # harness.labfile.Lab: topics, devices, probes, their protocol settings

    def mqtt_settings(self, identity: str) -> Any: ...

    def memory_bus(self) -> Any: ...

    def on_transport_state(self, state: str, detail: str) -> None: ...

    def io(self) -> Any:
        """The test bed's asyncio loop thread (harness.transports.loop.LoopThread) for asyncio transports."""
        ...

    def endpoint(self, role: str, name: str) -> Any:
        """Where a device must send or a centre must listen, as the target says (for protocols that
        connect to the platform's own ports, such as DC-09 and SCAIP)."""
        ...


@dataclass(frozen=True, slots=True)
class TransportKind:
    name: str
    description: str
    device: Callable[[TransportContext, str], DeviceLink]
    """Open the link of device `device_id` (its lab-file entry says the rest)."""
    centre: Callable[[TransportContext, str], CentreLink]
    """Open the link of probe `probe_name` (its lab-file entry says the centre and the rest)."""


@functools.cache
def transport_kinds() -> dict[str, TransportKind]:
    from harness.plugins import plugin_manager

    kinds: dict[str, TransportKind] = {}
    for batch in plugin_manager().hook.vtlab_transports():
        for kind in batch:
            kinds[kind.name] = kind
    return dict(sorted(kinds.items()))
