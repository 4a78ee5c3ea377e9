"""The reference lab's alarm-routing platform: alarms in over MQTT, SIA DC-09 and SCAIP; faults applied;
delivery to each centre in the centre's protocol (MQTT, DC-09, SCAIP); a JSONL ledger; FHIR pushes to the
patient record.

Threads: the MqttClient's network thread runs the MQTT handlers; one asyncio loop thread (LoopThread) runs
the DC-09 and SCAIP receivers and the DC-09/SCAIP deliveries; one scheduler thread runs what is due later
(delayed alarms, reorder releases, supervision deadlines); one worker pushes FHIR. Shared state is under
one lock. Supervision alarms are the lab's own and are not subject to faults; acks are only subject to
outages.

Every payload is decoded with its codec (wire_json, DC-09, SCAIP) and refused with a ledger line `rejected`
and a reason when it is not valid; nothing from an unknown device is routed; every per-device table is
bounded (LabConfig.limits), so hostile input cannot grow the lab's memory. With `validate_messages` off (the
insecure profile) an event whose payload names another device than its topic, and an ack from a centre for
an alarm routed to another, pass through (ledger line `unvalidated`), as on a careless platform.

Ledger lines about an alarm carry `device`, `centre`, and how the harness finds the alarm again: `cid`
(the device's, MQTT) or `lab_cid` (the lab's id for an alarm that came without one), and `key`
`<device>:<code>:<zone>` whenever the alarm has a Contact ID zone (DC-09 and SCAIP always do).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.clock import now_ns, utc_text
from harness.errors import InputError, TargetError
from harness.faults import Decision, FaultPlan, FaultSpec, parse_faults
from harness.lab.alarm import LabAlarm
from harness.lab.config import LabConfig
from harness.lab.egress import DeliveryResult, Egress, make_egress
from harness.lab.epj_push import EpjPusher, Record, utc
from harness.lab.gateway import LabGateway
from harness.lab.ingress import AlarmDraft, Dc09Ingress, ScaipIngress
from harness.links.gateway import GatewayEvent, readings_json
from harness.protocols import vkp
from harness.protocols.base import ProtocolError
from harness.protocols.wire_json import (
    CentreAck,
    DeviceAck,
    DeviceEvent,
    Heartbeat,
    LabControl,
    WireMessage,
    decode,
    encode,
)
from harness.transports.base import Message
from harness.transports.loop import LoopThread
from harness.transports.mqtt import MqttClient, MqttSettings

__all__ = ["Ledger", "Router", "Scheduler", "utc_now"]

log = logging.getLogger("harness.lab.router")

NS = 1_000_000_000
LEDGER_TEXT = 160
"""Longest peer-supplied text (topic, reason) copied into a ledger line."""

utc_now = utc_text


def _short(text: str, limit: int = LEDGER_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


class Ledger:
    """Append-only JSONL, one line per fault applied and per alarm routed, flushed per line."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8")

    def write(self, action: str, **fields: Any) -> None:
        line: dict[str, Any] = {"t": utc_text(), "action": action}
        line.update(fields)
        text = json.dumps(line, ensure_ascii=False, default=str)
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.write(text + "\n")
                self._fh.flush()
        log.debug("ledger %s", text)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()


class Scheduler:
    """Run callables at monotonic times (ns) on one thread; waits on a condition, never polls."""

    def __init__(self, clock: Callable[[], int] = now_ns) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="lab-scheduler", daemon=True)
        self._thread.start()

    def at(self, due_ns: int, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due_ns, next(self._seq), fn))
            self._cond.notify()

    def after(self, delay_ns: int, fn: Callable[[], None]) -> None:
        self.at(self._clock() + delay_ns, fn)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait_ns = self._heap[0][0] - self._clock()
                        if wait_ns <= 0:
                            break
                        self._cond.wait(timeout=wait_ns / NS)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # a scheduled task must never kill the lab
                log.exception("scheduled task failed")


def _topic_regex(template: str, site: str) -> re.Pattern[str]:
    pattern = re.escape(template.replace("{site}", site))
    pattern = pattern.replace(r"\{device\}", r"(?P<device>[^/]+)").replace(r"\{centre\}", r"(?P<centre>[^/]+)")
    return re.compile(f"^{pattern}$")


@dataclass(slots=True)
class _Supervised:
    interval_ns: int
    due_ns: int
    failed: bool = False
    timer_pending: bool = False
    counter: int = 0
    user: str | None = None


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


class Router:
    """Takes alarms in (MQTT, DC-09, SCAIP), routes them to centres in each centre's protocol, relays acks,
    supervises heartbeats, records in the patient record."""

    def __init__(
        self,
        config: LabConfig,
        broker_url: str,
        *,
        clock: Callable[[], int] = now_ns,
        notify: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
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
                self._epj = EpjPusher(self.config.epj, self.ledger.write, limit=self.config.limits.pending_pushes)
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
            readings = readings_json(event.readings) if event.readings is not None else None
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

    def take_heartbeat(self, device: str, via: str) -> None:
        """A DC-09 message or SCAIP heartbeat: the device's configured interval applies."""
        interval_s = self.config.devices[device].heartbeat_interval_s
        if interval_s is None:
            return
        self._heartbeat(device, interval_s, None)

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
        )
        self._take(alarm, where=msg.topic)

    def _take(self, alarm: LabAlarm, *, where: str, detail: dict[str, Any] | None = None) -> None:
        """Record what the patient record gets on receipt, find the centre, apply the faults, deliver."""
        device = alarm.device
        settings = self.config.devices[device]
        user = settings.user or alarm.user
        self._record_on_receipt(alarm, user)
        if alarm.event in self.config.limits.record_only_events:
            self.ledger.write("recorded", **alarm.ledger_fields(), event=alarm.event)
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

    # ---------------------------------------------------------------- supervision

    def _on_heartbeat(self, m: re.Match[str], msg: Message) -> None:
        try:
            hb = decode(msg.payload, Heartbeat)
        except ProtocolError as e:
            self._reject(msg.topic, f"heartbeat: {e.reason}")
            return
        device = self._known_device(m, msg, hb.device)
        if device is None or not self.config.supervision.enabled:
            return
        settings = self.config.devices[device]
        interval_s = settings.heartbeat_interval_s or hb.interval_s
        lo, hi = self.config.limits.heartbeat_interval_s
        if not lo <= interval_s <= hi:
            self._reject(msg.topic, f"heartbeat interval_s {interval_s:g} is outside {lo:g}..{hi:g}", device=device)
            return
        self._heartbeat(device, interval_s, hb.user)

    def _heartbeat(self, device: str, interval_s: float, user: str | None) -> None:
        if not self.config.supervision.enabled:
            return
        settings = self.config.devices[device]
        now = self._clock()
        with self._lock:
            state = self._supervised.get(device)
            if state is None:
                state = self._supervised[device] = _Supervised(interval_ns=0, due_ns=0)
            state.interval_ns = int(interval_s * NS)
            state.due_ns = now + self.config.supervision.misses * state.interval_ns
            state.user = settings.user or user or state.user
            if state.failed:
                state.failed = False
                self._raise_supervision(device, state, restored=True)
            if not state.timer_pending:  # one timer per device, however many heartbeats arrive
                state.timer_pending = True
                self._schedule_check(device, state.due_ns)

    def _schedule_check(self, device: str, due_ns: int) -> None:
        assert self._scheduler is not None
        self._scheduler.at(due_ns, lambda: self._check_supervision(device))

    def _check_supervision(self, device: str) -> None:
        with self._lock:
            state = self._supervised.get(device)
            if state is None:
                return
            if self._clock() < state.due_ns:  # a heartbeat came in since: wait for the new deadline
                self._schedule_check(device, state.due_ns)
                return
            state.timer_pending = False
            if not state.failed:
                state.failed = True
                self._raise_supervision(device, state, restored=False)

    def _raise_supervision(self, device: str, state: _Supervised, *, restored: bool) -> None:
        state.counter += 1
        cid = f"lab-sup-{device}-{state.counter}"
        centre = self.config.centre_for(device, state.user)
        action = "supervision_restored" if restored else "supervision_failure"
        if centre is None:
            self.ledger.write("rejected", cid=cid, device=device, reason=f"{action}: no centre for device")
            return
        now = utc_text()
        alarm = LabAlarm(
            id=cid,
            ingress="lab",
            device=device,
            centre=centre,
            code="356",
            qualifier="3" if restored else "1",
            event=action,
            priority=2,
            received_epoch_s=time.time(),
            zone="000",
            partition=self.config.mapping.partition,
            cid=cid,
            user=state.user,
            sent=now,
        )
        self._remember(alarm)
        via = self._deliver(alarm)
        if via is not None:
            self.ledger.write(action, **alarm.ledger_fields(), delay_ms=0, **({"via": via} if via != "mqtt" else {}))
        if not restored:
            self._record_supervision(alarm)

    # ---------------------------------------------------------------- patient record (FHIR via VKP)

    def _push(self, record: Record) -> None:
        """Apply the push faults when the EPJ target says so, then queue the push."""
        epj = self._epj
        if epj is None:
            return
        if epj.target.faults:
            with self._lock:
                decision = self._push_plan.decide(self._clock())
            if decision.drop:
                self.ledger.write(f"epj_{decision.reason}", kind=record.kind, device=record.device, **record.fields)
                return
            if decision.extra_delay_ns:
                self.ledger.write(
                    "epj_delay",
                    kind=record.kind,
                    device=record.device,
                    delay_ms=decision.extra_delay_ns / 1e6,
                    **record.fields,
                )
                assert self._scheduler is not None
                self._scheduler.after(decision.extra_delay_ns, lambda: epj.submit(record))
                return
        epj.submit(record)

    def _record_on_receipt(self, alarm: LabAlarm, user: str | None) -> None:
        epj = self._epj
        if epj is None:
            return
        at = utc(alarm.received_epoch_s)
        t = epj.target
        ids = _record_ids(alarm)
        kind = t.bundle_type
        if alarm.code == "302" and alarm.qualifier == "1" and alarm.event != "dose_missed" and t.push_low_battery:
            level = alarm.battery
            self._push(
                Record(
                    "low_battery",
                    alarm.device,
                    user,
                    lambda p, d, c: vkp.low_battery(p, d, at, level_percent=level, type=kind, codes=c),
                    **ids,
                )
            )
        elif alarm.event == "dose_missed" and t.push_doses:
            self._push(
                Record(
                    "dose_missed",
                    alarm.device,
                    user,
                    lambda p, d, c: vkp.missed_dose(p, d, at, type=kind, codes=c),
                    **ids,
                )
            )
        elif alarm.event == "dose_taken" and t.push_doses:
            self._push(
                Record("dose_taken", alarm.device, user, lambda p, d, c: vkp.taken_dose(p, d, at, type=kind), **ids)
            )

    def _record_handled(self, alarm: LabAlarm, *, operator: str, via: str, action: str = "acknowledged") -> None:
        epj = self._epj
        if epj is None or not epj.target.push_handled or alarm.event in ("dose_missed", "dose_taken"):
            return
        if alarm.code == "302":
            return  # low battery is recorded on receipt (DetectedIssue 1.17), not as a handled alarm
        vkp_code = epj.alarm_code(alarm.code)
        if vkp_code is None:
            self.ledger.write(
                "epj_skipped",
                kind="handled_alarm",
                **_record_ids(alarm),
                device=alarm.device,
                reason=f"no VKP alert code for Contact ID {alarm.code} (epj.alarm_codes)",
            )
            return
        raised = utc(alarm.received_epoch_s)
        handled = utc(time.time())
        kind = epj.target.bundle_type
        note = f"Alarm {alarm.event} ({alarm.code}) {action} ved {alarm.centre} av {operator} ({via})"
        op = vkp.Ident(vkp.OPERATOR_SYSTEM, operator)
        self._push(
            Record(
                "handled_alarm",
                alarm.device,
                alarm.user or self.config.devices[alarm.device].user,
                lambda p, d, c: vkp.handled_alarm(p, d, vkp_code, raised, handled, op, note, type=kind, codes=c),
                operator=operator,
                **_record_ids(alarm),
            )
        )

    def _record_supervision(self, alarm: LabAlarm) -> None:
        epj = self._epj
        if epj is None or not epj.target.push_supervision:
            return
        code = epj.target.supervision_code
        if code is None:
            self.ledger.write(
                "epj_skipped",
                kind="supervision_loss",
                device=alarm.device,
                cid=alarm.id,
                reason="no VKP alert code for loss of supervision (epj.supervision_code)",
            )
            return
        at = utc(alarm.received_epoch_s)
        kind = epj.target.bundle_type
        self._push(
            Record(
                "supervision_loss",
                alarm.device,
                alarm.user,
                lambda p, d, c: vkp.supervision_loss(p, d, at, code=code, type=kind, codes=c),
                **_record_ids(alarm),
            )
        )

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


def _record_ids(alarm: LabAlarm) -> dict[str, Any]:
    """How an `epj_*` ledger line names the alarm it records (cid / lab_cid, key)."""
    fields = alarm.ledger_fields()
    return {k: fields[k] for k in ("cid", "lab_cid", "key") if k in fields}
