"""Bridge vtlab's emulated BLE air into the reference lab's process.

vtlab's simulated peripherals live on an in-process Bumble `LocalLink` (harness.links.ble.air); the lab is
another process. Bumble's own answer is used: a `Controller` joins that LocalLink in the harness process and
serves its HCI over a TCP socket (`tcp-server`), and the lab's host stack opens it as a Bumble transport
(`tcp-client:127.0.0.1:PORT`), exactly as it would open a USB dongle (`usb:0`). The radio is emulated; the
host stack, GATT client and advertisement decoding in the lab are the real ones.

One bridge is one controller and one host connection (a Bumble central holds one connection at a time), so
the embedded target opens one per device the lab's gateway reads. Runs on the air's loop thread, which the
LocalLink requires. The socket binds 127.0.0.1 on a free port chosen by the kernel.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from harness.transports.ble_link import BleLink

__all__ = ["AirBridge"]


class AirBridge:
    """A controller on `link` whose HCI is served on 127.0.0.1; `spec` is what the lab's central opens."""

    def __init__(self, link: BleLink, name: str = "lab-gateway") -> None:
        self.link = link
        self.name = name
        self._transport: Any = None
        self._controller: Any = None
        self.port = 0
        link.loop.run(self._open(), 5.0, f"{name}: open the HCI bridge")

    async def _open(self) -> None:
        from bumble.controller import Controller
        from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self._transport = await open_tcp_server_transport_with_socket(sock)
        self._controller = Controller(
            self.name,
            host_source=self._transport.source,
            host_sink=self._transport.sink,
            link=self.link._link,
            public_address=self.link.new_address(),
        )

    @property
    def spec(self) -> str:
        """The Bumble transport spec the lab opens (`tcp-client:127.0.0.1:PORT`)."""
        return f"tcp-client:127.0.0.1:{self.port}"

    def close(self) -> None:
        if self._transport is None:
            return
        transport, controller, self._transport = self._transport, self._controller, None
        with contextlib.suppress(Exception):  # the air may be gone already; the socket dies with its loop
            self.link.loop.run(self._close(transport, controller), 5.0, f"{self.name}: close the HCI bridge")

    async def _close(self, transport: Any, controller: Any) -> None:
        self.link._link.remove_controller(controller)
        transport.server.close()
        await transport.close()
