"""SIA DC-09 over TCP and UDP with asyncio: a receiving centre (`DC09Receiver`) and an alarm transmitter
(`DC09Transmitter`). The protocol rules live in `harness.protocols.dc09`; this module only moves bytes.

Arrivals are stamped with `time.monotonic_ns()` in the protocol callback that takes the bytes off the socket
(`_StampedReader.feed_data` on TCP, `datagram_received` on UDP), before any parsing or callback, so the turns
of the event loop between the bytes' arrival and the reading coroutine's wake-up (and whatever else the loop
runs meanwhile) never enter a measured latency. Reads wait under `asyncio.timeout`, not `wait_for`, which
would add a task and turns of the loop per read. The lead runs these on their own loop thread; no blocking
entry points here. asyncio sets TCP_NODELAY on its TCP transports, so replies never wait for a delayed ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, SupportsIndex

from harness.protocols.base import ProtocolError
from harness.protocols.dc09 import (
    MAX_FRAME_BYTES,
    NAK,
    NULL,
    Account,
    DC09Message,
    DC09Reply,
    Decision,
    FrameSplitter,
    Junk,
    ReceiverPolicy,
    ReceiverState,
    TransmitterState,
)

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 1.0
"""How long closing a link waits for its unsent bytes to leave before the connection is reset."""
KEPT_REFUSED = 100
"""Replies that could not be read, kept for inspection (the newest); `counts` has them all."""

Peer = tuple[str, int]
Clock = Callable[[], datetime]
OnMessage = Callable[[Decision, int, Peer, bytes], None]
"""on_message(decision, arrived_ns, peer, reply_bytes_sent)"""
OnRefused = Callable[[bytes, str], None]
"""on_refused(raw_bytes, reason): frames that could not be read at all; no reply was sent"""


def utc_now() -> datetime:
    return datetime.now(UTC)


class _StampedReader(asyncio.StreamReader):
    """A StreamReader that notes when bytes last came off the socket (in the transport's callback)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.arrived_ns = 0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.arrived_ns = time.monotonic_ns()
        super().feed_data(data)


async def _read(reader: asyncio.StreamReader, n: int, timeout_s: float | None) -> tuple[bytes, int]:
    """Up to `n` bytes and when the last of them arrived (TimeoutError after `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        data = await reader.read(n)
    arrived_ns = reader.arrived_ns if isinstance(reader, _StampedReader) else time.monotonic_ns()
    return data, arrived_ns


async def _open_stamped(host: str, port: int, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """`asyncio.open_connection` with a `_StampedReader`."""
    loop = asyncio.get_running_loop()
    reader = _StampedReader(limit, loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def _peer(addr: object) -> Peer:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    return ("?", 0)


class DC09Receiver:
    """A receiving centre on one port, TCP and UDP, with keys per account and the DC-09 receiver rules.

    Every frame ends in exactly one callback: `on_message` for frames the rules answered (ACK, NAK or DUH,
    see `Decision.outcome`), `on_refused` for bytes that are not a readable frame. Callback errors are logged
    and swallowed: a harness receiver must outlive whatever it is fed.
    """

    def __init__(
        self,
        accounts: Iterable[Account],
        on_message: OnMessage,
        on_refused: OnRefused | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        policy: ReceiverPolicy | None = None,
        tcp: bool = True,
        udp: bool = True,
        clock: Clock = utc_now,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_connections: int = 256,
        idle_timeout_s: float | None = 600.0,
    ) -> None:
        if not (tcp or udp):
            raise ValueError("a DC-09 receiver listens on TCP, UDP or both")
        self.state = ReceiverState(accounts, policy)
        self.on_message = on_message
        self.on_refused = on_refused
        self.host = host
        self._port = port
        self._tcp = tcp
        self._udp = udp
        self.clock = clock
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.counts = {"frames": 0, "refused": 0, "callback_errors": 0}

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        """Bind TCP and UDP to the same port (a free one when port is 0)."""
        loop = asyncio.get_running_loop()
        requested = self._port
        for _ in range(20):
            server: asyncio.Server | None = None
            port = requested
            try:
                if self._tcp:

                    def stamped() -> asyncio.StreamReaderProtocol:  # asyncio.start_server, with a _StampedReader
                        return asyncio.StreamReaderProtocol(
                            _StampedReader(self.max_frame_bytes, loop), self._handle_tcp, loop=loop
                        )

                    server = await loop.create_server(stamped, self.host, port)
                    port = server.sockets[0].getsockname()[1]
                if self._udp:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpProtocol(self), local_addr=(self.host, port)
                    )
                    self._udp_transport = transport
                    port = transport.get_extra_info("sockname")[1]
            except OSError:
                if server is not None:
                    server.close()
                    await server.wait_closed()
                if requested != 0:
                    raise
                continue  # the kernel's free TCP port was taken for UDP: try another
            self._server = server
            self._port = port
            return
        raise OSError("no port free for both TCP and UDP")

    async def stop(self) -> None:
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        if self._server is not None:
            self._server.close()
        # close the sockets rather than cancel the handlers: a cancelled handler task makes asyncio's
        # stream machinery log a spurious traceback on Python 3.11
        for writer in list(self._connections.values()):
            writer.transport.abort()
        if self._connections:
            _done, late = await asyncio.wait(list(self._connections), timeout=5.0)
            for task in late:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DC09Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def report(self, decision: Decision, arrived_ns: int, peer: Peer, sent: bytes) -> None:
        try:
            self.on_message(decision, arrived_ns, peer, sent)
        except Exception:
            self.counts["callback_errors"] += 1
            log.exception("DC-09 on_message callback failed")

    def refuse(self, raw: bytes, reason: str) -> None:
        self.counts["refused"] += 1
        if self.on_refused is None:
            log.warning("DC-09 refused %r: %s", raw[:200], reason)
            return
        try:
            self.on_refused(raw, reason)
        except Exception:
            self.counts["callback_errors"] += 1
            log.exception("DC-09 on_refused callback failed")

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.max_connections or task is None:
            writer.close()
            return
        self._connections[task] = writer
        peer = _peer(writer.get_extra_info("peername"))
        splitter = FrameSplitter(self.max_frame_bytes)
        try:
            while True:
                try:
                    data, arrived_ns = await _read(reader, self.max_frame_bytes, self.idle_timeout_s)
                except (TimeoutError, ConnectionError, OSError):
                    break
                if not data:
                    break
                for item in splitter.feed(data):
                    if isinstance(item, Junk):
                        self.refuse(item.raw, item.reason)
                        continue
                    await self._answer_tcp(item, arrived_ns, peer, writer)
            for junk in splitter.close():
                self.refuse(junk.raw, junk.reason)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer_tcp(self, frame: bytes, arrived_ns: int, peer: Peer, writer: asyncio.StreamWriter) -> None:
        decision = self._decide(frame, peer)
        if decision is None:
            return
        sent = b""
        try:
            writer.write(decision.reply_bytes)
            await writer.drain()
            sent = decision.reply_bytes
        except (ConnectionError, OSError):
            log.info("DC-09 reply to %s not delivered: connection lost", peer)
        self.report(decision, arrived_ns, peer, sent)

    def _decide(self, raw: bytes, peer: Peer) -> Decision | None:
        self.counts["frames"] += 1
        try:
            return self.state.receive(raw, self.clock())
        except ProtocolError as exc:
            self.refuse(raw, exc.reason)
        except Exception as exc:  # a bug in vtlab must not take the receiver down: record it as a refusal
            log.exception("DC-09 receiver rules failed on a frame from %s", peer)
            self.refuse(raw, f"internal error: {exc!r}")
        return None

    def datagram(self, data: bytes, arrived_ns: int, peer: Peer) -> None:
        if len(data) > self.max_frame_bytes:
            self.refuse(data[: self.max_frame_bytes], f"datagram of {len(data)} bytes exceeds {self.max_frame_bytes}")
            return
        decision = self._decide(data, peer)
        if decision is None:
            return
        sent = b""
        if self._udp_transport is not None:
            try:
                self._udp_transport.sendto(decision.reply_bytes, peer)
                sent = decision.reply_bytes
            except OSError:
                log.info("DC-09 reply to %s not sent", peer)
        self.report(decision, arrived_ns, peer, sent)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: DC09Receiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        arrived_ns = time.monotonic_ns()
        self.receiver.datagram(data, arrived_ns, _peer(addr))

    def error_received(self, exc: Exception) -> None:
        log.info("DC-09 UDP error: %s", exc)


@dataclass(frozen=True, slots=True)
class Path:
    """Where a transmitter sends: a receiver address and the transport to use."""

    host: str
    port: int
    protocol: Literal["tcp", "udp"] = "tcp"

    def __str__(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of sending one message: the reply (None when no path answered) and the round trip."""

    message: DC09Message
    reply: DC09Reply | None
    round_trip_ns: int | None
    path: Path | None
    attempts: int
    naks: int
    sent_ns: int
    """monotonic_ns when the first byte of the answered attempt was written (or of the last attempt)"""
    replied_ns: int | None
    error: str = ""

    @property
    def acked(self) -> bool:
        return self.reply is not None and self.reply.kind == "ACK"


class _Link:
    """One open path: TCP stream or connected UDP socket; yields (frame, arrived_ns)."""

    def __init__(self, path: Path, max_frame_bytes: int, on_junk: Callable[[bytes, str], None]) -> None:
        self.path = path
        self.max_frame_bytes = max_frame_bytes
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(maxsize=64)
        self.splitter = FrameSplitter(max_frame_bytes)
        self.on_junk = on_junk
        """Bytes that are no frame go here at once (the transmitter keeps a bounded record), never a list."""

    async def open(self, timeout_s: float) -> None:
        if self.path.protocol == "tcp":
            self.reader, self.writer = await asyncio.wait_for(
                _open_stamped(self.path.host, self.path.port, self.max_frame_bytes), timeout_s
            )
        else:
            loop = asyncio.get_running_loop()
            self.udp, _ = await loop.create_datagram_endpoint(
                lambda: _ClientUdp(self), remote_addr=(self.path.host, self.path.port)
            )

    @property
    def is_open(self) -> bool:
        if self.path.protocol == "tcp":
            return self.writer is not None and not self.writer.is_closing()
        return self.udp is not None and not self.udp.is_closing()

    def write(self, raw: bytes) -> None:
        if self.writer is not None:
            self.writer.write(raw)
        elif self.udp is not None:
            self.udp.sendto(raw)
        else:
            raise ConnectionError("link not open")

    async def next_frame(self, deadline_ns: int) -> tuple[bytes, int]:
        """The next frame, stamped when its bytes arrived; TimeoutError at the deadline."""
        while True:
            if not self.queue.empty():
                return self.queue.get_nowait()
            remaining = (deadline_ns - time.monotonic_ns()) / 1e9
            if remaining <= 0:
                raise TimeoutError
            if self.reader is None:
                async with asyncio.timeout(remaining):
                    return await self.queue.get()
            data, arrived_ns = await _read(self.reader, self.max_frame_bytes, remaining)
            if not data:
                raise ConnectionError("receiver closed the connection")
            for item in self.splitter.feed(data):
                if isinstance(item, Junk):
                    self.on_junk(item.raw, item.reason)
                elif not self.queue.full():
                    self.queue.put_nowait((item, arrived_ns))

    def stale(self) -> int:
        """Drop frames already queued: read before the next message was written, none can answer it."""
        n = self.queue.qsize()
        while not self.queue.empty():
            self.queue.get_nowait()
        return n

    async def close(self) -> None:
        if self.writer is not None:
            writer, self.writer, self.reader = self.writer, None, None
            writer.close()
            # a receiver that reads nothing keeps unsent bytes in the transport, and an orderly close waits
            # for them forever: give it a moment, then reset the connection
            try:
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await writer.wait_closed()
            except TimeoutError:
                writer.transport.abort()
            except Exception:
                writer.transport.abort()
        if self.udp is not None:
            self.udp.close()
            self.udp = None


class _ClientUdp(asyncio.DatagramProtocol):
    """A datagram should hold one frame; one holding several (or junk around one) is split as a stream is,
    so a receiver that batches its replies is still understood and its junk still reported."""

    def __init__(self, link: _Link) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: object) -> None:
        arrived_ns = time.monotonic_ns()
        link = self.link
        splitter = FrameSplitter(link.max_frame_bytes)
        for item in [*splitter.feed(data), *splitter.close()]:
            if isinstance(item, Junk):
                link.on_junk(item.raw, item.reason)
            elif not link.queue.full():
                link.queue.put_nowait((item, arrived_ns))


class DC09Transmitter:
    """An alarm transmitter: sends over the primary path, retries, falls back to the backup path.

    One message is in flight at a time (DC-09 pairs replies by sequence, and a NAK carries none). After a
    NAK it adopts the receiver's clock offset and resends the same sequence with a corrected timestamp.
    """

    def __init__(
        self,
        state: TransmitterState,
        primary: Path,
        backup: Path | None = None,
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        max_naks: int = 2,
        clock: Clock = utc_now,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.state = state
        self.paths = [primary] if backup is None else [primary, backup]
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_naks = max_naks
        self.clock = clock
        self.max_frame_bytes = max_frame_bytes
        self._links: dict[Path, _Link] = {}
        self._lock = asyncio.Lock()
        self.refused: list[tuple[bytes, str]] = []
        """Replies that could not be read (bounded to the last `KEPT_REFUSED`, each cut to the frame bound)."""
        self.counts = {"refused": 0, "unmatched": 0, "stale": 0}
        """refused: bytes that were no readable reply; unmatched: replies for a sequence not in flight (late,
        duplicated or never sent); stale: replies already waiting when a new message was sent."""

    async def send(self, token: str, data: str, extended: tuple[tuple[str, str], ...] = ()) -> SendResult:
        """Send one SIA-DCS / ADM-CID / NULL message (data without brackets) and wait for its reply."""
        async with self._lock:
            msg = self.state.message(token, data, self.clock(), extended)
            try:
                return await self._deliver(msg)
            finally:
                self.state.forget(msg)

    async def poll(self) -> SendResult:
        """A NULL link test."""
        return await self.send(NULL, "")

    async def poll_every(
        self, interval_s: float, stop: asyncio.Event, on_result: Callable[[SendResult], None] | None = None
    ) -> int:
        """Link test at an interval until `stop` is set; returns the number of polls sent."""
        count = 0
        while not stop.is_set():
            result = await self.poll()
            count += 1
            if on_result is not None:
                on_result(result)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
        return count

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
        self._links.clear()

    async def __aenter__(self) -> DC09Transmitter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _link(self, path: Path) -> _Link:
        link = self._links.get(path)
        if link is not None and link.is_open:
            return link
        if link is not None:
            await link.close()
        link = _Link(path, self.max_frame_bytes, self._note_refused)
        await link.open(self.timeout_s)
        self._links[path] = link
        return link

    async def _deliver(self, msg: DC09Message) -> SendResult:
        attempts = 0
        naks = 0
        sent_ns = time.monotonic_ns()
        writes: list[int] = []  # when each attempt was written
        error = ""
        for path in self.paths:
            tries = 0
            while tries <= self.retries:
                tries += 1
                attempts += 1
                if attempts > 1:
                    msg = self.state.restamp(msg, self.clock())
                raw = self.state.encode(msg)
                try:
                    link = await self._link(path)
                    if attempts == 1:
                        self.counts["stale"] += link.stale()
                    sent_ns = time.monotonic_ns()
                    writes.append(sent_ns)
                    link.write(raw)
                    deadline = sent_ns + int(self.timeout_s * 1e9)
                    while True:
                        frame, arrived_ns = await link.next_frame(deadline)
                        if arrived_ns < writes[0]:  # in the socket before this message was first written
                            self.counts["stale"] += 1
                            continue
                        try:
                            result = self.state.on_reply(frame, self.clock())
                        except ProtocolError as exc:
                            self._note_refused(frame, exc.reason)
                            continue
                        except Exception as exc:  # a bug in vtlab must not lose the send: a refusal to report
                            log.exception("DC-09 transmitter rules failed on a reply from %s", path)
                            self._note_refused(frame, f"internal error: {exc!r}")
                            continue
                        if result.reply.kind == NAK:
                            break
                        if result.message is None or result.message.sequence != msg.sequence:
                            self.counts["unmatched"] += 1
                            continue  # a late, duplicated or invented reply: it answers nothing in flight
                        answered = max(t for t in writes if t <= arrived_ns)  # a late answer to an earlier try
                        return SendResult(
                            msg, result.reply, arrived_ns - answered, path, attempts, naks, answered, arrived_ns
                        )
                    naks += 1
                    error = "NAK: timestamp outside the receiver's window"
                    if naks > self.max_naks:
                        return SendResult(
                            msg, result.reply, arrived_ns - sent_ns, path, attempts, naks, sent_ns, arrived_ns, error
                        )
                    tries -= 1  # a NAK is answered by a corrected resend, not counted as a lost attempt
                except TimeoutError:
                    error = f"no reply within {self.timeout_s} s on {path}"
                    await self._drop(path)
                except (ConnectionError, OSError) as exc:
                    error = f"{path}: {exc}"
                    await self._drop(path)
        return SendResult(msg, None, None, None, attempts, naks, sent_ns, None, error)

    async def _drop(self, path: Path) -> None:
        link = self._links.pop(path, None)
        if link is not None:
            await link.close()

    def _note_refused(self, frame: bytes, reason: str) -> None:
        self.counts["refused"] += 1
        self.refused.append((frame[: self.max_frame_bytes], reason))
        del self.refused[:-KEPT_REFUSED]
