"""SIP over UDP, TCP and TLS with asyncio, carrying SCAIP: a device (`ScaipDevice`) and a response
centre (`ScaipReceiver`).

I/O only: every byte goes through the sans-I/O cores in `harness.protocols.scaip_sip` (and below them
`harness.protocols.sip`). Each arrival is stamped with `time.monotonic_ns()` first thing in the
protocol callback that read it, before parsing, so neither parsing nor event-loop scheduling enters a
measured latency. Transaction timers are data: one task sleeps until the core's `wake_at_ns`.

On streams a connection is kept per remote address and reused in both directions (a centre answers
over the connection the device opened); a peer that breaks Content-Length framing is refused and its
connection closed. Secrets (TLS keys and their passwords, digest passwords) come from files or the
environment, never from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.protocols import scaip
from harness.protocols.scaip import MessageType, Mrq, Mrs, StatusNumber
from harness.protocols.scaip_sip import (
    Credentials,
    Local,
    MrqAnswered,
    MrqArrived,
    MrqFailed,
    MrsArrived,
    MrsDelivered,
    Output,
    Refused,
    ScaipCaller,
    ScaipResponder,
)
from harness.protocols.sip.endpoint import SipEndpoint
from harness.protocols.sip.events import Peer, Transmit
from harness.protocols.sip.message import SipParseError, StreamReader
from harness.protocols.sip.transactions import Timers
from harness.transports.tcp import no_delay

TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
READ_CHUNK = 65536


# --- TLS -----------------------------------------------------------------------------------------


def server_ssl_context(
    cert: str | Path,
    key: str | Path,
    *,
    ca: str | Path | None = None,
    require_client_cert: bool = False,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """A TLS server context from PEM files (`key_password` from the environment or a file, never argv)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key), password=key_password)
    if ca is not None:
        ctx.load_verify_locations(str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_ssl_context(
    *,
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    verify: bool = True,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """A TLS client context; verification stays on unless a lab file turns it off (and the report says so)."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None, password=key_password)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


KEPT = 10_000
"""A receiver keeps at most this many recent arrivals, refusals and deliveries for inspection (tools and
tests); callbacks see every one. A long-running receiving centre must not grow without bound."""


MAX_BACKLOG = 1024 * 1024
"""Bytes a stream may hold unsent: a peer that reads nothing past this has its connection reset (requests in
flight on it fail at once), so a platform that stops reading never makes vtlab grow."""
EARLY_MRS = 1000
"""`<mrs>` documents kept whose ref no send waits for yet (one may overtake its 200 OK); the oldest go first."""


def _keep(items: list[Any], item: Any) -> None:
    items.append(item)
    if len(items) > KEPT:
        del items[: len(items) - KEPT // 2]  # amortised: trim half at a time


# --- the wire: sockets feeding one sans-I/O core -------------------------------------------------


class _Core(Protocol):
    def receive_datagram(self, data: bytes, peer: Peer, now_ns: int) -> list[Output]: ...
    def receive_message(self, msg: Any, peer: Peer, now_ns: int, raw: bytes = b"") -> list[Output]: ...
    def refuse_frame(self, raw: bytes, error: SipParseError, peer: Peer, now_ns: int) -> list[Output]: ...
    def tick(self, now_ns: int) -> list[Output]: ...
    def peer_failed(self, peer: Peer, now_ns: int) -> list[Output]: ...
    @property
    def wake_at_ns(self) -> int | None: ...


def _peer(addr: Any) -> Peer:
    return (str(addr[0]), int(addr[1]))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, wire: SipWire) -> None:
        self.wire = wire

    def datagram_received(self, data: bytes, addr: Any) -> None:
        arrived_ns = time.monotonic_ns()
        self.wire._feed_datagram(data, _peer(addr), arrived_ns)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable and the like: the transaction's timers decide what it means


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, wire: SipWire, peer: Peer | None = None) -> None:
        self.wire = wire
        self.peer = peer
        self.reader = StreamReader()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        no_delay(transport.get_extra_info("socket"))
        if self.peer is None:
            self.peer = _peer(transport.get_extra_info("peername"))
        self.wire._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        arrived_ns = time.monotonic_ns()
        peer = self.peer
        assert peer is not None
        if self.transport is None or self.transport.is_closing():
            return  # framing was already lost on this connection: nothing after it is read
        self.reader.feed(data)
        while True:
            try:
                msg = self.reader.next_message()
            except SipParseError as exc:
                error = exc
                self.reader = StreamReader()  # drop what was held; the connection is going
                self.wire._guarded(
                    lambda: self.wire.core.refuse_frame(data, error, peer, arrived_ns),  # noqa: B023 - called at once
                    data,
                    peer,
                    arrived_ns,
                )
                if self.transport is not None:
                    self.transport.abort()  # an orderly close would wait for a peer that may never read
                return
            if msg is None:
                return
            message = msg
            self.wire._guarded(
                lambda: self.wire.core.receive_message(message, peer, arrived_ns),  # noqa: B023 - called at once
                data,
                peer,
                arrived_ns,
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.wire._connections.get(self.peer) is self:
            del self.wire._connections[self.peer]
            if not self.wire._closed:  # requests in flight on this connection fail now, not after Timer F
                self.wire._handle(self.wire.core.peer_failed(self.peer, time.monotonic_ns()))
        if not self.closed.done():
            self.closed.set_result(None)


class SipWire:
    """One SIP transport's sockets (a UDP socket, or a listening socket plus connections) and the timer
    task that drives the core's transactions."""

    def __init__(
        self,
        transport: str = "udp",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        transport = transport.lower()
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: write one of {', '.join(TRANSPORTS)}")
        if transport == "tls" and server_ssl is None and client_ssl is None:
            raise ValueError("TLS needs an ssl context (server_ssl_context / client_ssl_context)")
        self.transport = transport
        self.host = host
        self.port = port
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.server_hostname = server_hostname
        self.core: _Core
        self.on_output: Callable[[Output], None] = lambda o: None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[Peer, _StreamProtocol] = {}
        self._connecting: dict[Peer, asyncio.Task[_StreamProtocol | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.sent = 0
        self.received = 0
        self.internal_errors = 0
        self.backlog_resets = 0

    async def open(self, core_factory: Callable[[Local], Any], on_output: Callable[[Output], None], user: str) -> Local:
        """Bind, build the core for the bound address, start the timer task."""
        loop = asyncio.get_running_loop()
        self.on_output = on_output
        if self.transport == "udp":
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
            )
            self._udp = transport
            self.port = transport.get_extra_info("sockname")[1]
        else:
            ssl_ctx = self.server_ssl if self.transport == "tls" else None
            listen = self.transport == "tcp" or ssl_ctx is not None
            if listen:
                self._server = await loop.create_server(
                    lambda: _StreamProtocol(self), self.host, self.port, ssl=ssl_ctx
                )
                self.port = self._server.sockets[0].getsockname()[1]
            elif self.port == 0:
                self.port = DEFAULT_PORTS[self.transport]
        local = Local(self.host, self.port, self.transport.upper(), user)
        self.core = core_factory(local)
        return local

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks) + list(self._connecting.values()):
            task.cancel()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for conn in list(self._connections.values()):
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), 1.0)
            except (TimeoutError, asyncio.CancelledError):
                if conn.transport is not None:
                    conn.transport.abort()  # a peer that reads nothing holds an orderly close open forever
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._udp is not None:
            self._udp.close()

    # input
    def _feed_datagram(self, data: bytes, peer: Peer, arrived_ns: int) -> None:
        self.received += 1
        self._guarded(lambda: self.core.receive_datagram(data, peer, arrived_ns), data, peer, arrived_ns)

    def _guarded(
        self, step: Callable[[], list[Output]], raw: bytes, peer: Peer | None = None, arrived_ns: int = 0
    ) -> None:
        """Run one input step; an exception (a bug in vtlab or a user's callback) becomes a refusal of that
        input. Raised out of an asyncio protocol callback it would close the socket for good."""
        try:
            self._handle(step())
        except Exception as exc:
            self.internal_errors += 1
            if peer is not None:
                with contextlib.suppress(Exception):
                    self.on_output(Refused(raw[:4096], f"internal error: {exc!r}", peer, None, arrived_ns=arrived_ns))

    def _handle(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Transmit):
                self._send(out.peer, out.data)
            else:
                self.on_output(out)
        self._schedule()

    def handle(self, outputs: list[Output]) -> None:
        """Send/deliver what a core call outside the wire (a role's `send_mrq`, `reply`) produced."""
        self._handle(outputs)

    # output
    def _send(self, peer: Peer, data: bytes) -> None:
        self.sent += 1
        if self._udp is not None:
            self._udp.sendto(data, peer)
            return
        conn = self._connections.get(peer)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            self._write(conn, data)
            return
        task = asyncio.create_task(self._connect_and_send(peer, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_and_send(self, peer: Peer, data: bytes) -> None:
        conn = await self._connection(peer)
        if conn is None or conn.transport is None:
            self._handle(self.core.peer_failed(peer, time.monotonic_ns()))
            return
        self._write(conn, data)

    def _write(self, conn: _StreamProtocol, data: bytes) -> None:
        """Write, unless the peer has left `MAX_BACKLOG` bytes unread: then reset the connection (its
        requests fail at once through `connection_lost`) rather than hold more."""
        assert conn.transport is not None
        if conn.transport.get_write_buffer_size() + len(data) > MAX_BACKLOG:
            self.backlog_resets += 1
            conn.transport.abort()
            return
        conn.transport.write(data)

    async def _connection(self, peer: Peer) -> _StreamProtocol | None:
        conn = self._connections.get(peer)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn
        task = self._connecting.get(peer)
        if task is None:
            task = asyncio.create_task(self._open_connection(peer))
            self._connecting[peer] = task
            task.add_done_callback(lambda _t: self._connecting.pop(peer, None))
        return await asyncio.shield(task)

    async def _open_connection(self, peer: Peer) -> _StreamProtocol | None:
        loop = asyncio.get_running_loop()
        ssl_ctx = self.client_ssl if self.transport == "tls" else None
        if self.transport == "tls" and ssl_ctx is None:
            return None
        kwargs: dict[str, Any] = {}
        if ssl_ctx is not None:
            kwargs["server_hostname"] = self.server_hostname or peer[0]
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _StreamProtocol(self, peer), peer[0], peer[1], ssl=ssl_ctx, **kwargs),
                10.0,
            )
        except (OSError, TimeoutError, ssl.SSLError):
            return None
        return proto

    def _schedule(self) -> None:
        """Arm one loop timer for the core's next wake-up (timers are data in the core)."""
        wake = self.core.wake_at_ns
        if self._closed or wake == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = wake
        if wake is not None:
            delay = max(0.0, (wake - time.monotonic_ns()) / 1e9)
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = time.monotonic_ns()
        wake = self.core.wake_at_ns
        if wake is not None and wake <= now:
            self._handle(self.core.tick(now))
        else:
            self._schedule()


def parse_hostport(text: str, transport: str = "udp") -> Peer:
    """`host:port`, `[v6]:port` or `host` (the transport's default port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host:
        raise ValueError(f"{text!r}: write HOST:PORT, for example 127.0.0.1:5060")
    if port and not port.isdigit():
        raise ValueError(f"{text!r}: the port must be a number")
    return host, int(port) if port else DEFAULT_PORTS[transport]


# --- the device ----------------------------------------------------------------------------------


class ScaipSendError(Exception):
    """The centre refused the device's MESSAGE (`status`) or never answered it (`status` None)."""

    def __init__(self, ref: str, status: int | None, reason: str) -> None:
        super().__init__(f"mrq {ref}: {reason}")
        self.ref = ref
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ScaipResult:
    """One `<mrq>` exchange as the device saw it; times from `time.monotonic_ns()`.

    `mrs` is None when the centre answered the SIP transaction but sent no `<mrs>` within the wait.
    """

    mrq: Mrq
    status: int
    sent_ns: int
    answered_ns: int
    mrs: Mrs | None = None
    mrs_ns: int | None = None
    carrier: str | None = None
    authenticated: bool = False

    @property
    def sip_round_trip_ns(self) -> int:
        """MESSAGE sent -> final 2xx arrived."""
        return self.answered_ns - self.sent_ns

    @property
    def mrs_round_trip_ns(self) -> int | None:
        """MESSAGE sent -> `<mrs>` arrived (the SCAIP round trip)."""
        return None if self.mrs_ns is None else self.mrs_ns - self.sent_ns


_refs = itertools.count(1)


def new_ref() -> str:
    """A fresh SCAIP reference (16 letters/digits at most: 8 random hex + a counter)."""
    return f"{secrets.token_hex(4)}{next(_refs) % 10**8:x}"[:16]


class ScaipDevice:
    """A SCAIP device over SIP: sends `<mrq>`, waits for the 2xx and for the `<mrs>` with the same ref.

    `target` is the centre's `host:port`; `proxy` an outbound proxy `host:port` to send through instead
    (the Request-URI still names the centre). Over TLS, `ssl_context` is a client context.
    """

    def __init__(
        self,
        target: str,
        *,
        transport: str = "udp",
        cid: str = "1",
        local_host: str = "127.0.0.1",
        local_port: int = 0,
        target_uri: str | None = None,
        proxy: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        credentials: Credentials | None = None,
        timers: Timers | None = None,
        contact: bool = False,
        on_refused: Callable[[bytes, str], None] | None = None,
    ) -> None:
        self.transport = transport.lower()
        self.target = parse_hostport(target, self.transport)
        self.next_hop = parse_hostport(proxy, self.transport) if proxy else self.target
        host, port = self.target
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        self.target_uri = target_uri or f"sip:scaip@{host if ':' not in host else f'[{host}]'}:{port}{suffix}"
        self.cid = cid
        self.credentials = credentials
        self.timers = timers
        self.contact = contact
        self.on_refused = on_refused
        self.wire = SipWire(
            self.transport,
            local_host,
            local_port,
            server_ssl=server_ssl_context,
            client_ssl=ssl_context,
            server_hostname=server_hostname,
        )
        self.core: ScaipCaller | None = None
        self.refused: list[Refused] = []
        self._answers: dict[str, asyncio.Future[MrqAnswered]] = {}
        self._mrs: dict[str, asyncio.Future[MrsArrived]] = {}
        self._early: dict[str, MrsArrived] = {}
        self.unmatched_mrs = 0
        """`<mrs>` that arrived with no send waiting for its ref (early, late, duplicated or for a ref never sent)."""
        self.callback_errors: list[BaseException] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self.heartbeats: list[ScaipResult | BaseException] = []

    @property
    def local(self) -> Local:
        assert self.core is not None, "start() the device first"
        return self.core.local

    async def start(self) -> ScaipDevice:
        def factory(local: Local) -> ScaipCaller:
            return ScaipCaller(
                local,
                endpoint=SipEndpoint(transport=local.transport, timers=self.timers),
                credentials=self.credentials,
                contact=self.contact,
            )

        await self.wire.open(factory, self._on_output, self.cid)
        self.core = self.wire.core  # type: ignore[assignment]
        return self

    async def close(self) -> None:
        await self.stop_heartbeats()
        await self.wire.close()
        for answer in self._answers.values():
            answer.cancel()
        for mrs in self._mrs.values():
            mrs.cancel()

    async def __aenter__(self) -> ScaipDevice:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_output(self, out: Output) -> None:
        if isinstance(out, MrqAnswered):
            fut = self._answers.get(out.ref)
            if fut is not None and not fut.done():
                fut.set_result(out)
        elif isinstance(out, MrqFailed):
            fut = self._answers.get(out.ref)
            if fut is not None and not fut.done():
                fut.set_exception(ScaipSendError(out.ref, out.status, out.reason))
        elif isinstance(out, MrsArrived):
            mfut = self._mrs.get(out.mrs.ref)
            if mfut is not None and not mfut.done():
                mfut.set_result(out)
            else:
                self.unmatched_mrs += 1
                self._early.pop(out.mrs.ref, None)
                self._early[out.mrs.ref] = out
                while len(self._early) > EARLY_MRS:  # refs never sent must not crowd out a real early one
                    del self._early[next(iter(self._early))]
        elif isinstance(out, Refused):
            _keep(self.refused, out)
            if self.on_refused is not None:
                try:
                    self.on_refused(out.raw, out.reason)
                except Exception as exc:  # a user's callback must not stop the device
                    _keep(self.callback_errors, exc)

    def mrq(
        self, *, stc: str | None = "0010", dty: str = "0003", mty: MessageType = MessageType.MESSAGE, **fields: Any
    ) -> Mrq:
        """An `<mrq>` from this device (fresh ref, its cid)."""
        return Mrq(ref=fields.pop("ref", None) or new_ref(), cid=self.cid, dty=dty, mty=mty, stc=stc, **fields)

    async def send(self, mrq: Mrq, *, timeout: float = 40.0, mrs_timeout: float | None = 10.0) -> ScaipResult:
        """Send `mrq`; wait for the final 2xx (or raise `ScaipSendError`) and then up to `mrs_timeout`
        for the `<mrs>` (None: do not wait for one)."""
        if self.core is None:
            raise RuntimeError("start() the device first")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[MrqAnswered] = loop.create_future()
        mrs_fut: asyncio.Future[MrsArrived] = loop.create_future()
        self._answers[mrq.ref] = answer
        self._mrs[mrq.ref] = mrs_fut
        try:
            sent_ns = time.monotonic_ns()
            self.wire.handle(self.core.send_mrq(mrq, self.target_uri, self.next_hop, sent_ns))
            done = await asyncio.wait_for(answer, timeout)
            early = self._early.pop(mrq.ref, None)
            if early is not None and not mrs_fut.done():
                mrs_fut.set_result(early)
            got: MrsArrived | None = None
            if mrs_timeout is not None:
                with contextlib.suppress(TimeoutError):
                    got = await asyncio.wait_for(asyncio.shield(mrs_fut), mrs_timeout)
            elif mrs_fut.done():
                got = mrs_fut.result()
            return ScaipResult(
                mrq,
                done.status,
                sent_ns,
                done.arrived_ns,
                got.mrs if got else None,
                got.arrived_ns if got else None,
                got.carrier if got else None,
                done.authenticated,
            )
        finally:
            self._answers.pop(mrq.ref, None)
            self._mrs.pop(mrq.ref, None)

    def start_heartbeats(self, interval_s: float, *, dty: str = "0003", count: int | None = None) -> asyncio.Task[None]:
        """Send `mty=PI` every `interval_s` (results, or the exception, appended to `heartbeats`)."""

        async def beat() -> None:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            sent = 0
            while count is None or sent < count:
                try:
                    self.heartbeats.append(
                        await self.send(self.mrq(mty=MessageType.HEARTBEAT, stc=None, dty=dty), mrs_timeout=interval_s)
                    )
                except (ScaipSendError, TimeoutError) as exc:
                    self.heartbeats.append(exc)
                sent += 1
                next_at += interval_s
                await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing, not synchronisation

        self._heartbeat = asyncio.create_task(beat(), name=f"scaip-heartbeat-{self.cid}")
        return self._heartbeat

    async def stop_heartbeats(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None


# --- the response centre -------------------------------------------------------------------------

OnMessage = Callable[[Mrq, int, Peer], "Mrs | Awaitable[Mrs | None] | None"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the receiver took in and what it answered (for the `vtlab receive scaip` JSON lines)."""

    mrq: Mrq
    peer: Peer
    arrived_ns: int
    reply: Mrs | None
    replied_ns: int | None


class ScaipReceiver:
    """A SCAIP response centre over SIP.

    Answers each valid `<mrq>` 200 OK, calls `on_message(mrq, arrived_ns, peer)` (sync or async) and
    sends the `<mrs>` it returns (None: send none, as a centre that loses answers would). Default: snu 0.
    Refused input goes to `on_refused(raw, reason)`; the receiver keeps serving.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        transport: str = "udp",
        on_message: OnMessage | None = None,
        on_refused: Callable[[bytes, str], None] | None = None,
        on_arrival: Callable[[Arrival], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        user: str = "scaip",
        mrs_in_response: bool = False,
        auth: tuple[str, Callable[[str], str | None]] | None = None,
        timers: Timers | None = None,
    ) -> None:
        self.transport = transport.lower()
        self.on_message = on_message
        self.on_refused = on_refused
        self.on_arrival = on_arrival
        self.user = user
        self.mrs_in_response = mrs_in_response
        self.auth = auth
        self.timers = timers
        self.wire = SipWire(self.transport, host, port, server_ssl=ssl_context, client_ssl=client_ssl_context)
        self.core: ScaipResponder | None = None
        self.arrivals: list[Arrival] = []
        self.refused: list[Refused] = []
        self.delivered: list[MrsDelivered] = []
        self.callback_errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Condition()

    @property
    def port(self) -> int:
        return self.wire.port

    @property
    def address(self) -> str:
        return f"{self.wire.host}:{self.wire.port}"

    async def start(self) -> ScaipReceiver:
        def factory(local: Local) -> ScaipResponder:
            auth = None
            if self.auth is not None:
                realm, password_for = self.auth
                auth = (realm, password_for, lambda: secrets.token_hex(16))
            return ScaipResponder(
                local,
                endpoint=SipEndpoint(transport=local.transport, timers=self.timers),
                mrs_in_response=self.mrs_in_response,
                auth=auth,
            )

        await self.wire.open(factory, self._on_output, self.user)
        self.core = self.wire.core  # type: ignore[assignment]
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wire.close()

    async def __aenter__(self) -> ScaipReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_output(self, out: Output) -> None:
        if isinstance(out, MrqArrived):
            self._take(out)
        elif isinstance(out, Refused):
            _keep(self.refused, out)
            if self.on_refused is not None:
                try:
                    self.on_refused(out.raw, out.reason)
                except Exception as exc:  # a user's callback must not stop the receiver
                    _keep(self.callback_errors, exc)
            self._notify()
        elif isinstance(out, MrsDelivered):
            _keep(self.delivered, out)
            self._notify()

    def _take(self, arrived: MrqArrived) -> None:
        """Call `on_message` at once, in the callback that read the request (no turn of the loop between
        the arrival and the harness's callback); only an awaitable answer waits in a task."""
        try:
            if self.on_message is None:
                result: Mrs | Awaitable[Mrs | None] | None = scaip.reply_for(arrived.mrq)
            else:
                result = self.on_message(arrived.mrq, arrived.arrived_ns, arrived.peer)
        except Exception as exc:  # the callback is the harness's own: record, answer "not treated"
            self._answer(arrived, self._callback_failed(arrived, exc))
            return
        if not inspect.isawaitable(result):
            self._answer(arrived, result)
            return
        task = asyncio.ensure_future(self._answer_later(arrived, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_later(self, arrived: MrqArrived, result: Awaitable[Mrs | None]) -> None:
        try:
            mrs = await result
        except Exception as exc:
            mrs = self._callback_failed(arrived, exc)
        self._answer(arrived, mrs)

    def _callback_failed(self, arrived: MrqArrived, exc: Exception) -> Mrs:
        _keep(self.callback_errors, exc)
        return scaip.reply_for(arrived.mrq, StatusNumber.NOT_TREATED, ste="receiver callback failed")

    def _answer(self, arrived: MrqArrived, mrs: Mrs | None) -> None:
        replied_ns: int | None = None
        if mrs is not None and self.core is not None:
            replied_ns = time.monotonic_ns()
            self.wire.handle(self.core.reply(arrived, mrs, replied_ns))
        arrival = Arrival(arrived.mrq, arrived.peer, arrived.arrived_ns, mrs, replied_ns)
        _keep(self.arrivals, arrival)
        if self.on_arrival is not None:
            try:
                self.on_arrival(arrival)
            except Exception as exc:
                _keep(self.callback_errors, exc)
        self._notify()

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._arrived:
                self._arrived.notify_all()

        task = asyncio.create_task(notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_for(self, predicate: Callable[[ScaipReceiver], bool], timeout: float) -> None:
        """Wait until `predicate(self)` holds (checked at each arrival or refusal), or raise TimeoutError."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: predicate(self))
