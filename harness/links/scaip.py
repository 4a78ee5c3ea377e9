"""SCAIP links (SS 91100 / CLC/TS 50134-9 over SIP MESSAGE): a device that sends `<mrq>` to the platform's
SCAIP receiver and gets its `<mrs>` back, and a response centre that is a SCAIP receiver.

Correlation as for DC-09 (harness.links.dc09): the device puts a per-alarm number (1..999) in `dco`
(device component), the lab file's mapping profile says which element a platform carries it in, and
both ends build `<device>:<Contact ID code>:<zone>`; the code comes from the device model's SCAIP status
code (`stc`) vocabulary. The device's acknowledgement is the centre's `<mrs>` (snu 0), a `device_ack`
with `action: mrs`.
"""

from __future__ import annotations

import ssl
from typing import Any

from harness.clock import now_ns
from harness.errors import InputError
from harness.links import Incoming, IncomingHandler, KeyRing, Outgoing, Refused, RefusedHandler, Sent
from harness.links.dc09 import key_of
from harness.protocols.scaip import MessageType, Mrq, Mrs, reply_for
from harness.transports.loop import LoopThread
from harness.transports.sip import ScaipDevice, ScaipReceiver, ScaipResult, ScaipSendError

CARRIED = ("centre", "device", "user", "code")
"""What a SCAIP alarm is judged on: routing by cid/did, content by status code (mapped to Contact ID)."""


class ScaipDeviceLink:
    def __init__(self, device_id: str, model: Any, settings: Any, to: str, io: LoopThread,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.device_id = device_id
        self.model = model
        self.settings = settings
        self._io = io
        self._zones = KeyRing()
        self._device = ScaipDevice(to, transport=settings.transport, cid=str(settings.cid), ssl_context=ssl_context)
        io.run(self._device.start())
        self._ack: IncomingHandler | None = None
        self._refused: RefusedHandler | None = None

    def send(self, out: Outgoing) -> Sent:
        stc = self.model.stc_for_code(out.code, out.qualifier)
        zone = f"{self._zones.next(self.device_id):03d}"
        mrq = self._device.mrq(stc=stc, dty=self.model.scaip_dty, did=self.settings.did, dco=zone,
                               pri=min(out.priority, 9))
        key = key_of(self.device_id, out.code, zone)
        t = now_ns()
        self._io.submit(self._send(mrq, key))
        return Sent(t, {"ref": mrq.ref, "cid": mrq.cid, "did": mrq.did, "dty": mrq.dty, "stc": stc, "dco": zone,
                        "code": out.code}, key)

    async def _send(self, mrq: Mrq, key: str) -> None:
        try:
            result: ScaipResult = await self._device.send(mrq)
        except (ScaipSendError, TimeoutError, OSError) as exc:
            if self._refused is not None:
                self._refused(Refused(now_ns(), mrq.ref, f"SCAIP MESSAGE not answered: {exc}", "scaip"))
            return
        if result.mrs is not None and result.mrs_ns is not None and self._ack is not None:
            mrs: Mrs = result.mrs
            fields = {"action": "mrs", "ref": mrs.ref, "snu": int(mrs.snu), "sip_status": result.status,
                      "mre": int(mrs.mre) if mrs.mre is not None else None, "hbi": mrs.hbi}
            self._ack(Incoming(result.mrs_ns, fields, key=key, evidence={**fields, "_key": key}, where="scaip"))

    def heartbeat(self, seq: int, interval_s: float, sent_text: str) -> None:
        mrq = self._device.mrq(stc=None, dty=self.model.scaip_dty, did=self.settings.did, mty=MessageType.HEARTBEAT)
        self._io.submit(self._device.send(mrq, mrs_timeout=None))

    def on_ack(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self._ack, self._refused = handler, refused

    def close(self) -> None:
        self._io.run(self._device.close(), timeout_s=5)


class ScaipCentreLink:
    def __init__(self, centre: str, settings: Any, lab: Any, models: dict[str, Any], io: LoopThread) -> None:
        self.centre = centre
        self._lab = lab
        self._models = models
        self._io = io
        own = {f"{dev.scaip.cid}/{dev.scaip.did or ''}": d for d, dev in lab.spec.devices.items()
               if dev.scaip is not None and dev.scaip.cid}
        self.devices = dict(settings.devices) or own
        self.raised: dict[str, str] = dict(settings.raised)
        host, _, port = (settings.listen or "127.0.0.1:0").rpartition(":")
        self._receiver = ScaipReceiver(host=host, port=int(port), transport=settings.transport,
                                       on_message=self._on_message, on_refused=self._on_refused)
        self._started = False
        self._handler: IncomingHandler | None = None
        self._refused: RefusedHandler | None = None

    def bind(self) -> str:
        if not self._started:
            self._io.run(self._receiver.start())
            self._started = True
        return self._receiver.address

    def start(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self._handler, self._refused = handler, refused
        self.bind()

    def _on_message(self, mrq: Mrq, arrived_ns: int, peer: Any) -> Mrs | None:
        reply = reply_for(mrq)
        if mrq.is_heartbeat or self._handler is None:
            return reply
        device = self.devices.get(f"{mrq.cid}/{mrq.did or ''}")
        code, qualifier, event = self._content(device, mrq.stc or "")
        fields: dict[str, Any] = {"centre": self.centre, "scaip_cid": mrq.cid, "did": mrq.did, "dty": mrq.dty,
                                  "stc": mrq.stc, "ref": mrq.ref, "dco": mrq.dco, "code": code,
                                  "qualifier": qualifier}
        if device is not None:
            fields["device"] = device
            fields["user"] = self._lab.spec.devices[device].user
            fields["event"] = event
        key = key_of(device or f"scaip {mrq.cid}/{mrq.did}", code or f"stc {mrq.stc}", mrq.dco or "")
        self._handler(Incoming(arrived_ns, fields, key=key, evidence={**fields, "_key": key},
                               where=f"scaip {peer}", carries=CARRIED))
        return reply

    def _content(self, device: str | None, stc: str) -> tuple[str | None, str | None, str | None]:
        """Contact ID code, qualifier and vtlab's event name for a status code: the device model's own event
        first, then what the platform raises itself (the probe's `raised` profile, e.g. loss of supervision)."""
        model = self._models.get(self._lab.spec.devices[device].model) if device is not None else None
        code = model.code_for_stc(stc) if model is not None else None
        qualifier = "1"
        if code is None and stc in self.raised:
            code, _, qualifier = self.raised[stc].partition("/")
        if code is None:
            return None, None, None
        return code, qualifier, model.event_name(code, qualifier) if model is not None else None

    def _on_refused(self, raw: bytes, reason: str) -> None:
        if self._refused is not None:
            self._refused(Refused(now_ns(), raw[:500].decode("utf-8", "replace"), reason, "scaip"))

    def acknowledge(self, alarm: Incoming, operator: str) -> int:
        """The centre's `<mrs>` went with receipt; an operator's handling has no SCAIP message of its own."""
        return now_ns()

    def close(self) -> None:
        self._io.run(self._receiver.close(), timeout_s=5)


def scaip_device(ctx: Any, device_id: str) -> ScaipDeviceLink:
    from harness.plugins import device_models

    lab = ctx.lab
    spec = lab.spec.devices[device_id]
    place = str(lab.src.place("devices", device_id))
    settings = spec.scaip
    if settings is None or not settings.cid:
        raise InputError(f"device `{device_id}` has via: scaip but no `scaip: {{cid: ...}}`", place=place,
                         fix="add scaip: {cid: '4711', did: '1', to: HOST:PORT} to the device in the lab file")
    tls = settings.transport == "tls"
    to = settings.to or ctx.endpoint("device", "scaip_tls" if tls else "scaip")
    if not to:
        raise InputError(f"device `{device_id}`: no SCAIP receiver to send to" + (" over TLS" if tls else ""),
                         place=place, fix="set scaip.to: HOST:PORT (the platform's SCAIP receiver)")
    return ScaipDeviceLink(device_id, device_models()[spec.model], settings, to, ctx.io(),
                           tls_context(ctx, device_id, settings) if tls else None)


def tls_context(ctx: Any, device_id: str, settings: Any) -> ssl.SSLContext:
    """SIP over TLS: the platform's certificate checked against `scaip.ca` (default: the CA of the lab file's
    MQTT TLS, which for the embedded lab is the lab's own), the device's client certificate where it has one."""
    from harness.identities import device_identity
    from harness.transports.sip import client_ssl_context

    mqtt = ctx.mqtt_settings(device_identity(device_id))
    ca = ctx.lab.resolve(settings.ca) if settings.ca else mqtt.ca
    try:
        return client_ssl_context(ca=ca, cert=mqtt.cert, key=mqtt.key, key_password=mqtt.key_password)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"device `{device_id}`: the SIP/TLS certificates cannot be used: {exc}",
                         place=str(ctx.lab.src.place("devices", device_id, "scaip")),
                         fix="set scaip.ca to the CA file that signs the platform's SIP certificate") from None


def scaip_centre(ctx: Any, probe: str) -> ScaipCentreLink:
    from harness.labfile import ScaipLink
    from harness.plugins import device_models

    spec = ctx.lab.spec.probes[probe]
    return ScaipCentreLink(spec.centre, spec.scaip or ScaipLink(listen="127.0.0.1:0"), ctx.lab, device_models(),
                           ctx.io())
