"""Delivery to response centres that receive over SIA DC-09 or SCAIP: the lab re-encodes, as a real platform
does, with its own DC-09 sequence numbers and its own SCAIP `ref`s; only the device (account / controller
id), the Contact ID code and the zone (SCAIP `dco`) survive.

`deliver` runs on the router's threads and never blocks: it encodes, then hands the send to the lab's
asyncio loop thread (directly when it already runs there, as for SCAIP and DC-09 ingress), and the
centre's answer comes back through `on_result` on that loop thread. One
DC-09 line per centre (one message in flight, as DC-09 pairs replies by sequence); the frame's account is
the device's, so the centre knows whose alarm it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Protocol

from harness.lab.alarm import LabAlarm
from harness.lab.config import CentreDelivery, LabConfig
from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, SIA_DCS, TransmitterState
from harness.protocols.scaip import MessageType, Mrq, StatusNumber
from harness.protocols.sia_dcs import SiaEvent, contact_id_to_sia, encode_sia_data
from harness.transports.dc09 import DC09Transmitter
from harness.transports.dc09 import Path as Dc09Path
from harness.transports.loop import LoopThread
from harness.transports.sip import ScaipDevice, ScaipSendError, new_ref

__all__ = ["Dc09Egress", "DeliveryResult", "Egress", "ScaipEgress", "make_egress", "read_key"]

log = logging.getLogger("harness.lab.egress")

_ZONE = re.compile(r"^[0-9B-F]{3}$")


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """A centre's answer to one delivery: `ok` when it ACKed (DC-09) or sent an `<mrs>` with snu 0 (SCAIP)."""

    ok: bool
    reply: str | None
    round_trip_ms: float | None
    attempts: int
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


OnResult = Callable[[LabAlarm, DeliveryResult], None]


class Egress(Protocol):
    via: str

    async def start(self) -> None: ...
    def deliver(self, alarm: LabAlarm) -> str | None: ...
    async def close(self) -> None: ...


def read_key(path: FsPath | None) -> bytes | None:
    """An AES key from its file (whitespace around it ignored); None without a file."""
    return path.read_bytes().strip() if path is not None else None


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class _Bounded:
    """Counts deliveries waiting for their centre, so a centre that never answers cannot grow the lab."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.pending >= self.limit:
                return False
            self.pending += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.pending -= 1


class Dc09Egress:
    """ADM-CID frames to a centre's DC-09 receiver, with the lab's own sequence numbers and retries."""

    via = "dc09"

    def __init__(
        self, centre: str, settings: CentreDelivery, config: LabConfig, io: LoopThread, on_result: OnResult
    ) -> None:
        assert settings.address is not None
        self.centre = centre
        self.settings = settings
        self.config = config
        self._io = io
        self._on_result = on_result
        host, port = _host_port(settings.address)
        self.state = TransmitterState(
            "0000", read_key(settings.key_file), receiver=settings.receiver, line=settings.line
        )
        self.tx = DC09Transmitter(
            self.state, Dc09Path(host, port, settings.protocol), timeout_s=settings.timeout_s, retries=settings.retries
        )
        self._lock: asyncio.Lock | None = None
        self._bound = _Bounded(config.limits.pending_deliveries)

    async def start(self) -> None:
        self._lock = asyncio.Lock()

    def account_for(self, device: str) -> str | None:
        d = self.config.devices.get(device)
        account = self.settings.accounts.get(device) or (d.dc09_account if d else None)
        return account.upper() if account else None

    def deliver(self, alarm: LabAlarm) -> str | None:
        """Hand the alarm to the DC-09 line; a reason when it cannot be encoded or the line is full."""
        account = self.account_for(alarm.device)
        if account is None or not re.fullmatch(r"[0-9A-F]{3,16}", account):
            return f"no DC-09 account for device `{alarm.device}` (set dc09_account or the centre's accounts)"
        zone = alarm.zone or "000"
        if not _ZONE.match(zone) or not re.fullmatch(r"[0-9]{3}", alarm.code) or alarm.qualifier not in "136":
            return f"not Contact ID: code {alarm.code!r} qualifier {alarm.qualifier!r} zone {zone!r}"
        if self.settings.format == "sia-dcs":
            sia = contact_id_to_sia(int(alarm.qualifier), alarm.code)
            if sia is None:
                return f"no SIA-DCS code for Contact ID {alarm.code}/{alarm.qualifier}"
            token, data = SIA_DCS, encode_sia_data(account, [SiaEvent(sia, address=zone)])
        else:
            ev = ContactIdEvent(account, int(alarm.qualifier), alarm.code, self.config.mapping.partition, zone)
            token, data = ADM_CID, encode_adm_cid(ev)
        if not self._bound.take():
            return f"{self._bound.pending} deliveries already wait for centre `{self.centre}`"
        self._io.start_soon(self._send(alarm, account, data, token))
        return None

    async def _send(self, alarm: LabAlarm, account: str, data: str, token: str = ADM_CID) -> None:
        assert self._lock is not None
        try:
            async with self._lock:  # FIFO: alarms leave in the order they were handed over
                self.state.account = account  # one line, the frame names the device's account
                result = await self.tx.send(token, data)
            reply = result.reply.kind if result.reply is not None else None
            detail = {"sequence": result.message.sequence, "account": account,
                      ("adm_cid" if token == ADM_CID else "sia_dcs"): data}
            if result.path is not None:
                detail["path"] = str(result.path)
            rtt = result.round_trip_ns / 1e6 if result.round_trip_ns is not None else None
            out = DeliveryResult(result.acked, reply, rtt, result.attempts, result.error, detail)
        except Exception as exc:  # a fault in the line must not stop the lab: report it as a failed delivery
            log.exception("DC-09 delivery to %s failed", self.centre)
            out = DeliveryResult(False, None, None, 0, f"internal error: {exc!r}", {"account": account})
        finally:
            self._bound.give()
        self._on_result(alarm, out)

    async def close(self) -> None:
        await self.tx.close()


class ScaipEgress:
    """An `<mrq>` per alarm to a centre's SCAIP receiver (SIP MESSAGE), waiting for its `<mrs>`."""

    via = "scaip"

    def __init__(
        self, centre: str, settings: CentreDelivery, config: LabConfig, io: LoopThread, on_result: OnResult
    ) -> None:
        assert settings.address is not None
        self.centre = centre
        self.settings = settings
        self.config = config
        self._io = io
        self._on_result = on_result
        self.device = ScaipDevice(settings.address, transport=settings.protocol, cid="0")
        self._bound = _Bounded(config.limits.pending_deliveries)

    async def start(self) -> None:
        await self.device.start()

    def mrq_for(self, alarm: LabAlarm) -> Mrq | str:
        """The `<mrq>` the centre gets, or why there is none."""
        d = self.config.devices.get(alarm.device)
        ident = d.scaip if d else None
        cid = self.settings.accounts.get(alarm.device) or (ident.cid if ident else None)
        if cid is None and d is not None and d.dc09_account and d.dc09_account.isdigit():
            cid = d.dc09_account
        if cid is None or not re.fullmatch(r"[0-9]{1,16}", cid):
            return f"no SCAIP controller id for device `{alarm.device}` (set scaip.cid or the centre's accounts)"
        mapping = self.config.mapping
        stc = mapping.stc_for(alarm.code, alarm.qualifier)
        if stc is None:
            return f"no SCAIP status code for Contact ID {alarm.code}/{alarm.qualifier} (mapping.code_stc)"
        dty = ident.dty if ident else mapping.dty_for_code.get(alarm.code, "0001")
        zone = alarm.zone or "000"
        return Mrq(
            ref=new_ref(),
            cid=cid,
            dty=dty,
            mty=MessageType.MESSAGE,
            did=ident.did if ident else None,
            dco=zone if zone.isdigit() else None,
            stc=stc,
            pri=min(max(alarm.priority, 0), 9),
        )

    def deliver(self, alarm: LabAlarm) -> str | None:
        mrq = self.mrq_for(alarm)
        if isinstance(mrq, str):
            return mrq
        if not self._bound.take():
            return f"{self._bound.pending} deliveries already wait for centre `{self.centre}`"
        self._io.start_soon(self._send(alarm, mrq))
        return None

    async def _send(self, alarm: LabAlarm, mrq: Mrq) -> None:
        s = self.settings
        detail: dict[str, Any] = {"out_ref": mrq.ref, "stc": mrq.stc, "scaip_cid": mrq.cid}
        sent = time.monotonic_ns()
        try:
            result = await self.device.send(mrq, timeout=s.timeout_s * (s.retries + 1), mrs_timeout=s.timeout_s)
            if result.mrs is None:
                out = DeliveryResult(
                    False,
                    None,
                    None,
                    1,
                    f"SIP {result.status} but no <mrs> within {s.timeout_s:g}s",
                    detail | {"sip_status": result.status},
                )
            else:
                snu = int(result.mrs.snu)
                rtt = result.mrs_round_trip_ns / 1e6 if result.mrs_round_trip_ns is not None else None
                ok = snu == StatusNumber.OK
                out = DeliveryResult(
                    ok,
                    f"snu={snu}",
                    rtt,
                    1,
                    "" if ok else f"centre answered snu {snu}",
                    detail | {"sip_status": result.status, "snu": snu},
                )
        except ScaipSendError as exc:
            out = DeliveryResult(False, None, None, 1, exc.reason, detail | {"sip_status": exc.status})
        except TimeoutError:
            out = DeliveryResult(False, None, (time.monotonic_ns() - sent) / 1e6, 1, "no SIP answer", detail)
        except Exception as exc:
            log.exception("SCAIP delivery to %s failed", self.centre)
            out = DeliveryResult(False, None, None, 1, f"internal error: {exc!r}", detail)
        finally:
            self._bound.give()
        self._on_result(alarm, out)

    async def close(self) -> None:
        await self.device.close()


def make_egress(
    centre: str, settings: CentreDelivery, config: LabConfig, io: LoopThread, on_result: OnResult
) -> Egress | None:
    """The egress of a centre that does not receive over MQTT (None for MQTT: the router publishes)."""
    if settings.via == "dc09":
        return Dc09Egress(centre, settings, config, io, on_result)
    if settings.via == "scaip":
        return ScaipEgress(centre, settings, config, io, on_result)
    return None
