"""An emulated BLE radio: Bumble controllers on one in-process `LocalLink`, for tests and the reference lab.

Every device on a LocalLink must run on one event loop (the link delivers packets with the sender's loop),
so the link owns the loop thread and every central and peripheral made on it shares it.

    with BleLink() as link:
        meter = BumblePeripheral(link, profiles=["blood_pressure", "battery"])
        central = BumbleCentral(link=link)
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from types import TracebackType
from typing import Any

from harness.transports.ble import BleError, LoopThread

_links = itertools.count(1)
_AIR: type | None = None


def _air_class() -> type:
    """A LocalLink where a detached controller neither sends nor receives, and a packet to nobody is lost
    (as on air) instead of raising inside the sender's controller. Built lazily: bumble loads on first use."""
    global _AIR
    if _AIR is not None:
        return _AIR
    from bumble.link import LocalLink

    class Air(LocalLink):
        def __init__(self) -> None:
            super().__init__()
            self.silent: set[Any] = set()

        def find_le_controller(self, address: Any) -> Any:
            found = super().find_le_controller(address)
            return None if found in self.silent else found

        def send_acl_data(self, sender_controller: Any, destination_address: Any, transport: Any, data: bytes) -> None:
            if sender_controller not in self.silent:
                super().send_acl_data(sender_controller, destination_address, transport, data)

        def send_advertising_pdu(self, sender_controller: Any, packet: Any) -> None:
            if sender_controller in self.silent:
                return
            loop = asyncio.get_running_loop()
            for c in self.controllers:
                if c is not sender_controller and c not in self.silent:
                    loop.call_soon(c.on_ll_advertising_pdu, packet)

        def send_ll_control_pdu(self, sender_address: Any, receiver_address: Any, packet: Any) -> None:
            sender = LocalLink.find_le_controller(self, sender_address)
            if sender in self.silent or self.find_le_controller(receiver_address) is None:
                return
            super().send_ll_control_pdu(sender_address, receiver_address, packet)

    _AIR = Air
    return Air


class BleLink:
    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"ble-link-{next(_links)}"
        self.loop = LoopThread(self.name)
        self._lock = threading.Lock()
        self._next = itertools.count(1)
        self._link: Any = self.loop.run(self._make_link(), 5.0, f"{self.name}: create LocalLink")
        self._controllers: dict[int, Any] = {}

    async def _make_link(self) -> Any:
        return _air_class()()

    def new_address(self) -> str:
        """A random static address (two top bits set), unique on this link."""
        with self._lock:
            n = next(self._next)
        return f"C0:00:00:00:{(n >> 8) & 0xFF:02X}:{n & 0xFF:02X}"

    def make_device(self, name: str, address: str | None = None) -> Any:
        """A Bumble Device on its own emulated controller on this link (not yet powered on)."""
        return self.loop.run(self._make_device(name, address or self.new_address()), 5.0, f"{name}: create device")

    async def _make_device(self, name: str, address: str) -> Any:
        from bumble.controller import Controller
        from bumble.device import Device
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.transport.common import AsyncPipeSink

        controller = Controller(name, link=self._link, public_address=address)
        device = Device(name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller)))
        self._controllers[id(device)] = controller
        return device

    def detach(self, device: Any) -> None:
        """Take a device's controller off the air (it neither hears nor is heard; nothing is sent)."""
        controller = self._controllers.get(id(device))
        if controller is None:
            raise BleError("that device is not on this link")
        self.loop.run(self._detach(controller), 5.0, f"{self.name}: detach")

    def detach_now(self, device: Any) -> None:
        """`detach` for code already running on the link's loop (a GATT callback)."""
        controller = self._controllers.get(id(device))
        if controller is not None:
            self._link.silent.add(controller)

    async def _detach(self, controller: Any) -> None:
        self._link.silent.add(controller)

    def attach(self, device: Any) -> None:
        controller = self._controllers.get(id(device))
        if controller is None:
            raise BleError("that device is not on this link")
        self.loop.run(self._attach(controller), 5.0, f"{self.name}: attach")

    async def _attach(self, controller: Any) -> None:
        self._link.silent.discard(controller)

    def close(self) -> None:
        self.loop.stop()

    def __enter__(self) -> BleLink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
