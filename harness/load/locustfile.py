"""The locust side of `vtlab load`: users that are devices, response-centre probes, and the node that
correlates every alarm, measures it from its intended send time and writes what happened.

Run by `vtlab load` (never by hand): `locust -f harness/load/locustfile.py` with VTLAB_LOAD_JOB naming
the job file (harness.load.fleet.Job). One process (local) or a master and workers (distributed).

- `Device` (a locust User) is one simulated device of the fleet: it keeps one MQTT connection for the
  whole run (TLS with its own client certificate when the lab uses TLS), heartbeats at its interval and
  sends its alarms at the instants the schedule fixed in advance (harness.load.shapes). It never waits for
  the platform: publishing is queued by paho, so a slow platform cannot slow the load down.
- The node in each process that runs devices subscribes as the response centres (their identities) and
  correlates each arrival with the alarm it answers by correlation id. Latency = arrival stamp - the
  alarm's *intended* send time (no coordinated omission), recorded at full precision in an HdrHistogram
  and reported to locust as a request event (type ALARM), so locust's UI and CSV show alarm latency.
- Every alarm, arrival and verdict is appended to `out_dir/node-<pid>.jsonl` as it happens; `vtlab load`
  copies those lines into the run's evidence store while the run goes on.
- The node watches its own schedule lag, event-loop lag and CPU; the master (or the local node) writes the
  merged histograms to `out_dir/merged.json`: merged exactly (counts add; percentiles from the merge).

All stamps are time.monotonic_ns() of the process that takes them; a latency is always the difference of
two stamps of one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from locust import User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.clock import utc_text
from harness.errors import TargetError
from harness.load import hist
from harness.load.client import FleetClient
from harness.load.fleet import Job
from harness.load.greenio import patch_paho_for_gevent
from harness.load.shapes import heartbeat_times
from harness.protocols.base import ProtocolError
from harness.protocols.wire_json import CentreAck, DeviceAck, DeviceEvent, Heartbeat, RoutedAlarm, decode, encode
from harness.transports.base import Message
from harness.transports.mqtt import MqttClient

patch_paho_for_gevent()  # thousands of paho connections per process (see harness.load.greenio)

JOB_ENV = "VTLAB_LOAD_JOB"
CONNACK_WAIT_S = 30.0
"""How long a fleet device waits for its CONNACK: a slow CONNACK is the platform's connect_time, not a
reason for the generator to hang up and reconnect (which would feed a reconnect storm)."""
CONCURRENT_HANDSHAKES = 32
FINAL_MESSAGE = "vtlab_final"
ARRIVALS_MESSAGE = "vtlab_arrivals"
NS = 1_000_000_000


class LostAlarm(Exception):
    """Reported to locust for an alarm that never arrived in place."""


def _mono_offset_ns() -> int:
    """monotonic - wall (ns), to turn the job's UTC start times into this process's monotonic clock."""
    return time.monotonic_ns() - time.time_ns()


class _Sent:
    __slots__ = (
        "ack_t",
        "acked",
        "arrived",
        "centre",
        "device",
        "early_ack",
        "event",
        "it",
        "overdue",
        "seq",
        "spec",
        "storm",
        "t",
        "user",
    )

    def __init__(self, device: dict[str, str], spec: dict[str, Any], it: int, seq: int, t: int, storm: bool) -> None:
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
        self.sent: dict[str, _Sent] = {}
        self.alarm_hist = hist.new_histogram()
        self.lag_hist = hist.new_histogram()
        self.counts: Counter[str] = Counter()
        self._arrival_no = 0
        self._slots: Iterator[int] | None = None
        self.probes: list[MqttClient] = []
        self.probe_of: dict[str, MqttClient] = {}  # centre -> its probe's connection (for acknowledgements)
        self.cpu_samples: list[float] = []  # fraction of one core, per second, while sending
        self.loop_lag_max_ns = 0
        self.storm_last_ns: int | None = None
        self.finished = False
        self.final: dict[str, Any] = {}
        self._greenlets: list[Any] = []
        self._order: list[_Sent] = []  # in send order, for the overdue count
        self._passed = 0
        self.overdue = 0
        self._window_lat: list[int] = []  # this second's latencies and send lags, for the live line only
        self._window_lag: list[int] = []
        self.connecting = gevent.lock.BoundedSemaphore(CONCURRENT_HANDSHAKES)
        self._forward: list[list[Any]] = []

    def mono(self, wall_s: float) -> int:
        return round(wall_s * NS) + self.offset

    # --- evidence lines ---------------------------------------------------------------------------
    def line(self, **fields: Any) -> None:
        self._lines.append(json.dumps(fields, ensure_ascii=False, separators=(",", ":")))

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._fh.write("\n".join(lines) + "\n")
            self._fh.flush()

    def observe(self, kind: str, text: str) -> None:
        self.line(k="obs", kind=kind, text=text)

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def probing(self) -> bool:
        """The one node that subscribes as the response centres: a broker may allow one connection per
        identity (the embedded lab does), so in a distributed run worker 0 probes for every worker and
        forwards other workers' arrivals, stamped, through the master to the worker that sent the alarm."""
        runner = self.env.runner
        return not isinstance(runner, WorkerRunner) or int(getattr(runner, "worker_index", 0) or 0) == 0

    def start(self) -> None:
        self._greenlets += [gevent.spawn(self._flusher), gevent.spawn(self._monitor)]
        gevent.spawn(self._finisher)
        if not self.probing:
            return
        self._greenlets.append(gevent.spawn(self._forwarder))
        for centre, probe in self.job.centres.items():
            client = MqttClient(
                self.job.settings(f"centre-{centre}"),
                f"probe-{probe}",
                client_id=f"vtlab-load-{probe}-{os.getpid()}",
                on_state=self._probe_state,
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
            if payload and json.loads(payload).get("cid") in self.sent:
                self.on_arrival(probe, centre, Message(topic, payload.encode("utf-8"), int(arrived_ns)), ack_t)

    def _finisher(self) -> None:
        """At the end of the drain, judge what is still out and report, while locust is still running (a
        master that stops thousands of users may quit before a report sent from test_stop arrives)."""
        end = self.mono(self.job.end)
        while (wait := end - time.monotonic_ns()) > 0:
            gevent.sleep(min(wait / NS, 1.0))
        report_final(self.env, self.finish())

    def _handler(self, probe: str, centre: str) -> Callable[[Message], None]:
        def handle(message: Message) -> None:
            self.on_arrival(probe, centre, message)

        return handle

    def _probe_state(self, state: str, detail: str) -> None:
        self.counts[f"probe_{state}"] += 1
        self.observe("finding" if state == "lost" else "load", f"response-centre probe: {detail}")

    def next_slot(self) -> int | None:
        if self._slots is None:
            runner = self.env.runner
            index = max(0, int(getattr(runner, "worker_index", 0) or 0)) if isinstance(runner, WorkerRunner) else 0
            workers = max(1, self.job.workers)
            self._slots = iter(range(index, len(self.job.devices), workers))
        return next(self._slots, None)

    def _flusher(self) -> None:
        while True:
            gevent.sleep(0.1)
            self.flush()

    def _monitor(self) -> None:
        """Event-loop lag (how late a 50 ms sleep wakes) and CPU per second while the schedule runs."""
        cpu0, wall0 = time.process_time(), time.monotonic()
        while True:
            t = time.monotonic_ns()
            gevent.sleep(0.05)
            lag = time.monotonic_ns() - t - 50_000_000
            now = time.monotonic_ns()
            if self.t0 <= now <= self.end_sending:
                self.loop_lag_max_ns = max(self.loop_lag_max_ns, lag)
            if time.monotonic() - wall0 >= 1.0:
                cpu1, wall1 = time.process_time(), time.monotonic()
                share = (cpu1 - cpu0) / (wall1 - wall0)
                if self.t0 <= now <= self.end_sending:
                    self.cpu_samples.append(share)
                cpu0, wall0 = cpu1, wall1
                self.line(
                    k="gen",
                    wall=time.time(),
                    sent=self.counts["sent"],
                    delivered=self.counts["delivered"],
                    cpu=round(share, 3),
                    loop_lag_ms=round(lag / 1e6, 3),
                    connected=self.counts["connected"],
                    rss_mb=_rss_mb(),
                    heartbeats=self.counts["heartbeats"],
                )
                self.write_progress()

    # --- devices ---------------------------------------------------------------------------------
    def sent_alarm(self, cid: str, s: _Sent, payload: dict[str, Any], sent_ns: int) -> None:
        lag = sent_ns - s.t
        hist.record(self.lag_hist, max(1, lag))
        self._order.append(s)
        if len(self._window_lag) < 100_000:
            self._window_lag.append(lag)
        self.counts["sent"] += 1
        self.line(k="stim", cid=cid, device=s.device, event=s.event, seq=s.seq, it=s.it, t=s.t, sent=sent_ns, p=payload)

    # --- probes ---------------------------------------------------------------------------------
    def on_arrival(self, probe: str, centre: str, msg: Message, forwarded_ack_t: int | None = None) -> None:
        try:
            alarm = decode(msg.payload, RoutedAlarm)
        except ProtocolError as exc:
            self.counts["malformed"] += 1
            if self.counts["malformed"] <= 20:
                self.observe("finding", f"{probe} received a malformed message on {msg.topic}: {exc.reason}")
            return
        s = self.sent.get(alarm.cid)
        if s is None:
            if alarm.cid.startswith(self.job.tag):
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
                for k in ("event", "code", "priority")
                if str(alarm.field(k)) != str(s.spec[k])
            ]
            if changed:
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
        self.line(
            k="match",
            cid=alarm.cid,
            device=s.device,
            seq=s.seq,
            it=s.it,
            step=0,
            metric="alarm_latency",
            outcome=outcome,
            arr=n,
            lat=latency,
            d=detail,
        )
        if forwarded_ack_t is not None:
            s.ack_t = forwarded_ack_t
            self.line(k="ack", cid=alarm.cid, probe=probe, t=forwarded_ack_t)
            if s.early_ack is not None:  # the platform's acknowledgement came back before the hand-over
                early, s.early_ack = s.early_ack, None
                self.on_device_ack(s.device, early)
        elif self.job.acknowledge and outcome in ("ok", "late", "altered") and self.probing:
            self.acknowledge(alarm.cid, s, probe, centre)
        self.env.events.request.fire(
            request_type="ALARM",
            name=s.spec["name"],
            response_time=latency / 1e6,
            response_length=len(msg.payload),
            exception=None if outcome in ("ok", "altered") else LostAlarm(f"{outcome}: {detail}"),
            context={},
        )

    def acknowledge(self, cid: str, s: _Sent, probe: str, centre: str) -> None:
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
        self.line(
            k="match",
            cid=ack.cid,
            device=s.device,
            seq=s.seq,
            it=s.it,
            step=3,
            metric="ack_latency",
            outcome=outcome,
            arr=n,
            lat=latency,
            d=None,
        )
        self.env.events.request.fire(
            request_type="ACK",
            name="device_ack",
            response_time=latency / 1e6,
            response_length=len(msg.payload),
            exception=None,
            context={},
        )

    # --- the end ---------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Lost for every alarm that did not arrive; the node's final report (histograms encoded)."""
        if self.finished:
            return self.final
        self.finished = True
        for cid, s in self.sent.items():
            if not s.arrived:
                self.counts["lost"] += 1
                self.line(
                    k="match",
                    cid=cid,
                    device=s.device,
                    seq=s.seq,
                    it=s.it,
                    step=0,
                    metric="alarm_latency",
                    outcome="lost",
                    arr=None,
                    lat=None,
                    d="did not arrive by the end of the run",
                )
                self.env.events.request.fire(
                    request_type="ALARM",
                    name=s.spec["name"],
                    response_time=0.0,
                    response_length=0,
                    exception=LostAlarm("lost"),
                    context={},
                )
        for cid, s in self.sent.items():
            if s.ack_t is not None and not s.acked:
                self.counts["ack_lost"] += 1
                self.line(
                    k="match",
                    cid=cid,
                    device=s.device,
                    seq=s.seq,
                    it=s.it,
                    step=3,
                    metric="ack_latency",
                    outcome="lost",
                    arr=None,
                    lat=None,
                    d="the acknowledgement never reached the device",
                )
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
        cpu = self.cpu_samples
        self.final = {
            "node": self.name,
            "alarm_hist": hist.encode(self.alarm_hist),
            "lag_hist": hist.encode(self.lag_hist),
            "counts": dict(self.counts),
            "storm": storm,
            "cpu_mean": sum(cpu) / len(cpu) if cpu else None,
            "cpu_max": max(cpu) if cpu else None,
            "loop_lag_max_ms": self.loop_lag_max_ns / 1e6,
        }
        self.line(
            k="final",
            **{k: v for k, v in self.final.items() if not k.endswith("_hist")},
            alarm=hist.summary_ms(self.alarm_hist),
            lag=hist.summary_ms(self.lag_hist),
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
        lag, self._window_lag = sorted(self._window_lag), []
        return {
            "node": self.name,
            "sent": self.counts["sent"],
            "delivered": self.counts["delivered"],
            "overdue": self.overdue,
            "connected": self.counts["connected"],
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))] / 1e6, 3) if lat else None,
            "lag_p99_ms": round(lag[int(0.99 * (len(lag) - 1))] / 1e6, 3) if lag else None,
            "cpu": self.cpu_samples[-1] if self.cpu_samples else None,
        }

    def write_progress(self) -> None:
        if not isinstance(self.env.runner, WorkerRunner):
            write_progress(Path(self.job.out_dir), [self.snapshot()])


def _rss_mb() -> float | None:
    """This process's resident memory (Linux /proc), for memory per device."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def write_progress(out: Path, parts: list[dict[str, Any]]) -> None:
    """The live line's figures: sums, and the worst node's p99 over its last report interval."""

    def worst(key: str) -> float | None:
        values = [p[key] for p in parts if p.get(key) is not None]
        return max(values) if values else None

    data = {
        "wall": time.time(),
        "nodes": len(parts),
        "sent": sum(p["sent"] for p in parts),
        "delivered": sum(p["delivered"] for p in parts),
        "overdue": sum(p["overdue"] for p in parts),
        "connected": sum(p["connected"] for p in parts),
        "p99_ms": worst("p99_ms"),
        "lag_p99_ms": worst("lag_p99_ms"),
        "cpu": [p["cpu"] for p in parts],
    }
    tmp = out / "progress.json.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(out / "progress.json")


def write_merged(out: Path, finals: list[dict[str, Any]]) -> None:
    """The master's (or the local node's) exact merge of every node's final histograms."""
    alarm = hist.merge(f["alarm_hist"] for f in finals)
    lag = hist.merge(f["lag_hist"] for f in finals)
    counts: Counter[str] = Counter()
    for f in finals:
        counts.update(f["counts"])
    data = {
        "nodes": [
            {k: v for k, v in f.items() if not k.endswith("_hist")}
            | {
                "alarm": hist.summary_ms(hist.decode(f["alarm_hist"])),
                "lag": hist.summary_ms(hist.decode(f["lag_hist"])),
            }
            for f in finals
        ],
        "counts": dict(counts),
        "alarm": hist.summary_ms(alarm),
        "lag": hist.summary_ms(lag),
        "alarm_hist": hist.encode(alarm),
        "lag_hist": hist.encode(lag),
    }
    tmp = out / "merged.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out / "merged.json")


# --- locust wiring ---------------------------------------------------------------------------------
_JOB: Job | None = None
NODE: Node | None = None
_FINALS: dict[str, dict[str, Any]] = {}
_REPORTS: dict[str, dict[str, Any]] = {}


def job() -> Job:
    global _JOB
    if _JOB is None:
        path = os.environ.get(JOB_ENV)
        if not path:
            raise SystemExit(f"{JOB_ENV} is not set: this locustfile is run by `vtlab load`")
        _JOB = Job.read(Path(path))
    return _JOB


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    global NODE
    runner = environment.runner
    out = Path(job().out_dir)
    if isinstance(runner, MasterRunner):

        def on_final(environment: Environment, msg: Any, **_k: Any) -> None:
            _FINALS[msg.node_id] = msg.data
            write_merged(out, list(_FINALS.values()))

        def on_report(client_id: str, data: dict[str, Any]) -> None:
            if "vtlab" in data:
                _REPORTS[client_id] = data["vtlab"]
                write_progress(out, list(_REPORTS.values()))

        def on_arrivals(environment: Environment, msg: Any, **_k: Any) -> None:
            runner.send_message(ARRIVALS_MESSAGE, msg.data)  # to every worker; the owner takes its own

        runner.register_message(FINAL_MESSAGE, on_final)
        runner.register_message(ARRIVALS_MESSAGE, on_arrivals)
        environment.events.worker_report.add_listener(on_report)
        return
    NODE = Node(environment, job())
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any]) -> None:
            if NODE is not None and not NODE.finished:
                data["vtlab"] = NODE.snapshot()

        environment.events.report_to_master.add_listener(report)

        def on_arrivals(environment: Environment, msg: Any, **_k: Any) -> None:
            if NODE is not None and not NODE.finished:
                NODE.on_forwarded(msg.data)

        runner.register_message(ARRIVALS_MESSAGE, on_arrivals)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    if NODE is not None and not NODE.probes:
        NODE.start()


def report_final(environment: Environment, final: dict[str, Any]) -> None:
    """The node's final histograms to the master (or, alone, straight into merged.json)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(FINAL_MESSAGE, final)
    else:
        write_merged(Path(job().out_dir), [final])


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    if NODE is not None and not NODE.finished:  # stopped before the end of the schedule
        report_final(environment, NODE.finish())


class Device(User):
    """One simulated device of the fleet (see the module docstring)."""

    def on_start(self) -> None:
        node = NODE
        assert node is not None
        self.node = node
        self.client: FleetClient | None = None
        slot = node.next_slot()
        if slot is None:
            node.observe("harness_fault", "locust started more users than the fleet has devices")
            self.slot = -1
            return
        self.slot = slot
        self.device = node.job.devices[slot]
        did = self.device["id"]
        rng = random.Random(slot)
        started: int | None = None  # the first attempt's start, once a handshake slot is free
        settings = dataclasses.replace(node.job.settings(f"device-{did}"), connect_timeout_s=CONNACK_WAIT_S)
        backoff = 0.5
        attempt = 0
        while True:
            attempt += 1
            client = FleetClient(
                settings,
                f"device-{did}",
                client_id=f"vtlab-{did}-{os.getpid()}-{attempt}",
                on_state=self._conn_state,
                rng=rng,
            )
            try:
                with node.connecting:  # a bounded number of TLS handshakes at once keeps the loop responsive
                    started = started or time.monotonic_ns()  # the generator's own queueing is not counted
                    client.connect()
                break
            except TargetError as exc:
                with contextlib.suppress(Exception):
                    client.close()  # never leave a half-open connection behind for the broker to kick
                if time.monotonic_ns() + backoff * NS >= node.end_sending:
                    node.counts["connect_failed"] += 1
                    node.line(
                        k="match",
                        cid=f"{node.job.tag}-connect-{did}",
                        device=did,
                        seq=0,
                        it=slot,
                        step=1,
                        metric="connect_time",
                        outcome="not_reached",
                        arr=None,
                        lat=None,
                        d=f"never connected: {exc}",
                    )
                    self.environment.events.request.fire(
                        request_type="CONNECT",
                        name="device",
                        response_time=(time.monotonic_ns() - (started or time.monotonic_ns())) / 1e6,
                        response_length=0,
                        exception=exc,
                        context={},
                    )
                    return
                node.counts["connect_retries"] += 1
                gevent.sleep(backoff * (0.5 + rng.random()))
                backoff = min(backoff * 2, 10.0)
        took = time.monotonic_ns() - (started or time.monotonic_ns())
        node.counts["connected"] += 1
        node.line(
            k="match",
            cid=f"{node.job.tag}-connect-{did}",
            device=did,
            seq=0,
            it=slot,
            step=1,
            metric="connect_time",
            outcome="ok",
            arr=None,
            lat=took,
            d=None,
        )
        self.environment.events.request.fire(
            request_type="CONNECT",
            name="device",
            response_time=took / 1e6,
            response_length=0,
            exception=None,
            context={},
        )
        self.client = client
        if node.job.acknowledge:
            try:
                client.subscribe(node.job.topic("device_ack", device=did), self._on_ack)
            except TargetError as exc:
                node.observe("finding", f"device {did} could not subscribe to its acknowledgements: {exc.problem}")

    def _on_ack(self, message: Message) -> None:
        self.node.on_device_ack(self.device["id"], message)

    def _conn_state(self, state: str, detail: str) -> None:
        self.node.counts[f"device_{state}"] += 1
        if self.node.counts[f"device_{state}"] <= 5:
            self.node.observe("load", f"device connection {state}: {detail}")

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    @task
    def live(self) -> None:
        """Heartbeats and alarms at their scheduled instants until the schedule ends; then idle."""
        node = self.node
        if self.client is None:
            gevent.sleep(3600)
            return
        job, sched, slot = node.job, node.schedule, self.slot
        did, user = self.device["id"], self.device["user"]
        alarm_spec = job.events["alarm"]
        storm_spec = job.events.get("storm", alarm_spec)
        hb_interval = job.heartbeat_ns
        hb_topic, ev_topic = job.topic("device_heartbeat", device=did), job.topic("device_event", device=did)
        forever = 1 << 62  # heartbeats go on until locust stops the device: silence is the platform's to report
        streams: list[Iterator[tuple[int, int, int]]] = [
            ((t, 0, k) for k, t in enumerate(sched.device_times(slot))),
            ((t, 2, k) for k, t in enumerate(heartbeat_times(slot, len(job.devices), hb_interval, forever))),
        ]
        storm = sched.storm_slot(slot)
        if storm is not None:
            streams.append(iter([(storm[1], 1, 0)]))
        seq = 0
        hb_seq = 0
        for t_rel, kind, k in heapq.merge(*streams):
            due = node.t0 + t_rel
            wait = due - time.monotonic_ns()
            # a device behind its schedule still yields: gevent is cooperative, and a backlog sent without
            # yielding would starve every connection's network loop and the probe
            gevent.sleep(wait / NS if wait > 0 else 0)
            if kind == 2:
                hb_seq += 1
                body = encode(Heartbeat(device=did, interval_s=hb_interval / NS, seq=hb_seq, sent=utc_text()))
                self.client.publish_queued(hb_topic, body)
                node.counts["heartbeats"] += 1
                continue
            seq += 1
            spec = storm_spec if kind == 1 else alarm_spec
            cid = f"{job.tag}-{slot}-{'s' if kind == 1 else ''}{k}"
            iteration = (slot + k * len(job.devices)) if kind == 0 else -(slot + 1)
            s = _Sent(self.device, spec, iteration, seq, due, kind == 1)
            event = DeviceEvent(
                cid=cid,
                device=did,
                user=user,
                event=spec["event"],
                code=spec["code"],
                qualifier=spec["qualifier"],
                priority=spec["priority"],
                seq=seq,
                battery=100,
                sent=utc_text(),
            )
            body = encode(event)
            node.sent[cid] = s  # before publishing: the arrival may come back first
            sent_ns = time.monotonic_ns()
            if not self.client.publish_queued(ev_topic, body):
                node.counts["queued_offline"] += 1
            node.sent_alarm(cid, s, event.to_json(), sent_ns)
