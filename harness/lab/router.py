"""The reference lab's alarm-routing platform: MQTT in, faults applied, MQTT out, a JSONL ledger.

Threads: paho's network thread runs the message handlers; one scheduler thread runs what is due
later (delayed alarms, reorder releases, supervision deadlines). Shared state is under one lock.
Supervision alarms are the lab's own and are not subject to faults; acks are only subject to outages.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness.errors import InputError, TargetError
from harness.lab.config import LabConfig
from harness.lab.faults import Decision, FaultPlan, FaultSpec, parse_faults
from harness.transports.tcp import no_delay

__all__ = ["Ledger", "Router", "Scheduler", "utc_now"]

log = logging.getLogger("harness.lab.router")

NS = 1_000_000_000


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        line: dict[str, Any] = {"t": utc_now(), "action": action}
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

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
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


def _topic_filter(template: str, site: str) -> str:
    return template.replace("{site}", site).replace("{device}", "+").replace("{centre}", "+")


@dataclass(slots=True)
class _Supervised:
    interval_ns: int
    last_ns: int
    failed: bool = False
    generation: int = 0
    counter: int = 0
    user: str | None = None


@dataclass(slots=True)
class _Held:
    alarm: dict[str, Any]
    device: str
    decision: Decision
    token: int


@dataclass(slots=True)
class _Subscribed:
    event: threading.Event = field(default_factory=threading.Event)
    pending: set[int] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)


class Router:
    """Connects to the broker, routes events to centres, relays acks, supervises heartbeats."""

    def __init__(
        self,
        config: LabConfig,
        broker_url: str,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
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
        self._cid_device: OrderedDict[str, str] = OrderedDict()
        self._scheduler: Scheduler | None = None
        self._subscribed = _Subscribed()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        site = config.site
        t = config.topics
        self._routes: list[tuple[re.Pattern[str], Callable[[re.Match[str], bytes], None]]] = [
            (_topic_regex(t.event, site), self._on_event),
            (_topic_regex(t.heartbeat, site), self._on_heartbeat),
            (_topic_regex(t.centre_ack, site), self._on_centre_ack),
            (_topic_regex(t.control, site), self._on_control),
        ]
        self._filters = [_topic_filter(x, site) for x in (t.event, t.heartbeat, t.centre_ack, t.control)]
        v5 = config.broker.mqtt_version == "5"
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"vtlab-lab-{site}-{id(self):x}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ---------------------------------------------------------------- lifecycle

    @property
    def faults(self) -> FaultSpec:
        return self._spec

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, and start routing (the outage clock starts now)."""
        url = urlparse(self.broker_url)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise InputError(
                f"`{self.broker_url}` is not a broker URL",
                place="broker",
                fix="write mqtt://host:port or mqtts://host:port",
            )
        tls = self.config.broker.tls
        if url.scheme == "mqtts":
            if tls is None:
                self._client.tls_set()
            else:
                self._client.tls_set(
                    ca_certs=str(tls.ca),
                    certfile=str(tls.client_cert) if tls.client_cert else None,
                    keyfile=str(tls.client_key) if tls.client_key else None,
                )
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        self._scheduler = Scheduler(self._clock)
        self._plan.start(self._clock())
        self.ledger.write("faults", spec=str(self._spec))
        try:
            self._client.connect(url.hostname, port, keepalive=30)
            no_delay(self._client.socket())
        except OSError as e:
            raise TargetError(
                f"cannot connect to the broker at {self.broker_url}: {e}",
                fix="check the broker",
            ) from e
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        if not self._subscribed.event.wait(timeout=max(0.0, deadline - time.monotonic())):
            self.stop()
            raise TargetError(
                f"the lab router could not connect and subscribe at {self.broker_url} within {timeout_s:g}s"
                + (f": {self._connect_error}" if self._connect_error else ""),
                fix="check the broker URL, TLS files and ACL",
            )
        if self._connect_error is not None:
            self.stop()
            raise TargetError(
                f"the broker at {self.broker_url} refused the lab router: {self._connect_error}",
                fix="check the MQTT version, TLS files, users and ACL of the broker",
            )
        if self._subscribed.refused:
            self.stop()
            raise TargetError(
                "the broker refused the lab's subscriptions: " + ", ".join(self._subscribed.refused),
                fix="allow the lab client to subscribe to these topics in the broker ACL",
            )
        self._plan.start(self._clock())

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
        self.ledger.close()

    # ---------------------------------------------------------------- paho callbacks

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            self._connect_error = f"CONNACK {rc}"
            self._subscribed.event.set()  # stop waiting: start() reports the refusal
            return
        self._connected.set()
        result, mid = client.subscribe([(f, 1) for f in self._filters])
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._subscribed.pending.add(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        for f, rc in zip(self._filters, rcs, strict=False):
            if rc.is_failure:
                self._subscribed.refused.append(f"{f} ({rc})")
        self._subscribed.pending.discard(mid)
        self._subscribed.event.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            for pattern, handler in self._routes:
                m = pattern.match(msg.topic)
                if m:
                    handler(m, bytes(msg.payload))
                    return
        except Exception as e:  # bad input from the network must never stop the lab
            log.exception("handler failed for %s", msg.topic)
            self.ledger.write("rejected", topic=msg.topic, reason=f"internal error: {e!r}")

    # ---------------------------------------------------------------- helpers

    def _parse(self, topic_match: re.Match[str], payload: bytes, required: tuple[str, ...]) -> dict[str, Any] | None:
        topic = topic_match.string
        try:
            msg = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self.ledger.write("rejected", topic=topic, reason=f"not JSON: {e}")
            return None
        if not isinstance(msg, dict):
            self.ledger.write("rejected", topic=topic, reason="payload is not a JSON object")
            return None
        missing = [k for k in required if not isinstance(msg.get(k), str) or not msg.get(k)]
        if missing:
            self.ledger.write(
                "rejected",
                topic=topic,
                cid=msg.get("cid"),
                reason="missing or empty field(s): " + ", ".join(missing),
            )
            return None
        return msg

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        self._client.publish(topic, json.dumps(payload, ensure_ascii=False), qos=1, retain=False)

    def _remember(self, cid: str, device: str) -> None:
        self._cid_device[cid] = device
        while len(self._cid_device) > 100_000:
            self._cid_device.popitem(last=False)

    # ---------------------------------------------------------------- events -> centres

    def _on_event(self, m: re.Match[str], payload: bytes) -> None:
        msg = self._parse(m, payload, ("cid",))
        if msg is None:
            return
        device = m.groupdict().get("device") or msg.get("device")
        cid = str(msg["cid"])
        if not isinstance(device, str) or not device:
            self.ledger.write(
                "rejected",
                topic=m.string,
                cid=cid,
                reason="no device in topic or payload",
            )
            return
        user = msg.get("user") if isinstance(msg.get("user"), str) else None
        centre = self.config.centre_for(device, user)
        if centre is None:
            self.ledger.write(
                "rejected",
                topic=m.string,
                cid=cid,
                device=device,
                reason="no centre: device, user and default unknown",
            )
            return
        alarm = dict(msg)
        alarm["centre"] = centre
        with self._lock:
            decision = self._plan.decide(self._clock())
            held, self._held = self._held, None
            try:
                if decision.drop:
                    assert decision.reason is not None
                    self.ledger.write(
                        decision.reason,
                        cid=cid,
                        device=device,
                        centre=centre,
                        delay_ms=0,
                    )
                    return
                self._remember(cid, device)
                if decision.hold_for_reorder and held is None:
                    token = next(self._tokens)
                    self._held = _Held(alarm, device, decision, token)
                    self.ledger.write("reorder", cid=cid, device=device, centre=centre, delay_ms=0)
                    assert self._scheduler is not None
                    self._scheduler.after(NS, lambda: self._release_held(token))
                    return
                self._dispatch(alarm, device, decision)
            finally:
                if held is not None:
                    self._dispatch(held.alarm, held.device, held.decision)

    def _release_held(self, token: int) -> None:
        with self._lock:
            if self._held is not None and self._held.token == token:
                held, self._held = self._held, None
                self._dispatch(held.alarm, held.device, held.decision)

    def _dispatch(self, alarm: dict[str, Any], device: str, decision: Decision) -> None:
        cid = str(alarm["cid"])
        delay_ms = decision.extra_delay_ns / 1e6
        if decision.extra_delay_ns:
            self.ledger.write(
                "delay",
                cid=cid,
                device=device,
                centre=alarm["centre"],
                delay_ms=delay_ms,
            )
            assert self._scheduler is not None
            self._scheduler.after(decision.extra_delay_ns, lambda: self._send(alarm, device, decision))
        else:
            self._send(alarm, device, decision)

    def _send(self, alarm: dict[str, Any], device: str, decision: Decision) -> None:
        out = dict(alarm)
        out["routed"] = utc_now()
        topic = self.config.topic("centre_alarm", centre=str(out["centre"]), device=device)
        delay_ms = decision.extra_delay_ns / 1e6
        self._publish(topic, out)
        self.ledger.write(
            "routed",
            cid=out["cid"],
            device=device,
            centre=out["centre"],
            delay_ms=delay_ms,
        )
        for _ in range(decision.copies - 1):
            self._publish(topic, out)
            self.ledger.write(
                "dup",
                cid=out["cid"],
                device=device,
                centre=out["centre"],
                delay_ms=delay_ms,
            )

    # ---------------------------------------------------------------- acks -> devices

    def _on_centre_ack(self, m: re.Match[str], payload: bytes) -> None:
        msg = self._parse(m, payload, ("cid",))
        if msg is None:
            return
        cid = str(msg["cid"])
        centre = m.groupdict().get("centre") or msg.get("centre")
        device = msg.get("device") if isinstance(msg.get("device"), str) and msg.get("device") else None
        device = device or self._cid_device.get(cid)
        if not device:
            self.ledger.write(
                "rejected",
                topic=m.string,
                cid=cid,
                reason="ack for an unknown cid and no device field",
            )
            return
        with self._lock:
            if self._plan.in_outage(self._clock()):
                self.ledger.write(
                    "outage",
                    kind="ack",
                    cid=cid,
                    device=device,
                    centre=centre,
                    delay_ms=0,
                )
                return
        ack = {
            "v": 1,
            "cid": cid,
            "centre": centre,
            "action": msg.get("action", "acknowledged"),
            "sent": utc_now(),
        }
        self._publish(self.config.topic("device_ack", device=device, centre=str(centre)), ack)
        self.ledger.write("ack", cid=cid, device=device, centre=centre, delay_ms=0)

    # ---------------------------------------------------------------- supervision

    def _on_heartbeat(self, m: re.Match[str], payload: bytes) -> None:
        msg = self._parse(m, payload, ())
        if msg is None:
            return
        device = m.groupdict().get("device") or msg.get("device")
        if not isinstance(device, str) or not device:
            self.ledger.write("rejected", topic=m.string, reason="heartbeat without device")
            return
        if not self.config.supervision.enabled:
            return
        settings = self.config.devices.get(device)
        interval_s: Any = settings.heartbeat_interval_s if settings and settings.heartbeat_interval_s else None
        interval_s = interval_s or msg.get("interval_s")
        if not isinstance(interval_s, int | float) or isinstance(interval_s, bool) or interval_s <= 0:
            self.ledger.write(
                "rejected",
                topic=m.string,
                device=device,
                reason="heartbeat without a positive interval_s",
            )
            return
        now = self._clock()
        with self._lock:
            state = self._supervised.get(device)
            if state is None:
                state = _Supervised(interval_ns=int(interval_s * NS), last_ns=now)
                self._supervised[device] = state
            state.interval_ns = int(interval_s * NS)
            state.last_ns = now
            state.generation += 1
            state.user = (settings.user if settings else None) or msg.get("user") or state.user
            if state.failed:
                state.failed = False
                self._raise_supervision(device, state, restored=True)
            generation = state.generation
            due = now + self.config.supervision.misses * state.interval_ns
            assert self._scheduler is not None
            self._scheduler.at(due, lambda: self._check_supervision(device, generation))

    def _check_supervision(self, device: str, generation: int) -> None:
        with self._lock:
            state = self._supervised.get(device)
            if state is None or state.generation != generation or state.failed:
                return
            state.failed = True
            self._raise_supervision(device, state, restored=False)

    def _raise_supervision(self, device: str, state: _Supervised, *, restored: bool) -> None:
        state.counter += 1
        cid = f"lab-sup-{device}-{state.counter}"
        centre = self.config.centre_for(device, state.user)
        action = "supervision_restored" if restored else "supervision_failure"
        if centre is None:
            self.ledger.write(
                "rejected",
                cid=cid,
                device=device,
                reason=f"{action}: no centre for device",
            )
            return
        now = utc_now()
        alarm: dict[str, Any] = {
            "v": 1,
            "cid": cid,
            "device": device,
            "event": action,
            "code": "356",
            "qualifier": "3" if restored else "1",
            "priority": 2,
            "sent": now,
            "centre": centre,
            "routed": now,
        }
        if state.user:
            alarm["user"] = state.user
        self._remember(cid, device)
        self._publish(self.config.topic("centre_alarm", centre=centre, device=device), alarm)
        self.ledger.write(action, cid=cid, device=device, centre=centre, delay_ms=0)

    # ---------------------------------------------------------------- control

    def _on_control(self, m: re.Match[str], payload: bytes) -> None:
        msg = self._parse(m, payload, ())
        if msg is None:
            return
        if "faults" not in msg or not isinstance(msg["faults"], str):
            self.ledger.write(
                "rejected",
                topic=m.string,
                reason="control message without a `faults` string",
            )
            return
        try:
            spec = parse_faults(msg["faults"], "control message")
        except InputError as e:
            self.ledger.write("rejected", topic=m.string, reason=str(e), id=msg.get("id"))
            self._notify({"event": "faults_rejected", "error": str(e), "id": msg.get("id")})
            return
        self.set_faults(spec, request_id=msg.get("id"))

    def set_faults(self, spec: FaultSpec, request_id: Any = None) -> None:
        """Replace the active faults; the new outage window counts from now."""
        with self._lock:
            self._spec = spec
            self._plan = FaultPlan(spec, start_ns=self._clock())
        self.ledger.write("faults", spec=str(spec), id=request_id)
        self._notify({"event": "faults", "spec": str(spec), "id": request_id})
