"""Serial lines (USB adapters, pseudo-terminals, RFC 2217 and raw TCP serial servers) on pyserial, for asyncio.

pyserial-asyncio is unmaintained, so the asyncio layer is our own: one reader thread per port does blocking
reads, stamps each chunk with `time.monotonic_ns()` the moment the read returns (so event-loop scheduling
never enters a measured latency), frames it with the profile's sans-I/O framer and hands each frame over
with `loop.call_soon_threadsafe` (and to an optional callback). A thread rather than `loop.add_reader`
because `rfc2217://` and `socket://` ports have no single readable descriptor of their own.

What a peer does wrong is a finding, never a crash: a frame over `max_frame` or with no terminator, garbage
outside frames, a frame that stops half-way (`frame_timeout`), a malformed frame or bad checksum, and the
port vanishing (a USB adapter pulled out). After a disconnect the thread reopens the same URL with
exponential backoff until it reappears, and records the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import serial

from harness.errors import InputError, TargetError
from harness.protocols.base import ProtocolError
from harness.protocols.serial_profile import Framer, LineFramer, LineFraming, ProfileCodec, Refused, SerialEvent

PARITIES = {
    "N": serial.PARITY_NONE,
    "E": serial.PARITY_EVEN,
    "O": serial.PARITY_ODD,
    "M": serial.PARITY_MARK,
    "S": serial.PARITY_SPACE,
}
STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """How to open a port. `url` is a device path (`/dev/ttyUSB0`, `/dev/pts/3`) or a pyserial URL
    (`rfc2217://host:port`, `socket://host:port`). Times are seconds."""

    url: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    read_timeout: float = 0.05
    """How long one blocking read waits; bounds how late a partial frame or close() is noticed."""
    write_timeout: float = 2.0
    frame_timeout: float = 0.5
    """A partial frame with no byte for this long is given up and reported (the peer stopped mid-frame)."""
    reconnect_initial: float = 0.05
    reconnect_max: float = 2.0
    exclusive: bool = True
    """Lock the port so no other program reads (and steals) bytes from it during a test."""
    queue_size: int = 100_000

    def __post_init__(self) -> None:
        if not self.url:
            raise InputError("serial port url is empty", fix="write a device path or socket://host:port")
        if self.bytesize not in (5, 6, 7, 8):
            raise InputError(f"bytesize {self.bytesize} is not 5, 6, 7 or 8", fix="most devices use 8")
        if self.parity.upper() not in PARITIES:
            raise InputError(f"parity {self.parity!r} is not one of N, E, O, M, S", fix="most devices use N")
        if self.stopbits not in STOPBITS:
            raise InputError(f"stopbits {self.stopbits} is not 1, 1.5 or 2", fix="most devices use 1")
        if self.baudrate <= 0:
            raise InputError(f"baudrate {self.baudrate} is not positive", fix="e.g. 9600 or 115200")
        for name in ("read_timeout", "write_timeout", "frame_timeout", "reconnect_initial", "reconnect_max"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive", fix="give a time in seconds above 0")


@dataclass(frozen=True, slots=True)
class SerialArrival:
    """One frame as it arrived: raw wire bytes, the monotonic stamp of the read that completed it, and the
    profile's event when the transport has a codec."""

    raw: bytes
    arrived_ns: int
    port: str
    event: SerialEvent | None = None


FindingKind = Literal["refused", "malformed", "partial", "disconnected", "reconnected", "overflow", "harness_error"]


@dataclass(frozen=True, slots=True)
class SerialFinding:
    """Something the peer or the line did that a report must show: refused bytes, a bad frame, an unplug."""

    kind: FindingKind
    reason: str
    at_ns: int
    port: str
    raw: bytes = field(default=b"", repr=False)


class SerialUnavailable(ConnectionError):
    """The port is not open now (unplugged, not yet reappeared, or closed)."""


FrameCallback = Callable[[SerialArrival], None]
RefusedCallback = Callable[[bytes, str], None]
StatusCallback = Callable[[SerialFinding], None]

_STOP = object()


class SerialTransport:
    """A serial port read on its own thread: connect, send, receive (with arrival stamps), close.

    Callbacks run on the reading thread (keep them short and thread-safe); `receive()` serves the
    asyncio side. `on_refused(raw, reason)` gets every refused, malformed or partial frame;
    `on_status(finding)` every disconnect and reconnect. All of them are in `findings` too.
    """

    name = "serial"

    def __init__(
        self,
        settings: SerialSettings,
        *,
        codec: ProfileCodec | None = None,
        framer: Framer | None = None,
        on_frame: FrameCallback | None = None,
        on_refused: RefusedCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.settings = settings
        self.codec = codec
        if framer is None:
            framer = codec.new_framer() if codec is not None else LineFramer(LineFraming(kind="line"))
        self.framer = framer
        self.on_frame = on_frame
        self.on_refused = on_refused
        self.on_status = on_status
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._port: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._ever_connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aqueue: asyncio.Queue[SerialArrival] | None = None
        self._squeue: queue.Queue[SerialArrival] = queue.Queue(maxsize=settings.queue_size)
        self._findings: list[SerialFinding] = []
        self.frames = 0
        self.bytes_in = 0
        self.disconnects = 0
        self.reconnects = 0
        self.last_open_error: str | None = None

    # ---- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the reading thread; it opens the port (retrying with backoff until it exists)."""
        if self._thread is not None:
            return
        if loop is not None:
            self._loop = loop
            self._aqueue = asyncio.Queue(maxsize=self.settings.queue_size)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"serial:{self.settings.url}", daemon=True)
        self._thread.start()

    async def connect(self, timeout: float = 5.0) -> None:
        """Start on the running loop and wait until the port is open (TargetError after `timeout`)."""
        self.start(asyncio.get_running_loop())
        ok = await asyncio.to_thread(self._connected.wait, timeout)
        if not ok:
            raise TargetError(
                f"serial port {self.settings.url} did not open within {timeout}s ({self.last_open_error})",
                place=self.settings.url,
                fix="check the device is plugged in, the path or URL, and that no other program holds the port",
            )

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        """Stop reading and close the port. Safe to call twice."""
        self._stop.set()
        with self._lock:
            port = self._port
        if port is not None:
            with contextlib.suppress(Exception):
                port.cancel_read()
        if self._thread is not None:
            self._thread.join(timeout=max(2.0, self.settings.read_timeout * 4))
            self._thread = None
        self._close_port()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ---- sending and receiving

    def write(self, data: bytes) -> int:
        """Write all of `data`; returns the monotonic stamp taken just before the write (the stimulus time)."""
        with self._lock:
            port = self._port
        if port is None:
            raise SerialUnavailable(f"serial port {self.settings.url} is not open")
        with self._write_lock:
            sent_ns = time.monotonic_ns()
            try:
                port.write(data)
                port.flush()
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                raise SerialUnavailable(f"serial port {self.settings.url}: write failed ({exc})") from None
        return sent_ns

    async def send(self, data: bytes) -> int:
        """`write` off the event loop (a full output buffer must not stall other tasks)."""
        return await asyncio.to_thread(self.write, data)

    async def receive(self, timeout: float | None = None) -> SerialArrival:
        """The next frame (asyncio.TimeoutError after `timeout`). Needs `connect()` or `start(loop)`."""
        if self._aqueue is None:
            raise RuntimeError("receive() needs the transport started on an event loop (await connect())")
        if timeout is None:
            return await self._aqueue.get()
        return await asyncio.wait_for(self._aqueue.get(), timeout)

    def get(self, timeout: float | None = None) -> SerialArrival:
        """The next frame, for callers without an event loop (queue.Empty after `timeout`)."""
        return self._squeue.get(timeout=timeout)

    @property
    def findings(self) -> list[SerialFinding]:
        with self._lock:
            return list(self._findings)

    # ---- the reading thread

    def _run(self) -> None:
        s = self.settings
        backoff = s.reconnect_initial
        while not self._stop.is_set():
            if not self._connected.is_set():
                if not self._open():
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, s.reconnect_max)
                    continue
                backoff = s.reconnect_initial
            try:
                self._read_once()
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's handle went away under a concurrent close
                if self._stop.is_set():
                    break
                self._lost(str(exc) or type(exc).__name__)
        self._connected.clear()

    def _open(self) -> bool:
        s = self.settings
        try:
            port = serial.serial_for_url(
                s.url,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=PARITIES[s.parity.upper()],
                stopbits=STOPBITS[s.stopbits],
                timeout=s.read_timeout,
                write_timeout=s.write_timeout,
                exclusive=s.exclusive if "://" not in s.url else None,
                do_not_open=True,
            )
            # pyserial's open() discards whatever is already waiting; a harness must see it instead (a device
            # server that reports on connect, a replugged device that sends at once)
            port.reset_input_buffer = _keep_input  # type: ignore[method-assign]
            try:
                port.open()
            finally:
                del port.reset_input_buffer
        except (serial.SerialException, OSError, ValueError) as exc:
            self.last_open_error = str(exc)
            return False
        with self._lock:
            self._port = port
        self._connected.set()
        if self._ever_connected:
            self.reconnects += 1
            self._finding("reconnected", f"serial port {s.url} is back", b"")
        self._ever_connected = True
        return True

    def _read_once(self) -> None:
        port = self._port
        data = port.read(1)
        if data:
            arrived_ns = time.monotonic_ns()
            try:
                waiting = port.in_waiting
                if waiting:
                    data += port.read(waiting)
            finally:  # what was read before the port failed still counts (a frame's last byte, then EOF)
                self._last_rx_ns = arrived_ns
                self.bytes_in += len(data)
                for item in self.framer.push(data):
                    self._handle(item, arrived_ns)
        elif self.framer.busy:
            idle_ns = time.monotonic_ns() - self._last_rx_ns
            if idle_ns >= self.settings.frame_timeout * 1e9 and (raw := self.framer.take_partial()):
                self._refuse(
                    "partial",
                    raw,
                    f"peer stopped mid-frame: {len(raw)} bytes and no frame end for {idle_ns / 1e6:.0f} ms",
                )

    _last_rx_ns = 0

    def _handle(self, item: bytes | Refused, arrived_ns: int) -> None:
        if isinstance(item, Refused):
            self._refuse("refused", item.raw, item.reason)
            return
        event = None
        if self.codec is not None:
            try:
                event = self.codec.decode_frame(item)
            except ProtocolError as exc:
                self._refuse("malformed", item, exc.reason)
                return
        arrival = SerialArrival(item, arrived_ns, self.settings.url, event)
        self.frames += 1
        if self.on_frame is not None:
            self._call(self.on_frame, arrival)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
                self._loop.call_soon_threadsafe(self._put_async, arrival)
        else:
            try:
                self._squeue.put_nowait(arrival)
            except queue.Full:
                self._refuse("overflow", item, "receive queue full: nobody is reading the frames")

    def _put_async(self, arrival: SerialArrival) -> None:
        assert self._aqueue is not None
        try:
            self._aqueue.put_nowait(arrival)
        except asyncio.QueueFull:
            self._refuse("overflow", arrival.raw, "receive queue full: nobody is reading the frames")

    def _lost(self, reason: str) -> None:
        self._connected.clear()
        self._close_port()
        self.disconnects += 1
        if self.framer.busy and (raw := self.framer.take_partial()):
            self._refuse("partial", raw, f"port lost mid-frame: {len(raw)} bytes of an unfinished frame")
        self._finding("disconnected", f"serial port {self.settings.url} lost: {reason}", b"")

    def _close_port(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def _refuse(self, kind: FindingKind, raw: bytes, reason: str) -> None:
        self._finding(kind, reason, raw)
        if self.on_refused is not None:
            self._call(self.on_refused, raw, reason)

    def _finding(self, kind: FindingKind, reason: str, raw: bytes) -> None:
        finding = SerialFinding(kind, reason, time.monotonic_ns(), self.settings.url, raw)
        with self._lock:
            self._findings.append(finding)
        if kind in ("disconnected", "reconnected") and self.on_status is not None:
            self._call(self.on_status, finding)

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        """A failing callback is the harness's bug, not the device's: keep reading, remember the error."""
        try:
            func(*args)
        except Exception as exc:  # the reading thread must survive its consumers
            with self._lock:
                self._findings.append(
                    SerialFinding(
                        "harness_error",
                        f"harness callback {func!r} failed: {exc!r}",
                        time.monotonic_ns(),
                        self.settings.url,
                    )
                )


def _keep_input() -> None:
    """Stands in for pyserial's reset_input_buffer during open()."""


def open_serial(url: str, *, profile: ProfileCodec | None = None, **settings: Any) -> SerialTransport:
    """Convenience for labs and tools: a transport for `url` with the profile's framing and decoding."""
    return SerialTransport(SerialSettings(url=url, **settings), codec=profile)
