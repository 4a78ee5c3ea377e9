"""The node: in each locust process that runs devices, one place knows every alarm its devices sent, so an
arrival can be correlated with the alarm it answers (by correlation id over MQTT, by content key over
DC-09 and SCAIP, which carry no cid) and measured from that alarm's *intended* send time (no coordinated
omission). It is also the only writer of the process's evidence lines (`out_dir/node-<pid>.jsonl`), which
`vtlab load` copies into the run's evidence store while the run goes on.

In a distributed run only worker 0 subscribes as the response centres (a broker may allow one connection
per identity), so the node also hands other workers' arrivals, stamped, through the master to the worker
that sent them. All stamps are time.monotonic_ns() of one machine: a latency is always the difference of
two stamps of one clock.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from locust.env import Environment
from locust.runners import WorkerRunner

from harness.clock import utc_text
from harness.errors import TargetError
from harness.load import hist
from harness.load.centres import drop_inherited, start_centre
from harness.load.client import FleetClient
from harness.load.fleet import Job
from harness.load.health import GeneratorHealth, rss_mb
from harness.load.merge import report_final, write_progress
from harness.protocols.base import ProtocolError
from harness.protocols.wire_json import CentreAck, DeviceAck, RoutedAlarm, decode, encode
from harness.transports.base import Message
from harness.transports.mqtt import MqttClient

CONCURRENT_HANDSHAKES = 32
ARRIVALS_MESSAGE = "vtlab_arrivals"
DRAINED_MESSAGE = "vtlab_drained"  # worker -> master: every alarm of mine sent and in, every ack back
FINISH_MESSAGE = "vtlab_finish"  # master -> workers: all are drained, judge and report now
NS = 1_000_000_000
_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""One encoder for every evidence line (json.dumps with options builds a new encoder per call)."""


class LostAlarm(Exception):
    """Reported to locust for an alarm that never arrived in place."""


def _mono_offset_ns() -> int:
    """monotonic - wall (ns), to turn the job's UTC start times into this process's monotonic clock."""
    return time.monotonic_ns() - time.time_ns()


class Sent:
    """One alarm a device of this node sent, and what has become of it so far."""

    __slots__ = (
        "ack_t",
        "acked",
        "arrived",
        "centre",
        "cid",
        "device",
        "early_ack",
        "event",
        "it",
        "key",
        "overdue",
        "seq",
        "spec",
        "storm",
        "t",
        "user",
    )

    def __init__(
        self,
        device: dict[str, str],
        spec: dict[str, Any],
        it: int,
        seq: int,
        t: int,
        storm: bool,
        cid: str = "",
        key: str | None = None,
    ) -> None:
        self.cid = cid
        self.key = key  # DC-09/SCAIP: `<device>:<code>:<zone>`, what survives the trip instead of the cid
        self.device = device["id"]
        self.user = device["user"]
        self.centre = device["centre"]
        self.spec = spec
        self.event = spec["event"]
        self.it = it
        self.seq = seq
        self.t = t
        self.storm = storm
        self.arrived = False
        self.overdue = False
        self.ack_t: int | None = None  # when the probe acknowledged it (start of ack_latency)
        self.acked = False  # the platform's acknowledgement reached the device
        self.early_ack: Message | None = None


class Node:
    """One locust process that runs devices: probes, correlation, histograms, self-monitoring."""

    def __init__(self, env: Environment, job: Job) -> None:
        self.env = env
        self.job = job
        self.offset = _mono_offset_ns()
        self.schedule = job.schedule
        self.t0 = self.mono(job.schedule_start)
        self.connect_t0 = self.mono(job.connect_start)
        self.end_sending = self.mono(job.end_of_sending)
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.name = f"node-{os.getpid()}"
        self._fh = (out / f"{self.name}.jsonl").open("a", encoding="utf-8")
        self._lines: list[str] = []
        self.sent: dict[str, Sent] = {}
        self.alarm_hist = hist.new_histogram()
        self.health = GeneratorHealth(self.t0, self.end_sending)  # schedule lag, loop lag, CPU
        self.counts: Counter[str] = Counter()
        self._arrival_no = 0
        self._slots: Iterator[int] | None = None
        self.probes: list[MqttClient] = []
        self.probe_of: dict[str, MqttClient] = {}  # centre -> its probe's connection (for acknowledgements)
        self.centres: list[Any] = []  # DC-09 / SCAIP centres this node serves (harness.load.centres)
        self.started = False
        self.storm_last_ns: int | None = None
        self.finished = False
        self.finish_now = False  # the master says every worker is drained (a distributed run)
        self.final: dict[str, Any] = {}
        self._greenlets: list[Any] = []
        self._order: list[Sent] = []  # in send order, for the overdue count
        self._passed = 0
        self.overdue = 0
        self._window_lat: list[int] = []  # this second's latencies, for the live line only
        self.connecting = gevent.lock.BoundedSemaphore(CONCURRENT_HANDSHAKES)
        self._forward: list[list[Any]] = []
        self.keyed: dict[str, list[Sent]] = {}  # content key -> its alarms not yet arrived (DC-09, SCAIP)
        self.sent_keys: dict[str, Sent] = {}  # content key -> the last alarm sent with it (duplicates)
        self.slot_of = {d["id"]: i for i, d in enumerate(job.devices)}

    def mono(self, wall_s: float) -> int:
        return round(wall_s * NS) + self.offset

    # --- evidence lines ---------------------------------------------------------------------------
    def line(self, **fields: Any) -> None:
        self._lines.append(_LINE(fields))

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._fh.write("\n".join(lines) + "\n")
            self._fh.flush()

    def observe(self, kind: str, text: str) -> None:
        self.line(k="obs", kind=kind, text=text)

    def match_line(
        self,
        cid: str,
        s: Any,
        step: int,
        metric: str,
        outcome: str,
        *,
        arr: int | None = None,
        lat: int | None = None,
        detail: str | None = None,
    ) -> None:
        """One expectation's result for the evidence (`s`: a Sent, or anything with device, seq and it)."""
        self.line(
            k="match", cid=cid, device=s.device, seq=s.seq, it=s.it, step=step, metric=metric,
            outcome=outcome, arr=arr, lat=lat, d=detail,
        )  # fmt: skip

    def request(self, kind: str, name: str, ms: float, length: int = 0, exception: Exception | None = None) -> None:
        """The same result as a locust request event: the UI and CSV show alarm latency, not MQTT's."""
        self.env.events.request.fire(
            request_type=kind, name=name, response_time=ms, response_length=length, exception=exception, context={}
        )

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def probing(self) -> bool:
        """The one node that subscribes as the response centres: a broker may allow one connection per
        identity (the embedded lab does), so in a distributed run worker 0 probes for every worker and
        forwards other workers' arrivals, stamped, through the master to the worker that sent the alarm."""
        runner = self.env.runner
        return not isinstance(runner, WorkerRunner) or int(getattr(runner, "worker_index", 0) or 0) == 0

    def start(self) -> None:
        self.started = True
        self._greenlets += [gevent.spawn(self._flusher), gevent.spawn(self._monitor)]
        gevent.spawn(self._finisher)
        if not self.probing:
            drop_inherited(self.job.listening)  # worker 0 serves the DC-09 / SCAIP centres
            return
        self._greenlets.append(gevent.spawn(self._forwarder))
        for spec in self.job.listening.values():
            self.centres.append(start_centre(spec, self._centre_arrival, self.observe))
        for centre, probe in self.job.centres.items():
            settings, name = self.job.settings(f"centre-{centre}"), f"probe-{probe}"
            cid = f"vtlab-load-{probe}-{os.getpid()}"
            # a probe that only receives runs on the fleet's connection loop, which reads every packet waiting
            # per wake-up (paho's own loop reads one when nothing of its own is in flight). An acknowledging
            # probe keeps paho's loop: on the fleet's loop it stalled at about 100 alarms/s in the flat-out
            # benchmark (the cause is not yet found; paho's loop, kept busy by its acknowledgements, is not)
            client = (
                MqttClient(settings, name, client_id=cid, on_state=self._probe_state)
                if self.job.acknowledge
                else FleetClient(
                    settings, name, client_id=cid, on_state=self._probe_state, max_delay_s=2, max_inflight=1000
                )
            )
            topic = (
                self.job.topic("device_event", device="+")
                if self.job.direct
                else self.job.topic("centre_alarm", centre=centre)
            )
            try:
                client.connect()
                client.subscribe(topic, self._handler(probe, centre))
            except TargetError as exc:
                self.observe("harness_fault", f"load probe {probe} could not start: {exc}")
                raise
            self.probes.append(client)
            self.probe_of[centre] = client
            if self.job.direct:
                break  # one subscriber sees every device's events

    def _forwarder(self) -> None:
        """Other workers' arrivals, in batches, to the master (which hands them to every worker)."""
        while True:
            gevent.sleep(0.02)
            if self._forward and isinstance(self.env.runner, WorkerRunner):
                batch, self._forward = self._forward, []
                self.env.runner.send_message(ARRIVALS_MESSAGE, {"arrivals": batch})

    def on_forwarded(self, data: dict[str, Any]) -> None:
        """Arrivals another worker's probe received for this worker's alarms (stamped there, same machine)."""
        for probe, centre, topic, payload, arrived_ns, ack_t in data.get("arrivals", []):
            if not payload:
                continue
            body = json.loads(payload)
            if self.mine(body.get("device")) if self.job.keyed else body.get("cid") in self.sent:
                self.on_arrival(probe, centre, Message(topic, payload.encode("utf-8"), int(arrived_ns)), ack_t)

    def _finisher(self) -> None:
        """At the end of the drain, judge what is still out and report, while locust is still running (a
        master that stops thousands of users may quit before a report sent from test_stop arrives). The
        drain ends early once nothing is out: every alarm of the schedule sent and arrived, every
        acknowledgement back. A lone node sees that itself; in a distributed run each worker tells the
        master, which tells them all to finish once every worker is drained (the probing worker serves
        the others until then)."""
        end = self.mono(self.job.end)
        end_sending = self.mono(self.job.end_of_sending)
        alone = not isinstance(self.env.runner, WorkerRunner)
        told = False
        while (wait := end - time.monotonic_ns()) > 0 and not self.finish_now:
            gevent.sleep(min(wait / NS, 0.25))
            if time.monotonic_ns() < end_sending or told or not self.all_sent() or self.outstanding():
                continue
            if alone:
                self.finish_now = True
            else:
                self.env.runner.send_message(DRAINED_MESSAGE, self.name)
                told = True
        report_final(self.env, self.finish(), Path(self.job.out_dir))
        if alone and self.finish_now:  # end locust as its run time would: users stopped, CSV and HTML written
            self.env.runner.quit()

    def all_sent(self) -> bool:
        """Every alarm this node's part of the schedule asks for has left (one behind its schedule, or a
        device that never connected, keeps the drain going)."""
        return len(self.sent) >= self.planned_here

    @functools.cached_property
    def planned_here(self) -> int:
        """Alarms of the schedule this node's devices send (slots dealt round the workers)."""
        slots = range(self.index, len(self.job.devices), max(1, self.job.workers))
        background = sum(1 for slot in slots for _ in self.schedule.device_times(slot))
        return background + sum(1 for slot in slots if self.schedule.storm_slot(slot) is not None)

    def outstanding(self) -> int:
        """Alarms sent that have not arrived, and acknowledgements given that have not reached their device."""
        return sum(1 for s in self.sent.values() if not s.arrived or (s.ack_t is not None and not s.acked))

    def _centre_arrival(self, probe: str, centre: str, alarm: RoutedAlarm, arrived_ns: int, where: str) -> None:
        """An alarm a DC-09 or SCAIP centre read (stamped on its reading greenlet), correlated like any other."""
        self.on_arrival(probe, centre, Message(where, encode(alarm), arrived_ns))

    def _handler(self, probe: str, centre: str) -> Callable[[Message], None]:
        def handle(message: Message) -> None:
            self.on_arrival(probe, centre, message)

        return handle

    def _probe_state(self, state: str, detail: str) -> None:
        self.counts[f"probe_{state}"] += 1
        self.observe("finding" if state == "lost" else "load", f"response-centre probe: {detail}")

    @property
    def index(self) -> int:
        runner = self.env.runner
        return max(0, int(getattr(runner, "worker_index", 0) or 0)) if isinstance(runner, WorkerRunner) else 0

    def mine(self, device: str | None) -> bool:
        """Does this node run `device` (slots are dealt round the workers)?"""
        slot = self.slot_of.get(device or "")
        return slot is not None and slot % max(1, self.job.workers) == self.index

    def next_slot(self) -> int | None:
        if self._slots is None:
            self._slots = iter(range(self.index, len(self.job.devices), max(1, self.job.workers)))
        return next(self._slots, None)

    def _flusher(self) -> None:
        while True:
            gevent.sleep(0.1)
            self.flush()

    def _monitor(self) -> None:
        self.health.watch(self._each_second)

    def _each_second(self, share: float, lag: int) -> None:
        """The generator's line once a second (figures per node, for capacity.json) and the live progress."""
        self.line(
            k="gen",
            wall=time.time(),
            sent=self.counts["sent"],
            delivered=self.counts["delivered"],
            cpu=round(share, 3),
            loop_lag_ms=round(lag / 1e6, 3),
            connected=self.counts["connected"],
            rss_mb=rss_mb(),
            heartbeats=self.counts["heartbeats"],
        )
        self.write_progress()

    # --- devices ---------------------------------------------------------------------------------
    def sent_alarm(self, cid: str, s: Sent, payload: dict[str, Any] | str, sent_ns: int) -> None:
        """`payload`: the alarm's fields, or the JSON text of the wire body itself (an MQTT device's encoded
        event: spliced in as it is, the same text `p=<its dict>` would give, without a second encoding)."""
        self.health.sent(sent_ns - s.t)
        self._order.append(s)
        self.counts["sent"] += 1
        head = {"k": "stim", "cid": cid, "device": s.device, "event": s.event, "seq": s.seq, "it": s.it, "t": s.t}
        head["sent"] = sent_ns
        if isinstance(payload, str):
            self._lines.append(_LINE(head)[:-1] + ',"p":' + payload + "}")
        else:
            head["p"] = payload
            self._lines.append(_LINE(head))

    # --- probes ---------------------------------------------------------------------------------
    def on_arrival(self, probe: str, centre: str, msg: Message, forwarded_ack_t: int | None = None) -> None:
        try:
            alarm = decode(msg.payload, RoutedAlarm)
        except ProtocolError as exc:
            self.counts["malformed"] += 1
            if self.counts["malformed"] <= 20:
                self.observe("finding", f"{probe} received a malformed message on {msg.topic}: {exc.reason}")
            return
        ambiguous = 0
        if self.job.keyed:
            s, ambiguous = self._by_key(alarm)
        else:
            s = self.sent.get(alarm.cid)
        if s is None:
            foreign = (
                self.job.keyed
                and not alarm.raised_by_platform
                and alarm.device in self.slot_of
                and not self.mine(alarm.device)
            )
            if foreign or (not self.job.keyed and alarm.cid.startswith(self.job.tag)):
                self.counts["foreign"] += 1  # another worker's alarm: acknowledge it, and hand it over
                ack_t = self.acknowledge_foreign(alarm, centre) if self.job.acknowledge else None
                self._forward.append(
                    [probe, centre, msg.topic, msg.payload.decode("utf-8", "replace"), msg.arrived_ns, ack_t]
                )
            elif alarm.raised_by_platform:
                self.counts["platform_raised"] += 1
                if self.counts["platform_raised"] <= 5:
                    self.observe(
                        "load",
                        f"the platform raised its own alarm at {probe}: {alarm.event} for {alarm.device} ({alarm.cid})",
                    )
            else:
                self.counts["other"] += 1
            return
        self._arrival_no += 1
        n = self._arrival_no
        payload = alarm.to_json()
        self.line(k="arr", n=n, cid=alarm.cid, probe=probe, kind="alarm", t=msg.arrived_ns, p=payload)
        if s.arrived:
            self.counts["duplicates"] += 1
            return
        if s.key is not None:
            self.keyed[s.key].remove(s)
            if not self.keyed[s.key]:
                del self.keyed[s.key]
        s.arrived = True
        latency = msg.arrived_ns - s.t
        wrong = []
        if not self.job.direct:
            if centre != s.centre or alarm.centre != s.centre:
                wrong.append(f"centre {alarm.centre!r} at {probe}, expected {s.centre!r}")
            if alarm.user != s.user:
                wrong.append(f"user {alarm.user!r}, expected {s.user!r}")
        if alarm.device != s.device:
            wrong.append(f"device {alarm.device!r}, expected {s.device!r}")
        outcome, detail = "ok", None
        if wrong:
            outcome, detail = "misrouted", "arrived with " + "; ".join(wrong)
        else:
            changed = [
                f"{k} {alarm.field(k)!r}, expected {s.spec[k]!r}"
                for k in (("code",) if self.job.keyed else ("event", "code", "priority"))  # what DC-09/SCAIP carry
                if str(alarm.field(k)) != str(s.spec[k])
            ]
            if ambiguous > 1:  # two alarms in flight look the same: never guessed
                outcome, detail = "ambiguous", f"arrival matches {ambiguous} alarms in flight (key {s.key})"
            elif changed:
                outcome, detail = "altered", "arrived with " + "; ".join(changed)
            elif latency > self.job.within_ns:
                outcome, detail = "late", f"arrived after {latency / 1e9:.3f}s (within {self.job.within_ns / 1e9:g}s)"
        if s.overdue:
            self.overdue -= 1
        if outcome in ("ok", "altered"):
            hist.record(self.alarm_hist, latency)
            if len(self._window_lat) < 100_000:
                self._window_lat.append(latency)
        if outcome in ("ok", "late", "altered"):
            self.counts["delivered"] += 1
            if s.storm:
                self.storm_last_ns = max(self.storm_last_ns or 0, msg.arrived_ns)
        self.counts[outcome] += 1
        self.match_line(s.cid, s, 0, "alarm_latency", outcome, arr=n, lat=latency, detail=detail)
        if self.job.keyed:
            # DC-09/SCAIP devices had their receipt from the platform's receiver: the operator's
            # acknowledgement goes to the platform (it records the handling), no device measures it
            if self.job.acknowledge and outcome in ("ok", "late", "altered") and self.probing:
                self.acknowledge_foreign(alarm, centre)
        elif forwarded_ack_t is not None:
            s.ack_t = forwarded_ack_t
            self.line(k="ack", cid=alarm.cid, probe=probe, t=forwarded_ack_t)
            if s.early_ack is not None:  # the platform's acknowledgement came back before the hand-over
                early, s.early_ack = s.early_ack, None
                self.on_device_ack(s.device, early)
        elif self.job.acknowledge and outcome in ("ok", "late", "altered") and self.probing:
            self.acknowledge(alarm.cid, s, probe, centre)
        self.request(
            "ALARM",
            s.spec["name"],
            latency / 1e6,
            len(msg.payload),
            exception=None if outcome in ("ok", "altered") else LostAlarm(f"{outcome}: {detail}"),
        )

    def _by_key(self, alarm: RoutedAlarm) -> tuple[Sent | None, int]:
        """The alarm in flight an arrival without our cid answers: by `<device>:<code>:<zone>` (the rule of
        the functional path, harness.links); with more than one in flight under that key, the oldest, and
        the count so the match is `ambiguous`, never a guess."""
        key = f"{alarm.device}:{alarm.code}:{alarm.zone}"
        waiting = self.keyed.get(key)
        if waiting:
            return waiting[0], len(waiting)
        done = self.sent_keys.get(key)
        return done, 0  # already arrived (a duplicate), or not ours

    def on_ingress_reply(self, device: str, key: str, ok: bool, t_ns: int, detail: dict[str, Any]) -> None:
        """The platform's DC-09 ACK or SCAIP <mrs> to a device's alarm (receipt, not the alarm's delivery)."""
        self.counts["ingress_ack" if ok else "ingress_unanswered"] += 1
        if not ok and self.counts["ingress_unanswered"] <= 5:
            self.observe(
                "finding",
                f"device {device}: the platform's {self.job.via} receiver did not accept the alarm {key}: {detail}",
            )

    def acknowledge(self, cid: str, s: Sent, probe: str, centre: str) -> None:
        """Acknowledge as the centre's operator does; the platform must bring it back to the device."""
        client = self.probe_of.get(centre)
        if client is None:
            return
        body = encode(CentreAck(cid=cid, centre=centre, device=s.device, operator="vtlab-load", sent=utc_text()))
        s.ack_t = time.monotonic_ns()
        try:
            client.publish(self.job.topic("centre_ack", centre=centre), body)
        except TargetError as exc:
            s.ack_t = None
            self.observe("finding", f"{probe} could not acknowledge {cid}: {exc.problem}")
            return
        self.line(k="ack", cid=cid, probe=probe, t=s.ack_t)

    def acknowledge_foreign(self, alarm: RoutedAlarm, centre: str) -> int | None:
        client = self.probe_of.get(centre)
        if client is None:
            return None
        body = encode(
            CentreAck(cid=alarm.cid, centre=centre, device=alarm.device, operator="vtlab-load", sent=utc_text())
        )
        t = time.monotonic_ns()
        try:
            client.publish(self.job.topic("centre_ack", centre=centre), body)
        except TargetError:
            return None
        return t

    def on_device_ack(self, device: str, msg: Message) -> None:
        try:
            ack = decode(msg.payload, DeviceAck)
        except ProtocolError as exc:
            self.counts["malformed"] += 1
            if self.counts["malformed"] <= 20:
                self.observe("finding", f"device {device} received a malformed acknowledgement: {exc.reason}")
            return
        s = self.sent.get(ack.cid)
        if s is None:
            self.counts["other_acks"] += 1
            return
        if s.ack_t is None and not s.acked and not s.arrived and s.early_ack is None:
            s.early_ack = msg  # acknowledged by another worker's probe, whose hand-over is still on its way
            return
        self._arrival_no += 1
        n = self._arrival_no
        self.line(
            k="arr", n=n, cid=ack.cid, probe=f"device:{device}", kind="device_ack", t=msg.arrived_ns, p=ack.to_json()
        )
        if s.acked or s.ack_t is None:
            self.counts["ack_duplicates" if s.acked else "ack_unasked"] += 1
            return
        s.acked = True
        latency = msg.arrived_ns - s.ack_t
        outcome = "late" if latency > self.job.within_ns else "ok"
        self.counts[f"ack_{outcome}"] += 1
        self.match_line(ack.cid, s, 3, "ack_latency", outcome, arr=n, lat=latency)
        self.request("ACK", "device_ack", latency / 1e6, len(msg.payload))

    # --- the end ---------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Lost for every alarm that did not arrive; the node's final report (histograms encoded)."""
        if self.finished:
            return self.final
        self.finished = True
        now = time.monotonic_ns()
        undecided = 0
        for cid, s in self.sent.items():
            if not s.arrived and s.t + self.job.within_ns > now:
                undecided += 1  # still inside its limit: neither lost nor delivered, and not the platform's
                continue
            if not s.arrived:
                self.counts["lost"] += 1
                self.match_line(cid, s, 0, "alarm_latency", "lost", detail="did not arrive by the end of the run")
                self.request("ALARM", s.spec["name"], 0.0, exception=LostAlarm("lost"))
        if undecided:
            self.counts["undecided"] = undecided
            self.observe(
                "harness_fault",
                f"{undecided} alarm(s) were still inside their limit (`within` {self.job.within_ns / NS:g}s) when "
                f"the drain ended ({self.job.drain_ns / NS:g}s after the schedule): vtlab cannot tell lost from "
                "slow; leave `drain` out (it is then `within`, and the run ends as soon as nothing is out) or make "
                "it at least `within`",
            )
        for cid, s in self.sent.items():
            if s.ack_t is not None and not s.acked:
                self.counts["ack_lost"] += 1
                self.match_line(cid, s, 3, "ack_latency", "lost", detail="the acknowledgement never reached the device")
        storm = None
        if self.schedule.storm is not None:
            storm_end = self.t0 + self.schedule.storm.at_ns + self.schedule.storm.within_ns
            mine = [s for s in self.sent.values() if s.storm]
            storm = {
                "count": len(mine),
                "missing": sum(1 for s in mine if not s.arrived),
                "recovery_ns": (self.storm_last_ns - storm_end) if self.storm_last_ns else None,
            }
        for g in self._greenlets:
            g.kill(block=False)
        for p in self.probes:
            with contextlib.suppress(Exception):  # a probe that cannot say goodbye changes nothing measured
                p.close()
        for c in self.centres:
            self.counts.update({f"centre_{k}": v for k, v in c.counts.items()})
            with contextlib.suppress(Exception):
                c.close()
        self.final = {
            "node": self.name,
            "alarm_hist": hist.encode(self.alarm_hist),
            "lag_hist": hist.encode(self.health.lag_hist),
            "counts": dict(self.counts),
            "storm": storm,
            **self.health.summary(),
        }
        self.line(
            k="final",
            **{k: v for k, v in self.final.items() if not k.endswith("_hist")},
            alarm=hist.summary_ms(self.alarm_hist),
            lag=hist.summary_ms(self.health.lag_hist),
        )
        self.flush()
        self._fh.close()
        return self.final

    def snapshot(self) -> dict[str, Any]:
        """Cheap figures for the live progress line (the exact ones come from the final histograms)."""
        now = time.monotonic_ns()
        while self._passed < len(self._order) and now - self._order[self._passed].t > self.job.within_ns:
            s = self._order[self._passed]
            if not s.arrived:
                s.overdue = True
                self.overdue += 1
            self._passed += 1
        lat, self._window_lat = sorted(self._window_lat), []
        lag_p99_ms = self.health.window_lag_p99_ms()
        return {
            "node": self.name,
            "sent": self.counts["sent"],
            "delivered": self.counts["delivered"],
            "overdue": self.overdue,
            "connected": self.counts["connected"],
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))] / 1e6, 3) if lat else None,
            "lag_p99_ms": lag_p99_ms,
            "cpu": self.health.cpu_samples[-1] if self.health.cpu_samples else None,
        }

    def write_progress(self) -> None:
        if not isinstance(self.env.runner, WorkerRunner):
            write_progress(Path(self.job.out_dir), [self.snapshot()])
