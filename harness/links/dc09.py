"""SIA DC-09 links: a device that is an alarm transmitter (ADM-CID frames to the platform's receiver),
and a response centre that is an alarm receiving centre (vtlab's DC-09 receiver).

DC-09 carries no vtlab correlation id, and a platform re-encodes with its own sequence numbers. What
survives is the account, the Contact ID event code and the zone/user number; the device link gives every
alarm in flight its own zone number (1..999 per device), and both ends build the key
`<device>:<code>:<zone>`, the centre mapping the account it receives back to the device (lab file).

The device's acknowledgement is the receiver's DC-09 ACK (the only acknowledgement DC-09 has); it
arrives as a `device_ack` with `action: received`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.clock import now_ns
from harness.errors import InputError
from harness.links import Incoming, IncomingHandler, KeyRing, Outgoing, Refused, RefusedHandler, Sent
from harness.protocols.contact_id import EVENT_NAMES, ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, Account, Decision, ReceiverPolicy, TransmitterState
from harness.protocols.sia_dcs import SiaData, sia_to_contact_id
from harness.transports.dc09 import DC09Receiver, DC09Transmitter, SendResult
from harness.transports.dc09 import Path as Dc09Path
from harness.transports.loop import LoopThread
from harness.units import parse_duration


def key_of(device: str, code: str, zone: str) -> str:
    return f"{device}:{code}:{zone}"


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def read_key(settings: Any, lab_dir: Path, place: str) -> bytes | None:
    if settings.key_env:
        value = os.environ.get(settings.key_env)
        if value is None:
            raise InputError(f"environment variable `{settings.key_env}` (DC-09 key) is not set", place=place,
                             fix=f"export {settings.key_env}=... before the run")
        return value.encode()
    if settings.key_file:
        return (lab_dir / settings.key_file).read_bytes().strip()
    return None


class Dc09DeviceLink:
    def __init__(self, device_id: str, settings: Any, to: str, key: bytes | None, io: LoopThread) -> None:
        self.device_id = device_id
        self.account = str(settings.account).upper()
        self._io = io
        self._zones = KeyRing(settings.zones)
        state = TransmitterState(self.account, key, receiver=settings.receiver, line=settings.line)
        host, port = _host_port(to)
        backup = None
        if settings.backup:
            bh, bp = _host_port(settings.backup)
            backup = Dc09Path(bh, bp, settings.protocol)
        self._tx = DC09Transmitter(state, Dc09Path(host, port, settings.protocol), backup,
                                   timeout_s=parse_duration(settings.timeout) / 1e9)
        self._ack: IncomingHandler | None = None
        self._refused: RefusedHandler | None = None

    def send(self, out: Outgoing) -> Sent:
        zone = f"{self._zones.next(self.device_id):03d}"
        event = ContactIdEvent(self.account, int(out.qualifier), out.code, "01", zone)
        data = encode_adm_cid(event)
        key = key_of(self.device_id, out.code, zone)
        t = now_ns()
        self._io.submit(self._send(data, key))
        return Sent(t, {"account": self.account, "adm_cid": data, "zone": zone, "code": out.code,
                        "qualifier": out.qualifier}, key)

    async def _send(self, data: str, key: str) -> None:
        result: SendResult = await self._tx.send(ADM_CID, data)
        if result.reply is not None and result.replied_ns is not None and self._ack is not None:
            path = "primary" if result.path is not None and result.path == self._tx.paths[0] else "backup"
            self._ack(Incoming(result.replied_ns, {"action": "received", "reply": result.reply.kind,
                                                  "attempts": result.attempts, "naks": result.naks, "path": path},
                               key=key, evidence={"reply": result.reply.kind, "_key": key}, where="dc09"))
        elif result.reply is None and self._refused is not None:
            self._refused(Refused(now_ns(), data, f"no DC-09 reply: {result.error or 'timeout'}", "dc09"))

    def heartbeat(self, seq: int, interval_s: float, sent_text: str) -> None:
        self._io.submit(self._tx.poll())  # a NULL link test is DC-09's supervision message

    def on_ack(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self._ack, self._refused = handler, refused

    def close(self) -> None:
        self._io.run(self._tx.close(), timeout_s=5)


class Dc09CentreLink:
    def __init__(self, centre: str, settings: Any, lab: Any, key: bytes | None, io: LoopThread) -> None:
        self.centre = centre
        self._lab = lab
        self._io = io
        devices = {d: dev for d, dev in lab.spec.devices.items()}
        accounts = dict(settings.accounts) or {str(dev.dc09.account).upper(): d for d, dev in devices.items()
                                               if dev.dc09 is not None and dev.dc09.account}
        self.accounts = {a.upper(): d for a, d in accounts.items()}
        self.sia_codes: dict[str, str] = dict(getattr(settings, "sia_codes", {}) or {})
        host, port = _host_port(settings.listen or "127.0.0.1:0")
        self._receiver = DC09Receiver([Account(a, key) for a in self.accounts], self._on_message, self._on_refused,
                                      host=host, port=port, policy=ReceiverPolicy(), tcp=True, udp=True)
        self._handler: IncomingHandler | None = None
        self._refused: RefusedHandler | None = None

    @property
    def address(self) -> str:
        return f"{self._receiver.host}:{self._receiver.port}"

    def bind(self) -> str:
        """Start listening (before the platform is told where to deliver); returns HOST:PORT."""
        if not getattr(self._receiver, "_started_by_link", False):
            self._io.run(self._receiver.start())
            self._receiver._started_by_link = True  # type: ignore[attr-defined]
        return self.address

    def start(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self._handler, self._refused = handler, refused
        self.bind()

    def _on_message(self, decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
        if self._handler is None:
            return
        content = decision.content
        if decision.accepted and isinstance(content, SiaData):
            sia, content = content, self._as_contact_id(content, decision)
            if content is None:
                if self._refused is not None:
                    self._refused(Refused(arrived_ns, str(decision.message)[:500],
                                          f"SIA-DCS event `{sia.first.code}` has no Contact ID code "
                                          "(add it to the centre's dc09.sia_codes)", f"dc09 {peer[0]}:{peer[1]}"))
                return
        if not decision.accepted or not isinstance(content, ContactIdEvent):
            if self._refused is not None and decision.message is not None and decision.message.token != "NULL":
                self._refused(Refused(arrived_ns, str(decision.message)[:500],
                                      f"{decision.outcome}: {decision.reason}", f"dc09 {peer[0]}:{peer[1]}"))
            return
        account = (content.account or (decision.message.account if decision.message else "") or "").upper()
        device = self.accounts.get(account)
        fields: dict[str, Any] = {"account": account, "centre": self.centre, "code": content.code,
                                  "qualifier": str(content.qualifier), "zone": content.zone,
                                  "partition": content.partition, "event_name": EVENT_NAMES.get(content.code),
                                  "duplicate": decision.duplicate}
        if device is not None:
            fields["device"] = device
            fields["user"] = self._lab.spec.devices[device].user
            from harness.plugins import device_models

            model = device_models().get(self._lab.spec.devices[device].model)
            if model is not None:
                fields["event"] = model.event_name(content.code, str(content.qualifier))
        key = key_of(device or f"account {account}", content.code, content.zone)
        self._handler(Incoming(arrived_ns, fields, key=key, evidence={**fields, "_key": key},
                               where=f"dc09 {peer[0]}:{peer[1]}", carries=CARRIED))

    def _as_contact_id(self, data: SiaData, decision: Decision) -> ContactIdEvent | None:
        """SIA-DCS read as the Contact ID event it stands for (the centre's `sia_codes` first, then the SIA
        table), the address as the zone; None for a code with no Contact ID (reported as refused)."""
        event = data.first
        mapped = self.sia_codes.get(event.code)
        if mapped is not None:
            code, _, qualifier = mapped.partition("/")
            pair: tuple[int, str] | None = (int(qualifier), code)
        else:
            pair = sia_to_contact_id(event.code)
        zone = (event.address or "0")[-3:].zfill(3)
        if pair is None or not zone.isdigit():
            return None
        account = data.account or (decision.message.account if decision.message else "") or ""
        return ContactIdEvent(account, pair[0], pair[1], event.area or "00", zone)

    def _on_refused(self, raw: bytes, reason: str) -> None:
        if self._refused is not None:
            self._refused(Refused(now_ns(), raw[:500].decode("ascii", "replace"), reason, "dc09"))

    def acknowledge(self, alarm: Incoming, operator: str) -> int:
        """DC-09 acknowledges on receipt (the receiver's ACK); an operator's handling has no DC-09 message."""
        return now_ns()

    def close(self) -> None:
        self._io.run(self._receiver.stop(), timeout_s=5)


CARRIED = ("centre", "device", "user", "code")
"""What a DC-09 alarm can be checked on: routing by account, content by Contact ID code (it carries no
event name and no priority)."""


def dc09_device(ctx: Any, device_id: str) -> Dc09DeviceLink:
    lab = ctx.lab
    spec = lab.spec.devices[device_id]
    place = str(lab.src.place("devices", device_id))
    settings = spec.dc09
    if settings is None or not settings.account:
        raise InputError(f"device `{device_id}` has via: dc09 but no `dc09: {{account: ...}}`", place=place,
                         fix="add dc09: {account: '1234', to: HOST:PORT} to the device in the lab file")
    to = settings.to or ctx.endpoint("device", "dc09")
    if not to:
        raise InputError(f"device `{device_id}`: no DC-09 receiver to send to", place=place,
                         fix="set dc09.to: HOST:PORT (the platform's DC-09 receiver)")
    return Dc09DeviceLink(device_id, settings, to, read_key(settings, lab.path.parent, place), ctx.io())


def dc09_centre(ctx: Any, probe: str) -> Dc09CentreLink:
    lab = ctx.lab
    spec = lab.spec.probes[probe]
    place = str(lab.src.place("probes", probe))
    settings = spec.dc09
    if settings is None:
        from harness.labfile import Dc09Link

        settings = Dc09Link(listen="127.0.0.1:0")
    return Dc09CentreLink(spec.centre, settings, lab, read_key(settings, lab.path.parent, place), ctx.io())
