"""A fleet device's DC-09 or SCAIP connection under gevent, driving the shared sans-I/O codecs.

The load path's devices speak the protocols the functional path speaks, with the same codecs
(`harness.protocols.dc09`, `harness.protocols.scaip`, `harness.protocols.scaip_sip` over
`harness.protocols.sip`); only the I/O differs: a gevent socket and one reading greenlet per device
instead of the asyncio transports, so thousands of devices share a locust process without a thread each.

- `Dc09Line`: an alarm transmitter on a kept TCP connection (or UDP), its own account and sequence
  numbers, optional AES. Sending never waits for the receiver: the ACK is awaited by the reading greenlet
  and paired by sequence (`TransmitterState`); a NAK is answered by a restamped resend, silence by a
  resend after `timeout_s` (at most `retries` times), as DC-09 asks of a transmitter.
- `ScaipLine`: a SCAIP device, `<mrq>` in SIP MESSAGE over UDP, TCP or TLS (`ScaipCaller`); the SIP
  transaction timers are data in the core, armed here as one gevent timer.

Both report each alarm's answer through `on_reply(key, ok, t_ns, detail)` (the key the caller gave) and
connection changes through `on_state(state, detail)`. Reconnects use the MQTT fleet's jittered, doubling
backoff, so the generator never causes the reconnect storm it would then measure.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import gevent

from harness.protocols.base import ProtocolError
from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, DUH, NAK, DC09Message, FrameSplitter, Junk, TransmitterState
from harness.protocols.scaip import MessageType, Mrq, StatusNumber
from harness.protocols.scaip_sip import Local, MrqAnswered, MrqFailed, MrsArrived, Output, Refused, ScaipCaller
from harness.protocols.sip.endpoint import SipEndpoint
from harness.protocols.sip.events import Transmit
from harness.protocols.sip.message import SipParseError, StreamReader
from harness.transports.sip import new_ref

OnReply = Callable[[str, bool, int, dict[str, Any]], None]
OnState = Callable[[str, str], None]
READ = 65536
NS = 1_000_000_000
MAX_BACKLOG = 1024 * 1024
"""Bytes a connection may hold unwritten. A platform that stops reading gets nothing more (the protocol's own
timeout then reports the alarms), so a generator with thousands of devices never grows without bound."""
WRITE_STALL_S = 30.0
"""A write that moves no byte for this long means the platform stopped reading: the connection is dropped
and reopened, as for any other loss."""


def _utc() -> datetime:
    return datetime.now(UTC)


class LineError(Exception):
    """A connection could not be opened (refused, timed out, TLS failed)."""


class _Line:
    """What both protocols share: a socket, its reading greenlet, a write buffer and reconnects."""

    kind = "tcp"

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        on_reply: OnReply,
        on_state: OnState,
        rng: random.Random | None = None,
        connect_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.peer = (host, port)
        self.on_reply = on_reply
        self.on_state = on_state
        self.rng = rng or random.Random()
        self.connect_timeout_s = connect_timeout_s
        self.ssl_context = ssl_context
        self.sock: Any = None
        self.connected = False
        self.closed = False
        self._out = bytearray()
        self._writer: Any = None
        self._reader: Any = None
        self.dropped_bytes = 0
        """Bytes not queued because the platform left `MAX_BACKLOG` unread."""

    # --- connection ---------------------------------------------------------------------------
    def _open(self) -> None:
        if self.kind == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1" if self.peer[0] in ("127.0.0.1", "localhost") else "0.0.0.0", 0))
            sock.connect(self.peer)  # only the platform's datagrams reach us
        else:
            try:
                sock = socket.create_connection(self.peer, timeout=self.connect_timeout_s)
            except OSError as exc:
                raise LineError(f"{self.name}: cannot connect to {self.peer[0]}:{self.peer[1]}: {exc}") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.peer[0])
                except (OSError, ssl.SSLError) as exc:
                    sock.close()
                    raise LineError(f"{self.name}: TLS with {self.peer[0]}:{self.peer[1]} failed: {exc}") from exc
            sock.settimeout(None)
        self.sock = sock
        self.connected = True
        self._opened(sock)
        self._reader = gevent.spawn(self._read_loop, sock)

    def connect(self) -> None:
        """Open the connection (raises LineError); later losses reconnect by themselves."""
        self._open()

    def _opened(self, sock: Any) -> None:
        """Hook: the socket is open (before anything is read)."""

    def close(self) -> None:
        self.closed = True
        self.connected = False
        for g in (self._reader, self._writer):
            if g is not None:
                g.kill(block=False)
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()

    def write(self, data: bytes) -> None:
        """Queue bytes; a greenlet writes them, so a slow peer never blocks the device's schedule."""
        if not self.connected:
            return  # resent after the reconnect by the protocol's own pending list
        if self.kind == "udp":
            try:
                self.sock.send(data)
            except OSError as exc:
                self.on_state("error", f"{self.name}: datagram not sent: {exc}")
            return
        if len(self._out) + len(data) > MAX_BACKLOG:
            if not self.dropped_bytes:
                self.on_state("error", f"{self.name}: the platform reads nothing: {len(self._out)} bytes wait")
            self.dropped_bytes += len(data)
            return  # the alarm stays in flight; its timeout reports it
        self._out += data
        if self._writer is None:
            self._writer = gevent.spawn(self._drain, self.sock)

    def _drain(self, sock: Any) -> None:
        try:
            while self._out and sock is self.sock:
                data = bytes(self._out)
                self._out.clear()
                view = memoryview(data)
                while view:  # each send must move bytes within WRITE_STALL_S (sendall alone waits forever)
                    with gevent.Timeout(WRITE_STALL_S, TimeoutError(f"no byte written for {WRITE_STALL_S:g} s")):
                        sent = sock.send(view)
                    view = view[sent:]
        except (OSError, TimeoutError) as exc:
            self._lost(sock, f"write failed: {exc}")
        finally:
            self._writer = None

    def _read_loop(self, sock: Any) -> None:
        while True:
            try:
                data = sock.recv(READ)
            except OSError as exc:
                if self.kind == "udp":  # e.g. ECONNREFUSED from an ICMP error: the next send tries again
                    gevent.sleep(0.1)
                    continue
                self._lost(sock, f"read failed: {exc}")
                return
            arrived = time.monotonic_ns()
            if not data:
                self._lost(sock, "the platform closed the connection")
                return
            try:
                self._received(data, arrived)
            except Exception as exc:  # what the platform sends never stops the device
                self.on_state("error", f"{self.name}: {type(exc).__name__}: {exc}")

    def _received(self, data: bytes, arrived_ns: int) -> None:
        raise NotImplementedError

    def _lost(self, sock: Any, why: str) -> None:
        if sock is not self.sock or self.closed or not self.connected:
            return  # another greenlet already saw this connection go: one reconnect, not two
        self.connected = False
        self._out.clear()
        with contextlib.suppress(OSError):
            sock.close()
        self.on_state("lost", f"{self.name}: {why}")
        gevent.spawn(self._reconnect)

    def _reconnect(self) -> None:
        delay = 0.5 + self.rng.random()
        while not self.closed:
            gevent.sleep(delay)
            try:
                self._open()
            except (LineError, OSError) as exc:
                delay = min(delay * 2, 30.0) * (0.75 + 0.5 * self.rng.random())
                self.on_state("retry", f"{self.name}: {exc}")
                continue
            self.on_state("reconnected", f"{self.name}: connected again")
            self._resend()
            return

    def _resend(self) -> None:
        """Hook: send again what was in flight when the connection dropped."""


class Dc09Line(_Line):
    """A DC-09 alarm transmitter (see the module docstring)."""

    def __init__(
        self,
        name: str,
        account: str,
        host: str,
        port: int,
        *,
        protocol: str = "tcp",
        key: bytes | None = None,
        receiver: str | None = "0",
        line: str | None = "0",
        timeout_s: float = 5.0,
        retries: int = 2,
        max_naks: int = 2,
        on_reply: OnReply,
        on_state: OnState,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name, host, port, on_reply=on_reply, on_state=on_state, rng=rng)
        self.kind = protocol
        self.state = TransmitterState(account, key, receiver=receiver, line=line, rng=rng)
        self.timeout_ns = int(timeout_s * NS)
        self.retries = retries
        self.max_naks = max_naks
        self._splitter = FrameSplitter()
        self._flight: dict[int, list[Any]] = {}  # sequence -> [key, sent_ns, attempts, naks]
        self._watch: Any = None

    def _opened(self, sock: Any) -> None:
        self._splitter = FrameSplitter()
        if self._watch is None:
            self._watch = gevent.spawn(self._watchdog)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.kill(block=False)
        super().close()

    def send_alarm(self, code: str, qualifier: str, zone: str, key: str) -> dict[str, Any]:
        """One ADM-CID event (new event 1, restore 3) with this alarm's zone; returns the evidence fields."""
        event = ContactIdEvent(self.state.account, int(qualifier), code, "01", zone)
        data = encode_adm_cid(event)
        msg = self.state.message(ADM_CID, data, _utc())
        self._flight[msg.sequence] = [key, time.monotonic_ns(), 1, 0]
        self.write(self.state.encode(msg))
        return {"account": self.state.account, "adm_cid": data, "sequence": msg.sequence}

    def heartbeat(self) -> None:
        """A NULL link test: DC-09's supervision message."""
        msg = self.state.poll(_utc())
        self._flight[msg.sequence] = ["", time.monotonic_ns(), 1, 0]
        self.write(self.state.encode(msg))

    def _received(self, data: bytes, arrived_ns: int) -> None:
        for item in self._splitter.feed(data):
            if isinstance(item, Junk):
                self.on_state("junk", f"{self.name}: {item.reason}")
                continue
            try:
                result = self.state.on_reply(item, _utc())
            except ProtocolError as exc:
                self.on_state("junk", f"{self.name}: unreadable reply: {exc.reason}")
                continue
            msg = result.message
            if msg is None:
                continue  # a late reply to something already given up
            if result.reply.kind == NAK:  # the receiver's clock: resend with the corrected timestamp
                self._nak(msg, arrived_ns)
                continue
            entry = self._flight.pop(msg.sequence, None)
            if entry is None or not entry[0]:
                continue  # a NULL link test's answer
            ok = result.reply.kind not in (DUH,)
            self.on_reply(entry[0], ok, arrived_ns, {"reply": result.reply.kind, "attempts": entry[2]})

    def _nak(self, msg: DC09Message, arrived_ns: int) -> None:
        """A NAK is answered by a corrected resend, `max_naks` times per alarm; a receiver that NAKs every
        frame then has the alarm given up, not a resend loop at wire speed."""
        entry = self._flight.get(msg.sequence)
        if entry is None:
            return
        entry[3] += 1
        if entry[3] > self.max_naks:
            self.state.forget(msg)
            self._flight.pop(msg.sequence, None)
            if entry[0]:
                self.on_reply(entry[0], False, arrived_ns, {"reply": NAK, "attempts": entry[2], "naks": entry[3]})
            return
        self._send_again(msg)

    def _send_again(self, msg: DC09Message) -> None:
        again = self.state.restamp(msg, _utc())
        entry = self._flight.get(again.sequence)
        if entry is not None:
            entry[1] = time.monotonic_ns()
            entry[2] += 1
        self.write(self.state.encode(again))

    def _watchdog(self) -> None:
        """Silence for `timeout_s` is answered by a resend; after `retries` resends the alarm is given up."""
        while not self.closed:
            gevent.sleep(min(1.0, self.timeout_ns / NS / 2))
            if not self.connected:
                continue
            now = time.monotonic_ns()
            for msg in self.state.pending():
                entry = self._flight.get(msg.sequence)
                if entry is None or now - entry[1] < self.timeout_ns:
                    continue
                if entry[2] > self.retries:
                    self.state.forget(msg)
                    self._flight.pop(msg.sequence, None)
                    if entry[0]:
                        self.on_reply(entry[0], False, now, {"reply": None, "attempts": entry[2]})
                    continue
                self._send_again(msg)

    def _resend(self) -> None:
        for msg in self.state.pending():
            self._send_again(msg)


class ScaipLine(_Line):
    """A SCAIP device over SIP (see the module docstring)."""

    def __init__(
        self,
        name: str,
        cid: str,
        host: str,
        port: int,
        *,
        transport: str = "udp",
        ssl_context: ssl.SSLContext | None = None,
        on_reply: OnReply,
        on_state: OnState,
        rng: random.Random | None = None,
        answer_timeout_s: float = 45.0,
    ) -> None:
        super().__init__(name, host, port, on_reply=on_reply, on_state=on_state, rng=rng, ssl_context=ssl_context)
        self.answer_timeout_ns = int(answer_timeout_s * NS)
        """An alarm whose `<mrs>` has not come this long after sending is reported unanswered (a 200 OK with
        no `<mrs>` after it must not keep the alarm, and its memory, forever). Past Timer F (32 s)."""
        self._sent_ns: dict[str, int] = {}
        self._watch: Any = None
        self.kind = "udp" if transport == "udp" else "tcp"
        self.transport = transport
        self.cid = cid
        suffix = "" if transport == "udp" else f";transport={transport}"
        self.target_uri = f"sip:scaip@{host}:{port}{suffix}"
        self.core: ScaipCaller | None = None
        self._stream = StreamReader()
        self._refs: dict[str, str] = {}  # ref -> key, until the <mrs> (or the failure) comes
        self._timer: Any = None
        self._timer_at: int | None = None

    def _opened(self, sock: Any) -> None:
        host, port = sock.getsockname()[:2]
        self.core = ScaipCaller(
            Local(host, port, self.transport.upper(), self.cid),
            endpoint=SipEndpoint(transport=self.transport.upper()),
        )
        self._stream = StreamReader()
        if self._watch is None:
            self._watch = gevent.spawn(self._watchdog)

    def close(self) -> None:
        for g in (self._timer, self._watch):
            if g is not None:
                g.kill(block=False)
        super().close()

    def send_alarm(self, mrq: Mrq, key: str) -> dict[str, Any]:
        self._refs[mrq.ref] = key
        self._sent_ns[mrq.ref] = time.monotonic_ns()
        self._send(mrq)
        return {"ref": mrq.ref, "cid": mrq.cid, "did": mrq.did, "dty": mrq.dty, "stc": mrq.stc, "dco": mrq.dco}

    def heartbeat(self, dty: str, did: str | None) -> None:
        self._send(Mrq(ref=new_ref(), cid=self.cid, dty=dty, did=did, mty=MessageType.HEARTBEAT))

    def _send(self, mrq: Mrq) -> None:
        if self.core is None or not self.connected:
            key = self._answered(mrq.ref)
            if key is not None:  # never sent: the platform cannot have it
                self.on_reply(key, False, time.monotonic_ns(), {"error": "not connected"})
            return
        self._handle(self.core.send_mrq(mrq, self.target_uri, self.peer, time.monotonic_ns()))

    def _handle(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Transmit):
                self.write(out.data)
            elif isinstance(out, MrsArrived):
                key = self._answered(out.mrs.ref)
                if key is not None:
                    self.on_reply(key, out.mrs.snu is StatusNumber.OK, out.arrived_ns, {"snu": int(out.mrs.snu)})
            elif isinstance(out, MrqFailed):
                key = self._answered(out.ref)
                if key is not None:
                    self.on_reply(key, False, time.monotonic_ns(), {"sip_status": out.status, "error": out.reason})
            elif isinstance(out, Refused):
                self.on_state("junk", f"{self.name}: {out.reason}")
            elif isinstance(out, MrqAnswered):
                pass  # the 2xx; the <mrs> is the answer that counts
        self._arm()

    def _arm(self) -> None:
        """One timer for the core's next wake-up (the SIP timers are data in the core)."""
        wake = self.core.wake_at_ns if self.core is not None else None
        if wake == self._timer_at:
            return
        if self._timer is not None:
            self._timer.kill(block=False)
            self._timer = None
        self._timer_at = wake
        if wake is not None and not self.closed:
            self._timer = gevent.spawn_later(max(0.0, (wake - time.monotonic_ns()) / NS), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.core is not None:
            self._handle(self.core.tick(time.monotonic_ns()))

    def _received(self, data: bytes, arrived_ns: int) -> None:
        core = self.core
        if core is None:
            return
        if self.kind == "udp":
            self._handle(core.receive_datagram(data, self.peer, arrived_ns))
            return
        self._stream.feed(data)
        while True:
            try:
                msg = self._stream.next_message()
            except SipParseError as exc:
                self._handle(core.refuse_frame(data, exc, self.peer, arrived_ns))
                self._lost(self.sock, f"SIP framing broken: {exc.reason}")
                return
            if msg is None:
                return
            self._handle(core.receive_message(msg, self.peer, arrived_ns))

    def _answered(self, ref: str) -> str | None:
        self._sent_ns.pop(ref, None)
        return self._refs.pop(ref, None)

    def _watchdog(self) -> None:
        """Alarms with no `<mrs>` within `answer_timeout_s` are reported unanswered and forgotten."""
        while not self.closed:
            gevent.sleep(min(1.0, self.answer_timeout_ns / NS / 4))
            now = time.monotonic_ns()
            for ref, sent in list(self._sent_ns.items()):
                if now - sent >= self.answer_timeout_ns:
                    key = self._answered(ref)
                    if key is not None:
                        wait = self.answer_timeout_ns / NS
                        self.on_reply(key, False, now, {"error": f"no <mrs> within {wait:g} s"})

    def _resend(self) -> None:
        """Alarms in flight on a dropped stream: their transactions failed; the core reports them."""
        for ref in list(self._refs):
            key = self._answered(ref)
            if key is not None:
                self.on_reply(key, False, time.monotonic_ns(), {"error": "connection lost before the <mrs>"})


__all__ = ["Dc09Line", "LineError", "ScaipLine"]
