"""Device alarms into the reference lab over SIA DC-09 and SCAIP, mapped to the lab's internal alarm.

DC-09: a receiver on one port, TCP and UDP, with an account per device (`dc09_account`). The device gets
the DC-09 reply from the receiver on receipt (ACK; DUH for an unknown account; NAK outside the timestamp
window). An ADM-CID frame becomes an alarm with device = the account's device, code and qualifier from
Contact ID, zone = the Contact ID zone; any accepted message (NULL link tests included) counts as a sign
of life for supervision, as DC-09 says.

SCAIP: receivers on one port over UDP and TCP. Each valid `<mrq>` is answered 200 OK and an `<mrs>`
(matched by `ref`); device = the device whose SCAIP (cid, did) match, code from the status code (`stc`)
through the mapping profile, zone = `dco`. A heartbeat (`mty` PI) feeds supervision. An unknown device or
an unmapped status code of a message is answered snu 3 (wrong data content) and written to the ledger.

Callbacks run on the lab's asyncio loop thread; the router takes it from there under its own lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from harness.lab.config import LabConfig
from harness.lab.egress import read_key
from harness.protocols import scaip
from harness.protocols.contact_id import ContactIdEvent
from harness.protocols.dc09 import NULL, Account, Decision, ReceiverPolicy
from harness.protocols.scaip import MessageType, Mrq, Mrs, StatusNumber
from harness.transports.dc09 import DC09Receiver
from harness.transports.sip import Arrival, ScaipReceiver, client_ssl_context, server_ssl_context

__all__ = ["AlarmDraft", "Dc09Ingress", "IngressSink", "ScaipIngress"]

log = logging.getLogger("harness.lab.ingress")

NO_WINDOW_S = 100 * 365 * 86_400.0
"""`dc09_window: false` (the insecure profile): any timestamp within a century is accepted."""

RAW_IN_LEDGER = 120
"""Bytes of refused peer input copied into a ledger line (escaped)."""


@dataclass(frozen=True, slots=True)
class AlarmDraft:
    """An alarm as an ingress read it, before the router gives it a centre and an id."""

    ingress: str
    device: str
    code: str
    qualifier: str
    event: str
    priority: int
    zone: str | None
    arrived_ns: int
    partition: str = "01"
    ref: str | None = None
    detail: tuple[tuple[str, Any], ...] = ()


class IngressSink(Protocol):
    def take_alarm(self, draft: AlarmDraft) -> None: ...
    def take_heartbeat(self, device: str, via: str) -> None: ...
    def refuse(self, via: str, reason: str, **fields: Any) -> None: ...
    def note(self, action: str, **fields: Any) -> None: ...


def _raw(data: bytes) -> str:
    text = data[:RAW_IN_LEDGER].decode("ascii", "backslashreplace")
    return text + (f"...({len(data)} bytes)" if len(data) > RAW_IN_LEDGER else "")


class Dc09Ingress:
    """The lab's DC-09 receiver."""

    def __init__(self, config: LabConfig, sink: IngressSink) -> None:
        self.config = config
        self.sink = sink
        strict = config.ingress.dc09_require_encryption
        accounts = []
        for d in config.devices.values():
            if d.dc09_account:
                key = read_key(d.dc09_key_file)
                required = strict if d.dc09_require_encryption is None else d.dc09_require_encryption
                accounts.append(Account(d.dc09_account.upper(), key, require_encryption=required and key is not None))
        behind, ahead = config.ingress.dc09_window_s if config.ingress.dc09_window else (NO_WINDOW_S, NO_WINDOW_S)
        policy = ReceiverPolicy(window_behind=timedelta(seconds=behind), window_ahead=timedelta(seconds=ahead))
        self.receiver = DC09Receiver(
            accounts,
            self._on_message,
            self._on_refused,
            host=config.ingress.host,
            port=config.ingress.dc09_port,
            policy=policy,
            max_connections=config.limits.dc09_connections,
            tcp=True,
            udp=True,
        )

    @property
    def address(self) -> str:
        return f"{self.receiver.host}:{self.receiver.port}"

    async def start(self) -> None:
        await self.receiver.start()

    async def close(self) -> None:
        await self.receiver.stop()

    def _on_refused(self, raw: bytes, reason: str) -> None:
        self.sink.refuse("dc09", reason, raw=_raw(raw))

    def _on_message(self, decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
        msg = decision.message
        content = decision.content
        account = None
        if isinstance(content, ContactIdEvent) and content.account:
            account = content.account.upper()
        elif msg is not None and msg.account:
            account = msg.account.upper()
        reply = decision.reply.kind
        if not decision.accepted:
            self.sink.refuse(
                "dc09",
                f"{decision.outcome}: {decision.reason}",
                reply=reply,
                account=account,
                sequence=msg.sequence if msg else None,
            )
            return
        device = self.config.device_for_account(account) if account else None
        if device is None or msg is None:
            self.sink.refuse("dc09", f"account {account!r} names no device of this lab", reply=reply, account=account)
            return
        if decision.duplicate:
            self.sink.note("ingress_duplicate", via="dc09", device=device, account=account, sequence=msg.sequence)
            return
        self.sink.take_heartbeat(device, "dc09")  # DC-09: any message restarts the supervision timer
        if msg.token == NULL:
            return
        if not isinstance(content, ContactIdEvent):
            self.sink.refuse(
                "dc09",
                f"{msg.token} data is not routed by this lab (send ADM-CID)",
                device=device,
                account=account,
                sequence=msg.sequence,
            )
            return
        rule_event = self.config.mapping.event_for(content.code)
        self.sink.take_alarm(
            AlarmDraft(
                ingress="dc09",
                device=device,
                code=content.code,
                qualifier=str(content.qualifier),
                event=rule_event,
                priority=1 if content.code[0] == "1" else 3,
                zone=content.zone,
                arrived_ns=arrived_ns,
                partition=content.partition,
                detail=(("account", account), ("sequence", msg.sequence)),
            )
        )


class ScaipIngress:
    """The lab's SCAIP receivers: UDP and TCP on one port (`scaip_plain`), SIP over TLS on another
    (`scaip_tls`, the lab's server certificate; a device must present a certificate when `tls_ca` is set)."""

    def __init__(self, config: LabConfig, sink: IngressSink) -> None:
        self.config = config
        self.sink = sink
        self.receivers: list[ScaipReceiver] = []
        self.port = config.ingress.scaip_port
        self.tls_port = config.ingress.scaip_tls_port

    @property
    def address(self) -> str:
        """Where a SCAIP device sends: the plain port, or the TLS port when the lab listens on TLS only."""
        plain = self.config.ingress.scaip_plain
        return f"{self.config.ingress.host}:{self.port if plain else self.tls_port}"

    @property
    def addresses(self) -> dict[str, str]:
        """{"scaip_plain": HOST:PORT (UDP and TCP), "scaip_tls": HOST:PORT}, for those that are on."""
        host, ing = self.config.ingress.host, self.config.ingress
        out = {}
        if ing.scaip_plain:
            out["scaip_plain"] = f"{host}:{self.port}"
        if ing.scaip_tls:
            out["scaip_tls"] = f"{host}:{self.tls_port}"
        return out

    def _receiver(self, transport: str, port: int) -> ScaipReceiver:
        r: ScaipReceiver

        def trim(_a: Arrival) -> None:  # the receiver keeps lists for tests; the lab keeps nothing
            r.arrivals.clear()
            r.delivered.clear()

        def refused(raw: bytes, reason: str) -> None:
            r.refused.clear()
            self.sink.refuse("scaip", reason, transport=transport, raw=_raw(raw))

        ing = self.config.ingress
        server_ctx = client_ctx = None
        if transport == "tls":
            assert ing.tls_cert is not None and ing.tls_key is not None
            server_ctx = server_ssl_context(
                ing.tls_cert, ing.tls_key, ca=ing.tls_ca, require_client_cert=ing.tls_ca is not None
            )
            client_ctx = client_ssl_context(ca=ing.tls_ca, verify=ing.tls_ca is not None)
        r = ScaipReceiver(
            host=ing.host,
            port=port,
            transport=transport,
            on_message=self._on_message,
            on_refused=refused,
            on_arrival=trim,
            ssl_context=server_ctx,
            client_ssl_context=client_ctx,
        )
        return r

    async def start(self) -> None:
        if self.config.ingress.scaip_tls:
            tls = self._receiver("tls", self.tls_port)
            await tls.start()
            self.tls_port = tls.port
            self.receivers.append(tls)
        if self.config.ingress.scaip_plain:
            await self._start_plain()

    async def _start_plain(self) -> None:
        for _ in range(20):
            tcp = self._receiver("tcp", self.port)
            await tcp.start()
            udp = self._receiver("udp", tcp.port)
            try:
                await udp.start()
            except OSError:
                await tcp.close()
                await udp.close()
                if self.port != 0:
                    raise
                continue  # the kernel's free TCP port is taken for UDP: try another
            self.port = tcp.port
            self.receivers += [udp, tcp]
            return
        raise OSError("no port free for both TCP and UDP")

    async def close(self) -> None:
        for r in self.receivers:
            await r.close()

    def _on_message(self, mrq: Mrq, arrived_ns: int, peer: tuple[str, int]) -> Mrs | Awaitable[Mrs]:
        device = self.config.device_for_scaip(mrq.cid, mrq.did)
        if device is None:
            self.sink.refuse(
                "scaip",
                f"controller cid {mrq.cid} did {mrq.did} names no device of this lab",
                ref=mrq.ref,
                snu=int(StatusNumber.WRONG_DATA_CONTENT),
            )
            return scaip.reply_for(mrq, StatusNumber.WRONG_DATA_CONTENT, ste="unknown device")
        if mrq.mty == MessageType.HEARTBEAT:
            self.sink.take_heartbeat(device, "scaip")
            return scaip.reply_for(mrq)
        rule = self.config.mapping.rule_for(mrq.stc)
        if rule is None:
            if mrq.mty in (MessageType.MESSAGE, None):
                self.sink.refuse(
                    "scaip",
                    f"status code {mrq.stc!r} is not in the lab's mapping profile",
                    device=device,
                    ref=mrq.ref,
                    snu=int(StatusNumber.WRONG_DATA_CONTENT),
                )
                return scaip.reply_for(mrq, StatusNumber.WRONG_DATA_CONTENT, ste="status code not mapped")
            self.sink.note("not_routed", via="scaip", device=device, ref=mrq.ref, mty=str(mrq.mty), stc=mrq.stc)
            return scaip.reply_for(mrq)
        zone = "000"
        if self.config.mapping.zone_from == "dco" and mrq.dco:
            zone = mrq.dco.zfill(3)
        self.sink.take_alarm(
            AlarmDraft(
                ingress="scaip",
                device=device,
                code=rule.code,
                qualifier=rule.qualifier,
                event=rule.event,
                priority=rule.priority,
                zone=zone,
                arrived_ns=arrived_ns,
                partition=self.config.mapping.partition,
                ref=mrq.ref,
                detail=(("stc", mrq.stc), ("scaip_cid", mrq.cid), ("did", mrq.did)),
            )
        )
        return _after_hand_over(scaip.reply_for(mrq))


async def _after_hand_over(mrs: Mrs) -> Mrs:
    """The `<mrs>` of a routed alarm, one turn of the loop later: a DC-09 or SCAIP delivery that
    `take_alarm` started on this loop writes its frame first, so building and sending the receipt (and
    the device's answer to it) never holds the alarm back on its way to the centre."""
    await asyncio.sleep(0)
    return mrs
