"""The reference lab's alarm-routing platform: MQTT in, faults applied, MQTT out, a JSONL ledger.

Threads: the MqttClient's network thread runs the message handlers; one scheduler thread runs what is
due later (delayed alarms, reorder releases, supervision deadlines). Shared state is under one lock.
Supervision alarms are the lab's own and are not subject to faults; acks are only subject to outages.

Every payload is decoded with the wire codec (harness.protocols.wire_json) and refused with a ledger
line `rejected` and a reason when it is not valid; nothing from an unknown device is routed; every
per-device table is bounded (LabConfig.limits), so hostile input cannot grow the lab's memory.
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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.clock import now_ns, utc_text
from harness.errors import InputError, TargetError
from harness.faults import Decision, FaultPlan, FaultSpec, parse_faults
from harness.lab.config import LabConfig
from harness.protocols.base import ProtocolError
from harness.protocols.wire_json import (
    CentreAck,
    DeviceAck,
    DeviceEvent,
    Heartbeat,
    LabControl,
    RoutedAlarm,
    WireMessage,
    decode,
    encode,
)
from harness.transports.base import Message
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
    alarm: RoutedAlarm
    decision: Decision
    token: int


class Router:
    """Connects to the broker, routes events to centres, relays acks, supervises heartbeats."""

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
        self._held: _Held | None = None
        self._tokens = itertools.count(1)
        self._supervised: dict[str, _Supervised] = {}
        self._routed: dict[str, OrderedDict[str, str]] = {}  # device -> cid -> centre, bounded per device
        self._pending_delayed = 0
        self._scheduler: Scheduler | None = None
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
        """Connect, subscribe, and start routing (the outage clock starts now)."""
        self._scheduler = Scheduler(self._clock)
        self.ledger.write("faults", spec=str(self._spec))
        try:
            self._client.connect()
            self._client.subscribe_many(self._filters, self._on_message)
        except TargetError as e:
            self.stop()
            raise TargetError(f"the lab router could not start at {self.broker_url}: {e.problem}", fix=e.fix) from None
        with self._lock:
            self._plan.start(self._clock())
            self._announce_outage(self._plan)

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
        if self._scheduler is not None:
            self._scheduler.stop()
        try:
            self._client.close()
        finally:
            self.ledger.close()

    def _on_state(self, state: str, detail: str) -> None:
        self.ledger.write("broker_connection", state=state, detail=detail)

    # ---------------------------------------------------------------- dispatch

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

    def _remember(self, cid: str, device: str, centre: str) -> None:
        table = self._routed.setdefault(device, OrderedDict())
        table[cid] = centre
        table.move_to_end(cid)
        while len(table) > self.config.limits.cids_per_device:
            table.popitem(last=False)

    def _routed_to(self, cid: str, device: str | None) -> tuple[str, str] | None:
        """(device, centre) of a routed cid this lab still remembers."""
        with self._lock:
            tables = [(device, self._routed.get(device))] if device else list(self._routed.items())
            for dev, table in tables:
                if table is not None and cid in table:
                    return dev, table[cid]
        return None

    def _known_device(self, m: re.Match[str], msg: Message, payload_device: str) -> str | None:
        """The topic's device when it is this lab's and the payload names the same one; else a ledger line."""
        device = m.group("device")
        if payload_device != device:
            self._reject(msg.topic, f"payload device `{_short(payload_device, 64)}` is not the topic's device")
            return None
        if device not in self.config.devices:
            self._reject(msg.topic, f"unknown device `{_short(device, 64)}`: not in the lab's devices")
            return None
        return device

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
        centre = self.config.centre_for(device, ev.user)
        if centre is None:
            self._reject(
                msg.topic,
                f"no centre for device `{device}` (user `{ev.user}`): no device centre, no route, no default_centre",
                cid=ev.cid,
                device=device,
            )
            return
        fields = {f.name: getattr(ev, f.name) for f in dataclasses.fields(DeviceEvent)}
        alarm = RoutedAlarm(**fields, centre=centre)
        cid = ev.cid
        with self._lock:
            decision = self._plan.decide(self._clock())
            held, self._held = self._held, None
            try:
                if decision.drop:
                    assert decision.reason is not None
                    self.ledger.write(decision.reason, cid=cid, device=device, centre=centre, delay_ms=0)
                    return
                self._remember(cid, device, centre)
                if decision.hold_for_reorder and held is None:
                    token = next(self._tokens)
                    self._held = _Held(alarm, decision, token)
                    self.ledger.write("reorder", cid=cid, device=device, centre=centre, delay_ms=0)
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

    def _dispatch(self, alarm: RoutedAlarm, decision: Decision) -> None:
        if not decision.extra_delay_ns:
            self._send(alarm, decision)
            return
        line = {"cid": alarm.cid, "device": alarm.device, "centre": alarm.centre}
        if self._pending_delayed >= self.config.limits.pending_delayed:
            self.ledger.write(
                "rejected", **line, reason=f"lab overloaded: {self._pending_delayed} alarms already held for a delay"
            )
            return
        self._pending_delayed += 1
        self.ledger.write("delay", **line, delay_ms=decision.extra_delay_ns / 1e6)
        assert self._scheduler is not None
        self._scheduler.after(decision.extra_delay_ns, lambda: self._send_delayed(alarm, decision))

    def _send_delayed(self, alarm: RoutedAlarm, decision: Decision) -> None:
        with self._lock:
            self._pending_delayed -= 1
        self._send(alarm, decision)

    def _send(self, alarm: RoutedAlarm, decision: Decision) -> None:
        assert alarm.centre is not None and alarm.device is not None
        out = dataclasses.replace(alarm, routed=utc_text())
        topic = self.config.topic("centre_alarm", centre=alarm.centre, device=alarm.device)
        line = {
            "cid": out.cid,
            "device": alarm.device,
            "centre": alarm.centre,
            "delay_ms": decision.extra_delay_ns / 1e6,
        }
        for copy in range(decision.copies):
            if self._publish(topic, out):
                self.ledger.write("routed" if copy == 0 else "dup", **line)

    # ---------------------------------------------------------------- acks -> devices

    def _on_centre_ack(self, m: re.Match[str], msg: Message) -> None:
        try:
            ack = decode(msg.payload, CentreAck)
        except ProtocolError as e:
            self._reject(msg.topic, f"centre ack: {e.reason}")
            return
        centre = m.group("centre")
        if ack.centre != centre:
            self._reject(msg.topic, f"payload centre `{ack.centre}` is not the topic's centre", cid=ack.cid)
            return
        known = self._routed_to(ack.cid, ack.device)
        if known is None:
            self._reject(msg.topic, "ack for a cid this lab has not routed (or no longer remembers)", cid=ack.cid)
            return
        device, routed_to = known
        if routed_to != centre:
            self._reject(msg.topic, f"ack from centre `{centre}` for an alarm routed to another centre", cid=ack.cid)
            return
        with self._lock:
            if self._plan.in_outage(self._clock()):
                self.ledger.write("outage", kind="ack", cid=ack.cid, device=device, centre=centre, delay_ms=0)
                return
        out = DeviceAck(cid=ack.cid, centre=centre, action=ack.action, sent=utc_text())
        if self._publish(self.config.topic("device_ack", device=device, centre=centre), out):
            self.ledger.write("ack", cid=ack.cid, device=device, centre=centre, delay_ms=0)

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
        now = self._clock()
        with self._lock:
            state = self._supervised.get(device)
            if state is None:
                state = self._supervised[device] = _Supervised(interval_ns=0, due_ns=0)
            state.interval_ns = int(interval_s * NS)
            state.due_ns = now + self.config.supervision.misses * state.interval_ns
            state.user = settings.user or hb.user or state.user
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
        alarm = RoutedAlarm(
            cid=cid,
            device=device,
            user=state.user,
            event=action,
            code="356",
            qualifier="3" if restored else "1",
            priority=2,
            centre=centre,
            sent=now,
            routed=now,
        )
        self._remember(cid, device, centre)
        if self._publish(self.config.topic("centre_alarm", centre=centre, device=device), alarm):
            self.ledger.write(action, cid=cid, device=device, centre=centre, delay_ms=0)

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
            self.ledger.write("faults", spec=str(spec), id=request_id)
            self._announce_outage(self._plan)
        self._notify({"event": "faults", "spec": str(spec), "id": request_id})
