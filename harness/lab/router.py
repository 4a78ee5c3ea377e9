"""The reference lab's alarm-routing platform: alarms in over MQTT, SIA DC-09 and SCAIP; faults applied;
delivery to each centre in the centre's protocol (MQTT, DC-09, SCAIP); acks relayed to devices; lab control.
The rest of the Router's work lives in its own modules, mixed into `Router`: `supervision` (heartbeats, 356),
`records` (FHIR pushes to the patient record), `plans` (the users' follow-up and wandering plans); `ledger`
holds the JSONL ledger (and what its lines carry) and the scheduler.

Threads: the MqttClient's network thread runs the MQTT handlers; one asyncio loop thread (LoopThread) runs
the DC-09 and SCAIP receivers and the DC-09/SCAIP deliveries; one scheduler thread runs what is due later
(delayed alarms, reorder releases, supervision deadlines); one worker pushes FHIR. Shared state is under
one lock. Acks are only subject to outages.

Every payload is decoded with its codec (wire_json, DC-09, SCAIP) and refused with a ledger line `rejected`
and a reason when it is not valid; nothing from an unknown device is routed; every per-device table is
bounded (LabConfig.limits), so hostile input cannot grow the lab's memory. With `validate_messages` off (the
insecure profile) an event whose payload names another device than its topic, and an ack from a centre for
an alarm routed to another, pass through (ledger line `unvalidated`), as on a careless platform.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.clock import now_ns, utc_text
from harness.errors import InputError, TargetError
from harness.faults import Decision, FaultPlan, FaultSpec, parse_faults
from harness.lab.alarm import LabAlarm
from harness.lab.config import LabConfig
from harness.lab.egress import DeliveryResult, Egress, make_egress
from harness.lab.epj_push import EpjPusher
from harness.lab.gateway import LabGateway
from harness.lab.ingress import AlarmDraft, Dc09Ingress, ScaipIngress
from harness.lab.ledger import NS, Ledger, Scheduler
from harness.lab.plans import PlansMixin
from harness.lab.records import RecordsMixin
from harness.lab.supervision import SupervisionMixin, _Supervised
from harness.lab.wandering import LocalClock
from harness.links.gateway import GatewayEvent
from harness.protocols.base import ProtocolError
from harness.protocols.wire_json import (
    CentreAck,
    DeviceAck,
    DeviceEvent,
    LabControl,
    WireMessage,
    decode,
    encode,
    readings_from,
    readings_to_json,
)
from harness.transports.base import Message
from harness.transports.loop import LoopThread
from harness.transports.mqtt import MqttClient, MqttSettings

__all__ = ["Ledger", "Router", "Scheduler", "utc_now"]

log = logging.getLogger("harness.lab.router")

LEDGER_TEXT = 160
"""Longest peer-supplied text (topic, reason) copied into a ledger line."""

utc_now = utc_text


def _short(text: str, limit: int = LEDGER_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def _topic_regex(template: str, site: str) -> re.Pattern[str]:
    pattern = re.escape(template.replace("{site}", site))
    pattern = pattern.replace(r"\{device\}", r"(?P<device>[^/]+)").replace(r"\{centre\}", r"(?P<centre>[^/]+)")
    return re.compile(f"^{pattern}$")


@dataclass(slots=True)
class _Held:
    alarm: LabAlarm
    decision: Decision
    token: int


@dataclass(slots=True)
class _Route:
    alarm: LabAlarm
    answered: bool = False
    """The centre answered (ack / ACK / mrs) once: later copies are not acked or recorded again."""


_ZONE_RE = re.compile(r"^[0-9B-F]{3}$")


class Router(SupervisionMixin, RecordsMixin, PlansMixin):
    """Takes alarms in (MQTT, DC-09, SCAIP), routes them to centres in each centre's protocol, relays acks,
    supervises heartbeats (SupervisionMixin), records in the patient record (RecordsMixin), applies the users'
    plans (PlansMixin)."""

    def __init__(
        self,
        config: LabConfig,
        broker_url: str,
        *,
        clock: Callable[[], int] = now_ns,
        notify: Callable[[dict[str, Any]], None] | None = None,
        fhir_api: Any = None,
    ) -> None:
        self.config = config
        self._fhir_api = fhir_api  # harness.lab.fhir_api.LabFhirApi: keeps what the lab records, for searches
        self.broker_url = broker_url
        self._clock = clock
        self._notify = notify or (lambda _e: None)
        self.ledger = Ledger(config.ledger)
        self._lock = threading.RLock()
        self._spec = parse_faults(config.faults, "lab config `faults`")
        self._plan = FaultPlan(self._spec)
        self._push_plan = FaultPlan(self._spec)
        self._held: _Held | None = None
        self._tokens = itertools.count(1)
        self._ids = itertools.count(1)
        self._supervised: dict[str, _Supervised] = {}
        self._follow_ups = 0
        self._local = LocalClock(config.local_time, config.timezone)  # for the wandering plans' night
        self._routed: dict[str, OrderedDict[str, _Route]] = {}  # device -> id -> route, bounded per device
        self._pending_delayed = 0
        self._scheduler: Scheduler | None = None
        self._io: LoopThread | None = None
        self._egress: dict[str, Egress] = {}
        self._dc09_in: Dc09Ingress | None = None
        self._scaip_in: ScaipIngress | None = None
        self._epj: EpjPusher | None = None
        self._gateway: LabGateway | None = None
        self.ingress: dict[str, str] = {}
        """Where devices send over other protocols: {"dc09": "HOST:PORT", "scaip": "HOST:PORT"} (TCP and UDP;
        "scaip" is the TLS port when the lab takes SCAIP over TLS only), and "scaip_plain" / "scaip_tls"."""
        site = config.site
        t = config.topics
        self._routes: list[tuple[re.Pattern[str], Callable[[re.Match[str], Message], None]]] = [
            (_topic_regex(t.device_event, site), self._on_event),
            (_topic_regex(t.device_heartbeat, site), self._on_heartbeat),
            (_topic_regex(t.centre_ack, site), self._on_centre_ack),
            (_topic_regex(t.lab_control, site), self._on_control),
        ]
        self._filters = [
            config.topic_filter(name) for name in ("device_event", "device_heartbeat", "centre_ack", "lab_control")
        ]
        tls = config.broker.tls
        settings = MqttSettings(
            url=broker_url,
            version=config.broker.mqtt_version,
            ca=tls.ca if tls else None,
            cert=tls.client_cert if tls else None,
            key=tls.client_key if tls else None,
        )
        self._client = MqttClient(
            settings, "lab-router", client_id=f"vtlab-lab-{site}-{os.getpid()}", on_state=self._on_state
        )

    # ---------------------------------------------------------------- lifecycle

    @property
    def faults(self) -> FaultSpec:
        return self._spec

    def start(self) -> None:
        """Connect, subscribe, open the DC-09/SCAIP receivers and lines, start routing (the outage clock
        starts now)."""
        self._scheduler = Scheduler(self._clock)
        self.ledger.write("faults", spec=str(self._spec))
        try:
            self._start_protocols()
            if self.config.epj is not None:
                self._epj = EpjPusher(
                    self.config.epj, self.ledger.write, limit=self.config.limits.pending_pushes, api=self._fhir_api
                )
            self._client.connect()
            self._client.subscribe_many(self._filters, self._on_message)
        except TargetError as e:
            self.stop()
            raise TargetError(f"the lab router could not start at {self.broker_url}: {e.problem}", fix=e.fix) from None
        except (OSError, ValueError) as e:
            self.stop()
            raise TargetError(
                f"the lab could not open its DC-09/SCAIP ports or lines: {e}",
                fix="check the addresses and key files of the lab config",
            ) from None
        with self._lock:
            self._plan.start(self._clock())
            self._push_plan.start(self._clock())
            self._announce_outage(self._plan)
        if any(d.gateway is not None for d in self.config.devices.values()):
            try:
                self._gateway = LabGateway(self.config, self)
                self._gateway.start()
            except Exception as e:  # a BLE transport or serial profile that cannot be opened, said plainly
                self.stop()
                raise TargetError(
                    f"the lab's gateway could not open its devices: {e}",
                    fix="check the serial paths, profiles and BLE transports of the lab config",
                ) from None

    def _start_protocols(self) -> None:
        cfg = self.config
        deliveries = {c: cfg.delivery_for(c) for c in [*cfg.all_centres(), *cfg.delivery]}
        need_io = cfg.dc09_ingress_on() or cfg.scaip_ingress_on() or any(d.via != "mqtt" for d in deliveries.values())
        if not need_io:
            return
        self._io = LoopThread("lab-io")
        if cfg.dc09_ingress_on():
            self._dc09_in = Dc09Ingress(cfg, self)
            self._io.run(self._dc09_in.start(), timeout_s=10)
            self.ingress["dc09"] = self._dc09_in.address
        if cfg.scaip_ingress_on():
            self._scaip_in = ScaipIngress(cfg, self)
            self._io.run(self._scaip_in.start(), timeout_s=10)
            self.ingress["scaip"] = self._scaip_in.address
            self.ingress.update(self._scaip_in.addresses)
        for centre, settings in deliveries.items():
            egress = make_egress(centre, settings, cfg, self._io, self._on_delivery)
            if egress is not None:
                self._io.run(egress.start(), timeout_s=10)
                self._egress[centre] = egress

    def _announce_outage(self, plan: FaultPlan) -> None:
        """Ledger lines `outage_window` (state begin/end) when the outage of `plan` starts and ends, so
        tests and the harness can wait for the window instead of sleeping (skipped if the plan changed)."""
        spec, start = plan.spec, plan.start_ns
        if not spec.outage_ns or start is None or self._scheduler is None:
            return
        for state, at in (("begin", start + spec.outage_at_ns), ("end", start + spec.outage_at_ns + spec.outage_ns)):

            def mark(state: str = state) -> None:
                with self._lock:
                    if self._plan is plan:
                        self.ledger.write("outage_window", state=state, spec=str(spec))

            self._scheduler.at(at, mark)

    def stop(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
        if self._scheduler is not None:
            self._scheduler.stop()
        try:
            self._client.close()
        finally:
            try:
                self._stop_protocols()
            finally:
                self.ledger.close()

    def _stop_protocols(self) -> None:
        if self._epj is not None:
            self._epj.close()
        io = self._io
        if io is None:
            return
        closers = [e.close() for e in self._egress.values()]
        if self._dc09_in is not None:
            closers.append(self._dc09_in.close())
        if self._scaip_in is not None:
            closers.append(self._scaip_in.close())
        for coro in closers:
            try:
                io.run(coro, timeout_s=5)
            except Exception:
                log.exception("closing a DC-09/SCAIP endpoint failed")
        io.close()

    def _on_state(self, state: str, detail: str) -> None:
        self.ledger.write("broker_connection", state=state, detail=detail)

    # ---------------------------------------------------------------- dispatch (MQTT)

    def _on_message(self, msg: Message) -> None:
        try:
            for pattern, handler in self._routes:
                m = pattern.match(msg.topic)
                if m:
                    handler(m, msg)
                    return
        except Exception as e:  # bad input from the network must never stop the lab
            log.exception("handler failed for %s", _short(msg.topic))
            self._reject(msg.topic, f"internal error: {e!r}")

    def _reject(self, topic: str, reason: str, **fields: Any) -> None:
        self.ledger.write("rejected", topic=_short(topic), reason=_short(reason, 300), **fields)

    def _publish(self, topic: str, message: WireMessage) -> bool:
        try:
            self._client.publish(topic, encode(message))
        except TargetError as e:
            self.ledger.write("publish_failed", topic=topic, cid=getattr(message, "cid", None), reason=e.problem)
            return False
        return True

    def _publish_bytes(self, topic: str, payload: bytes, cid: str) -> bool:
        try:
            self._client.publish(topic, payload)
        except TargetError as e:
            self.ledger.write("publish_failed", topic=topic, cid=cid, reason=e.problem)
            return False
        return True

    def _remember(self, alarm: LabAlarm) -> None:
        table = self._routed.setdefault(alarm.device, OrderedDict())
        table[alarm.id] = _Route(alarm)
        table.move_to_end(alarm.id)
        while len(table) > self.config.limits.cids_per_device:
            table.popitem(last=False)

    def _route_of(self, cid: str, device: str | None) -> _Route | None:
        """The route of an alarm id this lab still remembers."""
        with self._lock:
            tables = [self._routed.get(device)] if device else list(self._routed.values())
            for table in tables:
                if table is not None and cid in table:
                    return table[cid]
        return None

    def _known_device(self, m: re.Match[str], msg: Message, payload_device: str) -> str | None:
        """The topic's device when it is this lab's and the payload names the same one; else a ledger line."""
        device = m.group("device")
        if payload_device != device:
            if self.config.validate_messages:
                self._reject(msg.topic, f"payload device `{_short(payload_device, 64)}` is not the topic's device")
                return None
            # insecure profile: trust the payload, as a careless platform does (a device may speak for another)
            self.ledger.write(
                "unvalidated",
                topic=_short(msg.topic),
                reason="payload device is not the topic's device",
                device=_short(payload_device, 64),
            )
            device = payload_device
        if device not in self.config.devices:
            self._reject(msg.topic, f"unknown device `{_short(device, 64)}`: not in the lab's devices")
            return None
        return device

    # ---------------------------------------------------------------- ingress sink (DC-09, SCAIP)

    def take_alarm(self, draft: AlarmDraft) -> None:
        """An alarm from the DC-09 or SCAIP receiver (called on the loop thread)."""
        try:
            settings = self.config.devices[draft.device]
            alarm = LabAlarm(
                id=f"{draft.ingress}-{next(self._ids)}",
                ingress="dc09" if draft.ingress == "dc09" else "scaip",
                device=draft.device,
                centre="",
                code=draft.code,
                qualifier=draft.qualifier,
                event=draft.event,
                priority=draft.priority,
                received_epoch_s=time.time(),
                zone=draft.zone,
                partition=draft.partition,
                user=settings.user,
                sent=utc_text(),
                ref=draft.ref,
            )
            self._take(alarm, where=draft.ingress, detail=dict(draft.detail))
        except Exception as e:  # never let one alarm stop a receiver
            log.exception("routing a %s alarm failed", draft.ingress)
            self.ledger.write("rejected", via=draft.ingress, device=draft.device, reason=f"internal error: {e!r}")

    def take_gateway(self, event: GatewayEvent) -> None:
        """An event or reading the lab's gateway read from a serial or BLE device (on the gateway's thread):
        routed as an MQTT device's would be, keyed `<device>:<code>:<zone>` (no vtlab cid survives a gateway)."""
        try:
            settings = self.config.devices[event.device]
            try:
                readings = readings_to_json(readings_from(event.readings)) if event.readings is not None else None
            except ProtocolError as e:  # a value the dialect cannot carry (a FLOAT of 1e100): not forwarded
                self.ledger.write("rejected", via="gateway", device=event.device, reason=_short(e.reason, 300))
                return
            alarm = LabAlarm(
                id=f"gw-{next(self._ids)}",
                ingress="gateway",
                device=event.device,
                centre="",
                code=event.code,
                qualifier=event.qualifier,
                event=event.event,
                priority=event.priority,
                received_epoch_s=time.time(),
                zone=event.zone,
                user=settings.user,
                battery=event.battery,
                sent=utc_text(),
                readings=readings,
                measured=event.measured,
            )
            detail: dict[str, Any] = {"raw": _short(event.raw, 120)}
            if readings is not None:
                detail["readings"] = readings
            if event.measured is not None:
                detail["measured"] = event.measured
            self._take(alarm, where=f"gateway {event.device}", detail=detail)
        except Exception as e:  # one bad event must never stop the gateway
            log.exception("routing a gateway event failed")
            self.ledger.write("rejected", via="gateway", device=event.device, reason=f"internal error: {e!r}")

    def refuse(self, via: str, reason: str, **fields: Any) -> None:
        self.ledger.write(
            "rejected", via=via, reason=_short(reason, 300), **{k: v for k, v in fields.items() if v is not None}
        )

    def note(self, action: str, **fields: Any) -> None:
        self.ledger.write(action, **{k: v for k, v in fields.items() if v is not None})

    # ---------------------------------------------------------------- events -> centres

    def _on_event(self, m: re.Match[str], msg: Message) -> None:
        try:
            ev = decode(msg.payload, DeviceEvent)
        except ProtocolError as e:
            self._reject(msg.topic, f"event: {e.reason}")
            return
        device = self._known_device(m, msg, ev.device)
        if device is None:
            return
        if ev.zone is not None and not _ZONE_RE.match(ev.zone):
            self._reject(
                msg.topic, f"zone `{_short(ev.zone, 16)}` is not 3 Contact ID digits", cid=ev.cid, device=device
            )
            return
        alarm = LabAlarm(
            id=ev.cid,
            ingress="mqtt",
            device=device,
            centre="",
            code=ev.code,
            qualifier=ev.qualifier,
            event=ev.event,
            priority=ev.priority,
            received_epoch_s=time.time(),
            zone=ev.zone,
            cid=ev.cid,
            user=ev.user,
            seq=ev.seq,
            battery=ev.battery,
            sent=ev.sent,
            readings=readings_to_json(ev.readings) if ev.readings is not None else None,
            measured=ev.measured,
        )
        self._take(alarm, where=msg.topic)

    def _take(self, alarm: LabAlarm, *, where: str, detail: dict[str, Any] | None = None) -> None:
        """Take a device's alarm or reading in; a reading beyond the user's follow-up plan raises a follow-up
        alarm of its own (a separate alarm to the same centre, with the same faults applied)."""
        self._take_one(alarm, where=where, detail=detail)
        follow_up = self._follow_up(alarm)
        if follow_up is not None:
            self._take_one(follow_up[0], where=f"follow-up plan of {alarm.device}", detail={"beyond": follow_up[1]})

    def _take_one(self, alarm: LabAlarm, *, where: str, detail: dict[str, Any] | None = None) -> None:
        """Record what the patient record gets on receipt, find the centre, apply the faults, deliver."""
        device = alarm.device
        settings = self.config.devices[device]
        user = settings.user or alarm.user
        self._record_on_receipt(alarm, user)
        if alarm.event in self.config.limits.record_only_events:
            self.ledger.write("recorded", **alarm.ledger_fields(), event=alarm.event)
            return
        day = self._outside_night(alarm)
        if day is not None:
            self.ledger.write("recorded", **alarm.ledger_fields(), event=alarm.event,
                              reason="outside the wandering plan's night", **day)
            return
        centre = self.config.centre_for(device, alarm.user)
        if centre is None:
            fields = alarm.ledger_fields()
            fields.pop("centre", None)
            self.ledger.write(
                "rejected",
                topic=_short(where),
                **fields,
                reason=f"no centre for device `{device}` (user `{alarm.user}`): no device centre, no route, "
                "no default_centre",
            )
            return
        alarm = dataclasses.replace(alarm, centre=centre)
        if detail:
            self.ledger.write("received", **alarm.ledger_fields(), **detail)
        with self._lock:
            decision = self._plan.decide(self._clock())
            held, self._held = self._held, None
            try:
                if decision.drop:
                    assert decision.reason is not None
                    self.ledger.write(decision.reason, **alarm.ledger_fields(), delay_ms=0)
                    return
                self._remember(alarm)
                if decision.hold_for_reorder and held is None:
                    token = next(self._tokens)
                    self._held = _Held(alarm, decision, token)
                    self.ledger.write("reorder", **alarm.ledger_fields(), delay_ms=0)
                    assert self._scheduler is not None
                    self._scheduler.after(NS, lambda: self._release_held(token))
                    return
                self._dispatch(alarm, decision)
            finally:
                if held is not None:
                    self._dispatch(held.alarm, held.decision)

    def _release_held(self, token: int) -> None:
        with self._lock:
            if self._held is not None and self._held.token == token:
                held, self._held = self._held, None
                self._dispatch(held.alarm, held.decision)

    def _dispatch(self, alarm: LabAlarm, decision: Decision) -> None:
        if not decision.extra_delay_ns:
            self._send(alarm, decision)
            return
        line = alarm.ledger_fields()
        if self._pending_delayed >= self.config.limits.pending_delayed:
            self.ledger.write(
                "rejected", **line, reason=f"lab overloaded: {self._pending_delayed} alarms already held for a delay"
            )
            return
        self._pending_delayed += 1
        self.ledger.write("delay", **line, delay_ms=decision.extra_delay_ns / 1e6)
        assert self._scheduler is not None
        self._scheduler.after(decision.extra_delay_ns, lambda: self._send_delayed(alarm, decision))

    def _send_delayed(self, alarm: LabAlarm, decision: Decision) -> None:
        with self._lock:
            self._pending_delayed -= 1
        self._send(alarm, decision)

    def _send(self, alarm: LabAlarm, decision: Decision) -> None:
        line = {**alarm.ledger_fields(), "delay_ms": decision.extra_delay_ns / 1e6}
        for copy in range(decision.copies):
            via = self._deliver(alarm)
            if via is not None:
                self.ledger.write("routed" if copy == 0 else "dup", **line, **({"via": via} if via != "mqtt" else {}))

    def _deliver(self, alarm: LabAlarm) -> str | None:
        """Hand one copy to the centre's protocol; its name, or None (with a ledger line) when it failed."""
        egress = self._egress.get(alarm.centre)
        if egress is None:
            topic = self.config.topic("centre_alarm", centre=alarm.centre, device=alarm.device)
            if alarm.readings is not None or alarm.measured is not None:
                return "mqtt" if self._publish_bytes(topic, alarm.routed_bytes(utc_text()), alarm.id) else None
            return "mqtt" if self._publish(topic, alarm.routed(utc_text())) else None
        reason = egress.deliver(alarm)
        if reason is not None:
            self.ledger.write("delivery_failed", **alarm.ledger_fields(), via=egress.via, reason=reason)
            return None
        return egress.via

    def _on_delivery(self, alarm: LabAlarm, result: DeliveryResult) -> None:
        """A DC-09 or SCAIP centre answered (or did not): ledger, device ack, patient record."""
        try:
            egress = self._egress.get(alarm.centre)
            via = egress.via if egress is not None else "?"
            line = {
                **alarm.ledger_fields(),
                "via": via,
                "reply": result.reply,
                "attempts": result.attempts,
                **result.detail,
            }
            if result.round_trip_ms is not None:
                line["rtt_ms"] = round(result.round_trip_ms, 3)
            if not result.ok:
                self.ledger.write("delivery_failed", **line, reason=result.error or "no answer")
                return
            self.ledger.write("centre_reply", **line)
            route = self._route_of(alarm.id, alarm.device)
            with self._lock:
                if route is not None:
                    if route.answered:
                        return
                    route.answered = True
            if alarm.id.startswith("lab-"):
                return
            if alarm.ingress == "mqtt" and alarm.cid and self.config.delivery_for(alarm.centre).ack_device:
                self._ack_device(alarm, "received")
            self._record_handled(alarm, operator=f"centre-{alarm.centre}", via=via)
        except Exception:
            log.exception("handling a centre's answer failed")

    def _ack_device(self, alarm: LabAlarm, action: str) -> None:
        with self._lock:
            if self._plan.in_outage(self._clock()):
                self.ledger.write("outage", kind="ack", **alarm.ledger_fields(), delay_ms=0)
                return
        assert alarm.cid is not None
        out = DeviceAck(cid=alarm.cid, centre=alarm.centre, action=action, sent=utc_text())
        if self._publish(self.config.topic("device_ack", device=alarm.device, centre=alarm.centre), out):
            self.ledger.write("ack", **alarm.ledger_fields(), delay_ms=0)

    # ---------------------------------------------------------------- acks -> devices

    def _on_centre_ack(self, m: re.Match[str], msg: Message) -> None:
        try:
            ack = decode(msg.payload, CentreAck)
        except ProtocolError as e:
            self._reject(msg.topic, f"centre ack: {e.reason}")
            return
        centre = m.group("centre")
        strict = self.config.validate_messages
        if ack.centre != centre and strict:
            self._reject(msg.topic, f"payload centre `{ack.centre}` is not the topic's centre", cid=ack.cid)
            return
        route = self._route_of(ack.cid, ack.device)
        if route is None:
            self._reject(msg.topic, "ack for a cid this lab has not routed (or no longer remembers)", cid=ack.cid)
            return
        alarm = route.alarm
        if alarm.centre != centre:
            if strict:
                self._reject(
                    msg.topic, f"ack from centre `{centre}` for an alarm routed to another centre", cid=ack.cid
                )
                return
            self.ledger.write(
                "unvalidated",
                topic=_short(msg.topic),
                cid=ack.cid,
                reason=f"ack from centre `{centre}` for an alarm routed to `{alarm.centre}`",
            )
        with self._lock:
            first = not route.answered
            route.answered = True
        if alarm.ingress in ("mqtt", "lab") and alarm.cid is not None:  # a DC-09/SCAIP device had its ACK/mrs
            self._ack_device(alarm, ack.action)
        elif not alarm.id.startswith("lab-"):
            self.ledger.write("centre_ack", **alarm.ledger_fields(), ack_action=ack.action, operator=ack.operator)
        if first and not alarm.id.startswith("lab-"):
            self._record_handled(alarm, operator=ack.operator or f"centre-{centre}", via="mqtt", action=ack.action)

    # ---------------------------------------------------------------- control

    def _on_control(self, m: re.Match[str], msg: Message) -> None:
        try:
            ctl = decode(msg.payload, LabControl)
        except ProtocolError as e:
            self._reject(msg.topic, f"control message: {e.reason}")
            return
        try:
            spec = parse_faults(ctl.faults, "control message")
        except InputError as e:
            self._reject(msg.topic, str(e), id=ctl.id)
            self._notify({"event": "faults_rejected", "error": str(e), "id": ctl.id})
            return
        self.set_faults(spec, request_id=ctl.id)

    def set_faults(self, spec: FaultSpec, request_id: Any = None) -> None:
        """Replace the active faults; the new outage window counts from now."""
        with self._lock:
            self._spec = spec
            self._plan = FaultPlan(spec, start_ns=self._clock())
            self._push_plan = FaultPlan(spec, start_ns=self._clock())
            self.ledger.write("faults", spec=str(spec), id=request_id)
            self._announce_outage(self._plan)
        self._notify({"event": "faults", "spec": str(spec), "id": request_id})
