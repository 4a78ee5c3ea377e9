"""Response centres that receive over SIA DC-09 or SCAIP, in a load run.

Real deliveries hand alarms to alarm receiving centres over DC-09 (ADM-CID or SIA-DCS) or SCAIP, so a
load run can observe that leg too (`load.centres: dc09 | scaip`). Two halves:

- `open_listeners` (in `vtlab load`, before the target starts): one listening socket per such centre,
  bound where the probe's `listen` says (default 127.0.0.1, a free port). Its address goes to the lab
  (`listeners`, as the functional test bed's `prepare()` hands it), so the centre listens before the lab
  is told to deliver there; the socket itself is inherited by the locust processes (`pass_fds`).
- `Dc09Centre` / `ScaipCentre` (in the locust process that probes): gevent receivers on that socket that
  drive the functional path's sans-I/O rules (`harness.protocols.dc09.ReceiverState` over a
  `FrameSplitter`; `harness.protocols.scaip_sip.ScaipResponder`), answer as the protocol says (ACK, NAK or
  DUH; 200 OK and the `<mrs>`), stamp each arrival on the greenlet that read it, and name it as the
  functional centre links do (`harness.links.dc09.key_of`; account or `cid/did` -> device; SIA-DCS read as
  the Contact ID event it stands for). The arrival is handed to the node as a `RoutedAlarm`, so the load
  path's content-key correlation, routing and content checks and hand-over between workers stay one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.errors import InputError
from harness.labfile import Lab

CENTRE_VIAS = ("dc09", "scaip")
READ = 65536
NS = 1_000_000_000
SEND_STALL_S = 10.0
"""An answer that moves no byte for this long means the platform stopped reading: its connection is closed
(the platform's own retry is the recovery) instead of holding the serving greenlet forever."""


@dataclass(slots=True)
class Listener:
    """A centre's listening socket, opened by `vtlab load` and inherited by the locust processes."""

    centre: str
    probe: str
    via: str
    transport: str  # tcp | udp
    sock: socket.socket

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"


def _listen(via: str, transport: str, where: str, place: Any) -> socket.socket:
    host, _, port = where.rpartition(":")
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, kind)
    try:
        if transport == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), int(port)))
        if transport == "tcp":
            sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise InputError(
            f"the {via} centre cannot listen on {where}: {exc}",
            place=place,
            fix=f"set the probe's {via}.listen to a free HOST:PORT (port 0: any free port)",
        ) from None
    return sock


def centre_probes(lab: Lab, via: str) -> dict[str, Any]:
    """The lab file's response-centre probes that receive over `via` (mqtt, dc09, scaip), by name."""
    return {
        name: p
        for name, p in lab.spec.probes.items()
        if p.kind == "response_centre" and p.centre is not None and p.via == via
    }


def open_listeners(lab: Lab, via: str) -> list[Listener]:
    """Listening sockets for the lab file's centres that receive over `via` (dc09 or scaip), one per centre."""
    out: list[Listener] = []
    if via not in CENTRE_VIAS:
        return out
    seen: set[str] = set()
    for name, probe in centre_probes(lab, via).items():
        if probe.centre in seen:
            continue
        seen.add(probe.centre)
        place = lab.src.place("probes", name)
        settings = probe.dc09 if via == "dc09" else probe.scaip
        transport = "tcp"  # the reference lab's DC-09 line to a centre is TCP
        if via == "scaip":
            transport = settings.transport if settings is not None else "udp"
            if transport == "tls":
                for s in out:
                    s.sock.close()
                raise InputError(
                    f"probe `{name}`: a SCAIP centre on SIP/TLS is not part of the load path",
                    place=place,
                    fix="give the probe `scaip: {transport: udp}` or tcp for load runs",
                )
        try:
            sock = _listen(via, transport, (settings.listen if settings else None) or "127.0.0.1:0", place)
        except InputError:
            for s in out:
                s.sock.close()
            raise
        sock.set_inheritable(True)
        out.append(Listener(probe.centre, name, via, transport, sock))
    return out


def listener_addresses(listening: list[Listener]) -> dict[str, Any]:
    """What the target is told (harness.run.target `listeners`): where each centre listens."""
    return {"centres": {s.centre: {"via": s.via, "address": s.address} for s in listening}, "records": {}}


# --- the locust side (gevent) -----------------------------------------------------------------------

OnAlarm = Callable[[str, str, Any, int, str], None]  # probe, centre, RoutedAlarm, arrived_ns, where
OnState = Callable[[str, str], None]  # kind (finding, load), text


def _utc() -> datetime:
    return datetime.now(UTC)


class _Centre:
    """A listening socket served by greenlets: accept (TCP) or read datagrams (UDP)."""

    def __init__(self, spec: dict[str, Any], on_alarm: OnAlarm, on_state: OnState) -> None:
        self.spec = spec
        self.centre: str = spec["centre"]
        self.probe: str = spec["probe"]
        self.transport: str = spec["transport"]
        self.on_alarm = on_alarm
        self.on_state = on_state
        self.sock = socket.socket(fileno=int(spec["fd"]))
        self.users: dict[str, str] = spec["users"]  # device -> its user, for the routing check
        self.counts: dict[str, int] = {}
        self._greenlets: set[Any] = set()
        self._conns: dict[Any, Any] = {}

    def count(self, what: str) -> int:
        self.counts[what] = self.counts.get(what, 0) + 1
        return self.counts[what]

    def refuse(self, where: str, reason: str) -> None:
        if self.count("refused") <= 20:
            self.on_state("finding", f"{self.probe} ({self.spec['via']} centre) refused what {where} sent: {reason}")

    def start(self) -> None:
        import gevent

        loop = self._accept if self.transport == "tcp" else self._datagrams
        self._spawn(gevent.spawn(loop))

    def _spawn(self, greenlet: Any) -> None:
        """Keep a greenlet until it ends (a platform that reconnects all day leaves no dead ones behind)."""
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)

    def close(self) -> None:
        for g in list(self._greenlets):
            g.kill(block=False)
        for conn in list(self._conns.values()):
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        import gevent

        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError as exc:
                self.on_state("finding", f"{self.probe}: accept failed: {exc}")
                gevent.sleep(0.1)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns[peer[:2]] = conn
            self._spawn(gevent.spawn(self._serve, conn, peer[:2]))

    def _serve(self, conn: Any, peer: tuple[str, int]) -> None:
        self.opened(peer)
        try:
            while True:
                try:
                    data = conn.recv(READ)
                except OSError:
                    return
                arrived = time.monotonic_ns()  # stamped on the greenlet that read the bytes
                if not data:
                    return
                try:
                    self.stream(data, arrived, peer, conn)
                except Exception as exc:  # what the platform sends never stops the centre
                    self.refuse(f"{peer[0]}:{peer[1]}", f"{type(exc).__name__}: {exc}")
        finally:
            if self._conns.get(peer) is conn:
                del self._conns[peer]
                self.closed(peer)
            with contextlib.suppress(OSError):
                conn.close()

    def sendall(self, conn: Any, data: bytes) -> None:
        """Write an answer; a platform that reads nothing for `SEND_STALL_S` has its connection closed."""
        import gevent

        view = memoryview(data)
        while view:
            try:
                with gevent.Timeout(SEND_STALL_S, TimeoutError(f"it read nothing for {SEND_STALL_S:g} s")):
                    sent = conn.send(view)
            except TimeoutError:
                self.count("send_stalled")
                with contextlib.suppress(OSError):
                    conn.close()  # a shutdown alone would leave Linux queueing what the platform still sends
                raise OSError(f"the platform stopped reading: connection closed after {SEND_STALL_S:g} s") from None
            view = view[sent:]

    def _datagrams(self) -> None:
        import gevent

        while True:
            try:
                data, peer = self.sock.recvfrom(READ)
            except OSError:
                gevent.sleep(0.01)  # e.g. an ICMP error reported on the socket: never a busy loop
                continue
            arrived = time.monotonic_ns()
            try:
                self.datagram(data, arrived, peer[:2])
            except Exception as exc:
                self.refuse(f"{peer[0]}:{peer[1]}", f"{type(exc).__name__}: {exc}")

    def opened(self, peer: tuple[str, int]) -> None:
        """Hook: a TCP connection was accepted."""

    def closed(self, peer: tuple[str, int]) -> None:
        """Hook: a TCP connection ended (what was kept for it goes)."""

    def handover(self, device: str, code: str, qualifier: str, zone: str, arrived_ns: int, where: str) -> None:
        """The arrival, named as the functional centre links name it, to the node's correlation."""
        from harness.protocols.wire_json import RoutedAlarm

        alarm = RoutedAlarm(
            cid=f"{self.spec['via']}:{device}:{code}:{zone}",
            device=device,
            user=self.users.get(device),
            code=code,
            qualifier=qualifier,
            centre=self.centre,
            zone=zone,
        )
        self.on_alarm(self.probe, self.centre, alarm, arrived_ns, where)

    def stream(self, data: bytes, arrived_ns: int, peer: tuple[str, int], conn: Any) -> None:
        raise NotImplementedError

    def datagram(self, data: bytes, arrived_ns: int, peer: tuple[str, int]) -> None:
        raise NotImplementedError


class Dc09Centre(_Centre):
    """An alarm receiving centre on SIA DC-09 (the functional `Dc09CentreLink`'s rules, on gevent)."""

    def __init__(self, spec: dict[str, Any], on_alarm: OnAlarm, on_state: OnState) -> None:
        from harness.protocols.dc09 import Account, ReceiverPolicy, ReceiverState

        super().__init__(spec, on_alarm, on_state)
        self.accounts: dict[str, str] = {a.upper(): d for a, d in spec["accounts"].items()}
        key = _dc09_key(spec)
        self.state = ReceiverState([Account(a, key) for a in self.accounts], ReceiverPolicy())
        self.sia = SimpleNamespace(sia_codes=dict(spec.get("sia_codes") or {}))  # what _as_contact_id reads
        self._splitters: dict[tuple[str, int], Any] = {}

    def opened(self, peer: tuple[str, int]) -> None:
        from harness.protocols.dc09 import FrameSplitter

        self._splitters[peer] = FrameSplitter()

    def closed(self, peer: tuple[str, int]) -> None:
        splitter = self._splitters.pop(peer, None)
        for junk in splitter.close() if splitter is not None else ():
            self.refuse(f"{peer[0]}:{peer[1]}", junk.reason)

    def stream(self, data: bytes, arrived_ns: int, peer: tuple[str, int], conn: Any) -> None:
        from harness.protocols.dc09 import Junk

        for item in self._splitters[peer].feed(data):
            if isinstance(item, Junk):
                self.refuse(f"{peer[0]}:{peer[1]}", item.reason)
                continue
            self.frame(item, arrived_ns, peer, lambda reply: self.sendall(conn, reply))

    def datagram(self, data: bytes, arrived_ns: int, peer: tuple[str, int]) -> None:
        self.frame(data, arrived_ns, peer, lambda reply: self.sock.sendto(reply, peer))

    def frame(self, raw: bytes, arrived_ns: int, peer: tuple[str, int], answer: Callable[[bytes], Any]) -> None:
        """Decide, answer at once (the platform's line waits for it), then name the alarm."""
        from harness.links.dc09 import Dc09CentreLink
        from harness.protocols.base import ProtocolError
        from harness.protocols.contact_id import ContactIdEvent
        from harness.protocols.sia_dcs import SiaData

        where = f"dc09 {peer[0]}:{peer[1]}"
        self.count("frames")
        try:
            decision = self.state.receive(raw, _utc())
        except ProtocolError as exc:
            self.refuse(where, exc.reason)  # no reply: the transmitter's timeout is the recovery
            return
        try:
            answer(decision.reply_bytes)
        except OSError as exc:
            if self.count("reply_unsent") <= 20:  # a dead connection fails every reply after it: say it once
                self.on_state("finding", f"{self.probe}: the DC-09 reply to {where} was not sent: {exc}")
        content = decision.content
        if decision.accepted and isinstance(content, SiaData):
            sia, content = content, Dc09CentreLink._as_contact_id(self.sia, content, decision)  # type: ignore[arg-type]
            if content is None:
                self.refuse(where, f"SIA-DCS event `{sia.first.code}` has no Contact ID code (dc09.sia_codes)")
                return
        if not decision.accepted or not isinstance(content, ContactIdEvent):
            if decision.message is not None and decision.message.token != "NULL":
                self.refuse(where, f"{decision.outcome}: {decision.reason}")
            else:
                self.count("link_tests")
            return
        if decision.duplicate:
            self.count("duplicates")
        account = (content.account or (decision.message.account if decision.message else "") or "").upper()
        device = self.accounts.get(account)
        self.handover(
            device or f"account {account}", content.code, str(content.qualifier), content.zone, arrived_ns, where
        )


class ScaipCentre(_Centre):
    """A response centre on SCAIP (the functional `ScaipCentreLink`'s rules, on gevent): answers each
    MESSAGE's transaction and sends the `<mrs>` (snu 0) as the `ScaipResponder` core says."""

    def __init__(self, spec: dict[str, Any], on_alarm: OnAlarm, on_state: OnState) -> None:
        from harness.protocols.scaip_sip import Local, ScaipResponder
        from harness.protocols.sip.endpoint import SipEndpoint

        super().__init__(spec, on_alarm, on_state)
        self.devices: dict[str, str] = dict(spec["devices"])  # "cid/did" -> device
        self.codes: dict[str, str] = dict(spec.get("stc_codes") or {})  # the fleet model's stc -> Contact ID code
        self.raised: dict[str, str] = dict(spec.get("raised") or {})
        host, port = self.sock.getsockname()[:2]
        t = self.transport.upper()
        self.core = ScaipResponder(Local(host, port, t, "scaip"), endpoint=SipEndpoint(transport=t))
        self._readers: dict[tuple[str, int], Any] = {}
        self._timer: Any = None
        self._timer_at: int | None = None

    def opened(self, peer: tuple[str, int]) -> None:
        from harness.protocols.sip.message import StreamReader

        self._readers[peer] = StreamReader()

    def closed(self, peer: tuple[str, int]) -> None:
        self._readers.pop(peer, None)

    def datagram(self, data: bytes, arrived_ns: int, peer: tuple[str, int]) -> None:
        self._handle(self.core.receive_datagram(data, peer, arrived_ns))

    def stream(self, data: bytes, arrived_ns: int, peer: tuple[str, int], conn: Any) -> None:
        from harness.protocols.sip.message import SipParseError, StreamReader

        reader = self._readers[peer]
        reader.feed(data)
        while True:
            try:
                msg = reader.next_message()
            except SipParseError as exc:
                self._readers[peer] = StreamReader()  # framing is lost: drop what was held with the connection
                self._handle(self.core.refuse_frame(data, exc, peer, arrived_ns))
                with contextlib.suppress(OSError):
                    conn.close()  # the serving greenlet's next read fails and it lets the connection go
                return
            if msg is None:
                return
            self._handle(self.core.receive_message(msg, peer, arrived_ns))

    def _send(self, data: bytes, peer: tuple[str, int]) -> None:
        try:
            if self.transport == "udp":
                self.sock.sendto(data, peer)
                return
            conn = self._conns.get(tuple(peer[:2]))
            if conn is None:
                if self.count("answer_unsent") <= 20:
                    self.on_state("finding", f"{self.probe}: no connection to {peer[0]}:{peer[1]} for the answer")
                return
            self.sendall(conn, data)
        except OSError as exc:
            if self.count("answer_unsent") <= 20:
                self.on_state("finding", f"{self.probe}: SIP answer to {peer[0]}:{peer[1]} not sent: {exc}")

    def _handle(self, outputs: list[Any]) -> None:
        from harness.protocols.scaip import reply_for
        from harness.protocols.scaip_sip import MrqArrived, Refused
        from harness.protocols.sip.events import Transmit

        for out in outputs:
            if isinstance(out, Transmit):
                self._send(out.data, out.peer)
            elif isinstance(out, MrqArrived):
                mrq = out.mrq
                # the <mrs> first: the platform's line waits for it; the arrival was stamped on reading
                self._handle(self.core.reply(out, reply_for(mrq), time.monotonic_ns()))
                if mrq.is_heartbeat:
                    self.count("heartbeats")
                    continue
                self._arrived(mrq, out.arrived_ns, out.peer)
            elif isinstance(out, Refused):
                self.refuse(f"scaip {out.peer[0]}:{out.peer[1]}", out.reason)
        self._arm()

    def _arrived(self, mrq: Any, arrived_ns: int, peer: Any) -> None:
        device = self.devices.get(f"{mrq.cid}/{mrq.did or ''}")
        code = self.codes.get(mrq.stc or "") if device is not None else None  # the model's own event
        qualifier = "1"
        if code is None and (mrq.stc or "") in self.raised:
            code, _, qualifier = self.raised[mrq.stc].partition("/")
        where = f"scaip {peer[0]}:{peer[1]}"
        self.handover(
            device or f"scaip {mrq.cid}/{mrq.did}",
            code or f"stc {mrq.stc}",
            qualifier,
            mrq.dco or "",
            arrived_ns,
            where,
        )

    def _arm(self) -> None:
        """One timer for the core's next wake-up (SIP retransmissions of the `<mrs>` MESSAGE over UDP)."""
        import gevent

        wake = self.core.wake_at_ns
        if wake == self._timer_at:
            return
        if self._timer is not None:
            self._timer.kill(block=False)
            self._timer = None
        self._timer_at = wake
        if wake is not None:
            self._timer = gevent.spawn_later(max(0.0, (wake - time.monotonic_ns()) / NS), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._handle(self.core.tick(time.monotonic_ns()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.kill(block=False)
        super().close()


def _dc09_key(spec: dict[str, Any]) -> bytes | None:
    """The centre's AES key, from the environment variable or file the lab file names (never the job file)."""
    if spec.get("key_env"):
        value = os.environ.get(spec["key_env"])
        if value is None:
            raise SystemExit(f"environment variable {spec['key_env']} (the DC-09 centre's key) is not set")
        return value.encode()
    if spec.get("key_file"):
        return Path(spec["key_file"]).read_bytes().strip()
    return None


def start_centre(spec: dict[str, Any], on_alarm: OnAlarm, on_state: OnState) -> _Centre:
    centre = (Dc09Centre if spec["via"] == "dc09" else ScaipCentre)(spec, on_alarm, on_state)
    centre.start()
    return centre


def drop_inherited(specs: dict[str, dict[str, Any]]) -> None:
    """A locust process that does not probe closes its copy of the centres' sockets."""
    for spec in specs.values():
        with contextlib.suppress(OSError):
            os.close(int(spec["fd"]))


__all__ = [
    "CENTRE_VIAS",
    "Dc09Centre",
    "Listener",
    "ScaipCentre",
    "centre_probes",
    "drop_inherited",
    "listener_addresses",
    "open_listeners",
    "start_centre",
]
