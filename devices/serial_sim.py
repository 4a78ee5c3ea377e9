"""A simulated serial device on a pseudo-terminal: vtlab plays the device, the harness reads the other end.

`os.openpty()` gives a master (the device's side, held here) and a slave (`/dev/pts/N`) that the harness
opens exactly as it opens `/dev/ttyUSB0`, through the same pyserial transport. The device writes frames
encoded by a serial profile, and misbehaves on request: garbage, a frame cut off half-way, a flood with no
terminator, and unplugging (its side closed, the port gone) and coming back.

A real USB adapter comes back at the same path; a new pty gets a new number. So the device publishes a
stable link (as udev's `/dev/serial/by-id/...` links are) and re-points it when it comes back; give the
link's path to the harness.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from collections.abc import Mapping
from pathlib import Path

from harness.protocols.serial_profile import ProfileCodec


class SimulatedSerialDevice:
    """A device behind a pty. `path` is what the harness opens (the stable link when `link` is given)."""

    def __init__(self, codec: ProfileCodec | None = None, *, link: str | Path | None = None, echo: bool = False):
        self.codec = codec
        self.link = Path(link) if link is not None else None
        self.echo = echo
        self._master: int | None = None
        self._slave: int | None = None
        self.pts_path: str | None = None
        self.received = bytearray()
        self._received_cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()
        self.plugged_in = threading.Event()
        self.seq = 0

    # ---- plugging

    def plug_in(self) -> str:
        """Create the pty (and the link to it); returns the path the harness should open."""
        if self._master is not None:
            return self.path
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass unchanged both ways
        tty.setraw(master)
        self._master, self._slave = master, slave
        self.pts_path = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.pts_path)
            tmp.replace(self.link)
        self._stop_reader.clear()
        self._reader = threading.Thread(target=self._read_master, name="serial-sim-reader", daemon=True)
        self._reader.start()
        self.plugged_in.set()
        return self.path

    def unplug(self) -> None:
        """Vanish like a pulled USB adapter: the link goes, the device's side closes, the harness reads EIO."""
        self.plugged_in.clear()
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        self._stop_reader.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def come_back(self) -> str:
        """Reappear (a new pty behind the same link)."""
        self.unplug()
        return self.plug_in()

    close = unplug

    def __enter__(self) -> SimulatedSerialDevice:
        self.plug_in()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unplug()

    @property
    def path(self) -> str:
        if self.link is not None:
            return str(self.link)
        if self.pts_path is None:
            raise RuntimeError("the device is not plugged in")
        return self.pts_path

    # ---- talking

    def write(self, data: bytes) -> None:
        """Write raw bytes onto the line, all of them."""
        if self._master is None:
            raise ConnectionError("the simulated device is unplugged")
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [self._master], [], 5.0)
            if not writable:
                raise TimeoutError("the harness is not reading the serial line")
            n = os.write(self._master, view)
            view = view[n:]

    def frame(self, event: str, fields: Mapping[str, object] | None = None) -> bytes:
        """The wire bytes of `event` per the profile; `seq` counts up when the profile has such a field."""
        if self.codec is None:
            raise RuntimeError("this simulated device has no profile")
        values: dict[str, object] = {}
        if "seq" in self.codec.profile.fields.field_names:
            self.seq = (self.seq + 1) % 10000
            values["seq"] = f"{self.seq:04d}"
        values.update(fields or {})
        return self.codec.encode(event, values)

    def send(self, event: str, fields: Mapping[str, object] | None = None) -> bytes:
        """Send one event as the real device would; returns the bytes written."""
        data = self.frame(event, fields)
        self.write(data)
        return data

    def send_garbage(self, data: bytes = b"\x00\xff#NOISE\x07") -> None:
        """Line noise, followed by the profile's frame end so the receiver can resynchronise."""
        self.write(data + self._terminator())

    def stop_mid_frame(self, event: str, fields: Mapping[str, object] | None = None, keep: float = 0.5) -> bytes:
        """Send the first part of a frame and then nothing (a device reset or a cut cable)."""
        data = self.frame(event, fields)
        cut = data[: max(1, int(len(data) * keep))]
        self.write(cut)
        return cut

    def flood(self, size: int, byte: bytes = b"A") -> None:
        """`size` bytes with no frame end: a babbling device that must be cut off, not buffered forever."""
        self.write(byte * size)

    def _terminator(self) -> bytes:
        if self.codec is None:
            return b"\n"
        framing = self.codec.profile.framing
        return framing.terminator.encode("ascii") if framing.kind == "line" else b""

    # ---- what the harness wrote to the device

    def _read_master(self) -> None:
        master = self._master
        assert master is not None
        while not self._stop_reader.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except OSError:
                return  # closed by unplug(), or the harness side hung up
            if not data:
                return
            if self.echo:
                with contextlib.suppress(OSError):
                    self.write(data)
            with self._received_cond:
                self.received += data
                self._received_cond.notify_all()

    def wait_received(self, size: int, timeout: float) -> bytes:
        """Block until the harness has written `size` bytes in all (TimeoutError after `timeout`)."""
        with self._received_cond:
            if not self._received_cond.wait_for(lambda: len(self.received) >= size, timeout):
                raise TimeoutError(f"the device got {len(self.received)} of {size} bytes")
            return bytes(self.received)
