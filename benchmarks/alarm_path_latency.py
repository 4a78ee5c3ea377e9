"""Alarm path latency: vtlab's path against a raw paho relay over the same two broker hops, one broker, one run.

    .venv/bin/python benchmarks/alarm_path_latency.py [--rounds 5] [--count-100 250] [--count-1000 1000]
        [--count-serial 300] [--max-seconds 110]

About 60 s with the defaults; loopback only; exits 0.

Three paths, each device -> broker -> relay process -> broker -> centre, on one broker started by this run:

- baseline: a raw paho device and a raw paho centre in this process; between them a raw relay in its own
  process (stdlib + paho only, started with `python -c`; it reports that it imported no vtlab module),
  which republishes every message unchanged on the centre topic.
- lab, raw ends: the same raw paho device and centre, with the reference lab's router (LabProcess) in
  the relay's place. Against the baseline, this isolates what the reference platform costs.
- vtlab: SimulatedDevice -> WireJsonDeviceLink over MqttTransport -> the same lab -> WireJsonCentreLink over
  MqttTransport -> ResponseCentreProbe -> Tracker -> EvidenceStore, the tracker handing arrivals to an
  asyncio loop and every stimulus recorded, as a run does. Against "lab, raw ends", this isolates what
  vtlab's own ends cost (what it adds when it measures a supplier's platform).

Every client on every path: MQTT 5 (3.1.1 when mosquitto is absent and the broker is amqtt), QoS 1,
TCP_NODELAY on its socket (read back with getsockopt and printed), max_inflight 1000, paho's threaded loop.
Raw latency: time.monotonic_ns() just before publish() -> the first line of the raw centre's on_message.
vtlab latency: the stimulus's t_ns -> the arrival's t_ns, both read back from the evidence store (the
stamps the judgement uses).

Loads: paced at 100/s and 1000/s on an absolute schedule, and one in flight (the next alarm is sent when
the previous one arrived); rounds alternate the order of the paths. Percentiles are exact (sorted samples,
nearest rank). Also measured: the harness's own code per alarm in those rounds (the device link's work
before its stamp, paho's on_message entry -> vtlab's stamp, decode and tracker after it), the lab router's
MQTT handler and MqttClient.publish in this process with paho's publish stubbed, the wire_json codec
against stdlib json on the same fields, and the CPU time per alarm of the broker, the relay or lab
process, and each thread of this process (from /proc, per round).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import queue
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.safety_alarm import SAFETY_ALARM
from devices.simulated import SimulatedDevice
from harness.evidence import EvidenceReader, EvidenceStore
from harness.lab.broker import find_mosquitto, start_broker
from harness.lab.config import BrokerSettings, DeviceSettings, LabConfig
from harness.lab.process import LabProcess
from harness.lab.router import Ledger, Router
from harness.links import Incoming, Outgoing
from harness.links.wire_json import WireJsonCentreLink, WireJsonDeviceLink, incoming
from harness.probes.response_centre import ResponseCentreProbe
from harness.protocols.wire_json import DeviceEvent, RoutedAlarm, decode, encode
from harness.tracking import Tracker
from harness.transports.base import Message
from harness.transports.loop import LoopThread
from harness.transports.mqtt import MqttClient, MqttSettings, MqttTransport

LAB_SITE, RELAY_SITE = "bench", "braw"  # the relay's topics are as long as the lab's
DEV_VT, USER_VT, CENTRE_VT = "sa-vt", "persona/vt", "rc-vt"
DEV_RAW, USER_RAW, CENTRE_RAW = "sa-rw", "persona/rw", "rc-rw"  # same lengths: same payload sizes
TEMPLATES = {
    "device_event": "vtlab/{site}/device/{device}/event",
    "device_ack": "vtlab/{site}/device/{device}/ack",
    "centre_alarm": "vtlab/{site}/centre/{centre}/alarm",
}
BASELINE, LAB_RAW, VTLAB = "baseline (raw relay)", "lab, raw ends", "vtlab"
WARMUP = 50
MQTT = {"version": "5"}  # every client of every path; 3.1.1 when the broker is amqtt (it speaks no MQTT 5)
US, MS = 1_000, 1_000_000
# what Costs records, per alarm
ENCODE = "device link before its stamp (Outgoing, DeviceEvent, encode)"
PUBLISH = "stamp -> publish() returned"
STIMULUS = "stimulus row after publish (evidence enqueue)"
PRE_STAMP = "paho on_message entry -> vtlab's arrival stamp"
DECODE = "vtlab stamp -> tracker called (link decode, Incoming)"
TRACK = "tracker (evidence enqueue, hand-over to the loop)"
RECV_RAW = "raw stamp -> end of the raw centre's callback"
# measured apart
ROUTER_WHOLE = "lab router's MQTT handler per alarm (MqttClient dispatch, decode, route, encode, ledger)"
LEDGER = "of which: ledger line (write + flush)"
WRAPPER = "MqttClient.publish() (the device link's publish)"


def topic(site: str, name: str, **fill: str) -> str:
    return TEMPLATES[name].format(site=site, **fill)


def lab_topic(name: str, **fill: str) -> str:
    return topic(LAB_SITE, name, **fill)


def pct(sorted_ns: list[int], p: float) -> int:
    """Exact nearest-rank percentile of sorted samples."""
    rank = max(1, -(-len(sorted_ns) * p // 100))
    return sorted_ns[int(rank) - 1]


def p50(samples: list[int]) -> int:
    return pct(sorted(samples), 50)


def nodelay_of(sock: object) -> int | None:
    getsockopt = getattr(sock, "getsockopt", None)
    return None if getsockopt is None else int(getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def event_fields(cid: str, seq: int, device: str = DEV_RAW, user: str = USER_RAW) -> dict[str, Any]:
    """A button press as vtlab's device link sends it (DeviceEvent.to_json, docs/wire.md)."""
    spec = SAFETY_ALARM.events["button_press"]
    return {
        "v": 1,
        "cid": cid,
        "device": device,
        "event": spec.event,
        "code": spec.code,
        "user": user,
        "qualifier": spec.qualifier,
        "priority": spec.priority,
        "seq": seq,
        "battery": 100,
        "sent": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


# --- the baseline's relay: its own process, stdlib + paho only ---------------------------------------
def _relay_main() -> None:
    """Run by `python -c` with argv URL IN_FILTER OUT_TOPIC MQTT_VERSION: republish every message unchanged,
    QoS 1, TCP_NODELAY on its socket (after connect and on every CONNACK, as MqttClient does),
    max_inflight 1000. Prints one JSON ready line; exits when stdin closes."""
    import json
    import os
    import socket
    import sys
    from urllib.parse import urlsplit

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.reasoncodes import ReasonCode

    url, in_filter, out_topic, mqtt_version = sys.argv[1:5]
    parts = urlsplit(url)
    proto = paho.MQTTv5 if mqtt_version == "5" else paho.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-relay-{os.getpid()}", protocol=proto)
    client.max_inflight_messages_set(1000)

    def nodelay() -> int:
        sock = client.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))  # type: ignore[union-attr]

    def on_connect(c: paho.Client, u: object, flags: object, rc: object, props: object) -> None:
        nodelay()
        c.subscribe(in_filter, qos=1)

    def on_subscribe(c: paho.Client, u: object, mid: int, rcs: list[ReasonCode], props: object) -> None:
        vtlab = sorted(m for m in sys.modules if m.split(".")[0] in ("harness", "devices"))
        ok = not any(r.is_failure for r in rcs)
        print(json.dumps({"ready": ok, "tcp_nodelay": nodelay(), "vtlab_modules": vtlab}), flush=True)

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        c.publish(out_topic, msg.payload, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
    nodelay()
    client.loop_start()
    sys.stdin.read()
    client.disconnect()
    client.loop_stop()


class Relay:
    def __init__(self, url: str, in_filter: str, out_topic: str, cwd: Path) -> None:
        source = "from __future__ import annotations\n\n" + textwrap.dedent(inspect.getsource(_relay_main))
        source += "\n_relay_main()\n"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source, url, in_filter, out_topic, MQTT["version"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
        )
        lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        assert self.proc.stdout is not None
        out = self.proc.stdout

        def read() -> None:
            for line in out:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            self.ready: dict[str, Any] = json.loads(lines.get(timeout=15))
        except queue.Empty:
            self.close()
            raise RuntimeError("the raw relay did not become ready within 15 s") from None
        if not self.ready.get("ready"):
            self.close()
            raise RuntimeError(f"the raw relay failed: {self.ready}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


# --- CPU time from /proc ------------------------------------------------------------------------------
def task_cpu_ns(pid: int, tid: int) -> int:
    """CPU time of one thread (ns, /proc/PID/task/TID/schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return 0


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process (ns)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0
    return sum(task_cpu_ns(pid, int(t)) for t in tasks)


# --- instruments shared by the paths -----------------------------------------------------------------
class Costs:
    """Per-alarm timings of code on the path, per load: {load: {what: [ns]}}."""

    def __init__(self) -> None:
        self.load = "warm-up"
        self.by_load: dict[str, dict[str, list[int]]] = {}

    def add(self, what: str, ns: int) -> None:
        self.by_load.setdefault(self.load, {}).setdefault(what, []).append(ns)

    def get(self, load: str, what: str) -> list[int]:
        return self.by_load.get(load, {}).get(what, [])


class Arrivals:
    """Counts arrivals and wakes the sender (the same instrument on every path, after the stamp)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.n = 0

    def reset(self) -> None:
        with self.cond:
            self.n = 0

    def bump(self) -> None:
        with self.cond:
            self.n += 1
            self.cond.notify_all()

    def wait(self, n: int, timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.n >= n, timeout=timeout_s)


def paho_client(url: str, name: str) -> paho.Client:
    """A raw paho client with MqttClient's options: MQTT 5, TCP_NODELAY after connect and on every CONNACK,
    max_inflight 1000, threaded loop (QoS 1 is given per publish and subscribe)."""
    parts = urlsplit(url)
    proto = paho.MQTTv5 if MQTT["version"] == "5" else paho.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}-{os.getpid()}", protocol=proto)
    client.max_inflight_messages_set(1000)
    connected = threading.Event()

    def on_connect(c: paho.Client, *_a: object) -> None:
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        connected.set()

    client.on_connect = on_connect
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"no CONNACK for the raw {name}")
    return client


# --- the paths ----------------------------------------------------------------------------------------
class RawEndsPath:
    """A raw paho device and a raw paho centre; between them the raw relay (baseline) or the lab router."""

    def __init__(self, name: str, url: str, site: str, hop_pid: int) -> None:
        self.name = name
        self.pids = {"relay or lab process": hop_pid}
        self.arrivals = Arrivals()
        self.costs = Costs()
        self._got: list[tuple[bytes | bytearray, int]] = []
        self._sent: dict[str, int] = {}
        self._tag = ""
        self.centre = paho_client(url, f"{name[:3]}-centre")
        self.centre.on_message = self._on_message
        granted = threading.Event()
        self.centre.on_subscribe = lambda *_a: granted.set()
        self.centre.subscribe(topic(site, "centre_alarm", centre=CENTRE_RAW), qos=1)
        if not granted.wait(10):
            raise RuntimeError(f"the broker did not grant the subscription of {name}'s centre")
        self.device = paho_client(url, f"{name[:3]}-device")
        self._topic = topic(site, "device_event", device=DEV_RAW)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        t = time.monotonic_ns()
        self._got.append((msg.payload, t))
        self.arrivals.bump()
        self.costs.add(RECV_RAW, time.monotonic_ns() - t)

    def begin(self, tag: str, load: str) -> None:
        self.arrivals.reset()
        self.costs.load = load
        self._got, self._sent, self._tag = [], {}, tag

    def send(self, i: int) -> None:
        cid = f"{self._tag}-00000-{i:06d}"
        body = json.dumps(event_fields(cid, i), ensure_ascii=False, separators=(",", ":")).encode()
        t = time.monotonic_ns()
        self.device.publish(self._topic, body, qos=1)
        self.costs.add(PUBLISH, time.monotonic_ns() - t)
        self._sent[cid] = t

    def latencies(self) -> list[int]:
        """Latencies in send order (alarms that did not arrive are left out)."""
        arrived = {json.loads(p)["cid"]: t for p, t in self._got}
        return [arrived[c] - t for c, t in self._sent.items() if c in arrived]

    def sockets(self) -> dict[str, int | None]:
        return {
            f"{self.name}: device": nodelay_of(self.device.socket()),
            f"{self.name}: centre": nodelay_of(self.centre.socket()),
        }

    def threads(self) -> dict[str, int | None]:
        return {
            "sender": threading.main_thread().native_id,
            "device client": self.device._thread.native_id if self.device._thread else None,
            "centre client": self.centre._thread.native_id if self.centre._thread else None,
        }

    def close(self) -> None:
        for c in (self.device, self.centre):
            c.disconnect()
            c.loop_stop()


class TimedTracker(Tracker):
    """The real Tracker; counts alarm arrivals and times itself (on the probe's network thread)."""

    def __init__(self, evidence: EvidenceStore, arrivals: Arrivals, entry: Callable[[], int], costs: Costs) -> None:
        super().__init__(evidence)
        self.counter = arrivals
        self.entry = entry
        self.costs = costs

    def on_incoming(self, probe: str, kind: str, got: Incoming) -> None:
        t0 = time.monotonic_ns()
        super().on_incoming(probe, kind, got)
        t1 = time.monotonic_ns()
        if kind == "alarm":
            self.costs.add(PRE_STAMP, got.t_ns - self.entry())
            self.costs.add(DECODE, t0 - got.t_ns)
            self.costs.add(TRACK, t1 - t0)
            self.counter.bump()


class VtlabPath:
    """vtlab's own ends as a run uses them, around the reference lab."""

    def __init__(self, url: str, lab_pid: int, work: Path) -> None:
        self.name = VTLAB
        self.pids = {"relay or lab process": lab_pid}
        self.evidence = EvidenceStore.create(work / "run")
        self.loop = LoopThread("bench-scenario")  # the scenario runner's loop: the tracker hands arrivals to it
        self.arrivals = Arrivals()
        self.costs = Costs()
        self._entry = 0
        self.tracker = TimedTracker(self.evidence, self.arrivals, lambda: self._entry, self.costs)
        self.centre_t = MqttTransport(MqttSettings(url, version=MQTT["version"]), name=f"centre-{CENTRE_VT}")
        self.centre_t.connect()
        vtlab_handler = self.centre_t._on_message  # what MqttClient gave paho as on_message

        def entry_stamp(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
            self._entry = time.monotonic_ns()  # paho's callback entry, before vtlab's own stamp
            vtlab_handler(client, userdata, msg)

        self.centre_t._client.on_message = entry_stamp
        link = WireJsonCentreLink(self.centre_t, lab_topic, CENTRE_VT)
        self.probe = ResponseCentreProbe("centre", CENTRE_VT, link, self.tracker)
        self.probe.start()
        self.device_t = MqttTransport(MqttSettings(url, version=MQTT["version"]), name=f"device-{DEV_VT}")
        self.device_t.connect()
        self.device = SimulatedDevice(
            DEV_VT, SAFETY_ALARM, USER_VT, WireJsonDeviceLink(self.device_t, lab_topic, DEV_VT)
        )
        self.device.listen_for_acks(  # as the test bed does for every device
            lambda got: self.tracker.on_incoming(f"device:{DEV_VT}", "device_ack", got),
            lambda bad: self.tracker.on_refused(f"device:{DEV_VT}", bad),
        )
        self._spec = SAFETY_ALARM.events["button_press"]
        self._tag = ""

    def begin(self, tag: str, load: str) -> None:
        self.arrivals.reset()
        self.costs.load = load
        self._tag = tag
        self.tracker.begin(tag, self.loop.loop)

    def send(self, i: int) -> None:
        cid = f"{self._tag}-00000-{i:06d}"  # the shape of ScenarioRun.new_cid
        t0 = time.monotonic_ns()
        sent = self.device.send(self._spec, cid, i)
        t1 = time.monotonic_ns()
        self.evidence.stimulus(self._tag, cid, DEV_VT, self._spec.event, i, 0, sent.t_ns, dict(sent.fields))
        t2 = time.monotonic_ns()
        self.costs.add(ENCODE, sent.t_ns - t0)
        self.costs.add(PUBLISH, t1 - sent.t_ns)
        self.costs.add(STIMULUS, t2 - t1)

    def latencies(self) -> list[int]:
        self.tracker.end()
        self.evidence.flush()
        reader = EvidenceReader(self.evidence.path)
        try:
            sent = {r["cid"]: r["t_ns"] for r in reader.stimuli(self._tag)}  # in send order
            got = {r["cid"]: r["t_ns"] for r in reader.arrivals(self._tag) if r["kind"] == "alarm"}
        finally:
            reader.close()
        return [got[c] - t for c, t in sent.items() if c in got]

    def sockets(self) -> dict[str, int | None]:
        return {
            "vtlab: device link (MqttClient)": nodelay_of(self.device_t._client.socket()),
            "vtlab: centre probe (MqttClient)": nodelay_of(self.centre_t._client.socket()),
        }

    def threads(self) -> dict[str, int | None]:
        def of(t: MqttTransport) -> int | None:
            thread = t._client._thread
            return thread.native_id if thread else None

        return {
            "sender": threading.main_thread().native_id,
            "device client": of(self.device_t),
            "centre client": of(self.centre_t),
            "evidence writer": self.evidence._writer.native_id,
            "scenario loop": self.loop._thread.native_id,
        }

    def close(self) -> None:
        for t in (self.device_t, self.centre_t):
            t.close()
        self.loop.close()
        self.evidence.close()


AnyPath = RawEndsPath | VtlabPath


@dataclass(frozen=True)
class Load:
    label: str
    count: int
    rate: float | None  # None: one in flight


@dataclass
class RoundResult:
    in_order: list[int]  # ns, in send order
    lost: int
    cpu: dict[str, int]  # process or thread -> CPU ns during the round
    count: int

    @cached_property
    def latency(self) -> list[int]:
        return sorted(self.in_order)

    def tenth(self, last: bool) -> int:
        """p50 of the first or the last tenth of the round's alarms in send order: does a queue build up?"""
        k = max(1, len(self.in_order) // 10)
        return pct(sorted(self.in_order[-k:] if last else self.in_order[:k]), 50)


def run_round(path: AnyPath, load: Load, tag: str, pids: dict[str, int]) -> RoundResult:
    path.begin(tag, load.label)
    me = os.getpid()
    threads = {k: v for k, v in path.threads().items() if v is not None}
    before = {name: cpu_ns(pid) for name, pid in pids.items()}
    t_before = {name: task_cpu_ns(me, tid) for name, tid in threads.items()}
    me0 = time.process_time_ns()
    missed = 0
    if load.rate is None:
        for i in range(load.count):
            path.send(i)
            if not path.arrivals.wait(i + 1 - missed, 2.0):
                missed += 1  # lost or very late: go on
    else:
        interval = 1e9 / load.rate
        start = time.monotonic_ns()
        for i in range(load.count):
            wait = start + i * interval - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            path.send(i)
    path.arrivals.wait(load.count, 5.0)
    cpu = {name: cpu_ns(pid) - before[name] for name, pid in pids.items()}
    cpu["this process"] = time.process_time_ns() - me0
    for name, tid in threads.items():
        cpu[f"thread:{name}"] = task_cpu_ns(me, tid) - t_before[name]
    lat = path.latencies()
    return RoundResult(lat, load.count - len(lat), cpu, load.count)


# --- the harness's code, measured apart ---------------------------------------------------------------
def timed(fn: Callable[[], object], n: int) -> list[int]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return sorted(out)


def codec_costs(n: int = 3000) -> dict[str, tuple[list[int], list[int]]]:
    """wire_json against stdlib json on the same fields: {what: (vtlab samples, stdlib samples)}."""
    fields = event_fields("a1b2c3d4-s1-00000-000001", 1, DEV_VT, USER_VT)
    ev = DeviceEvent(**{k: v for k, v in fields.items() if k != "v"})
    body = encode(ev)
    routed = RoutedAlarm(**{k: v for k, v in fields.items() if k != "v"}, centre=CENTRE_VT, routed=ev.sent)
    rbody, rdict = encode(routed), routed.to_json()
    msg = Message(lab_topic("centre_alarm", centre=CENTRE_VT), rbody, 0)

    def dumps(d: dict[str, Any]) -> bytes:
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()

    def device_link_event() -> bytes:  # what WireJsonDeviceLink.send does before its stamp, less the clock
        out = Outgoing(cid=ev.cid, device=DEV_VT, user=USER_VT, event=ev.event, code=ev.code, seq=1)
        e = DeviceEvent(
            cid=out.cid,
            device=out.device,
            user=out.user,
            event=out.event,
            code=out.code,
            qualifier=out.qualifier,
            priority=out.priority,
            seq=out.seq,
            battery=out.battery,
            sent=ev.sent,
        )
        return encode(e)

    return {
        "encode DeviceEvent (device link)": (timed(device_link_event, n), timed(lambda: dumps(fields), n)),
        "decode DeviceEvent (lab router)": (
            timed(lambda: decode(body, DeviceEvent), n),
            timed(lambda: json.loads(body), n),
        ),
        "encode RoutedAlarm (lab router)": (timed(lambda: encode(routed), n), timed(lambda: dumps(rdict), n)),
        "decode RoutedAlarm + Incoming (centre link)": (
            timed(lambda: incoming(msg, RoutedAlarm), n),
            timed(lambda: json.loads(rbody), n),
        ),
    }


def router_costs(work: Path, n: int = 2000) -> dict[str, list[int]]:
    """The reference lab router's MQTT handler per alarm, in this process, with paho's publish stubbed (the
    work the lab does per alarm beyond what the raw relay does: both call paho's publish), and
    MqttClient.publish over the same stub."""
    config = LabConfig(
        site=LAB_SITE,
        devices={DEV_VT: DeviceSettings(user=USER_VT)},
        routing={USER_VT: CENTRE_VT},
        ledger=work / "router-bench" / "ledger.jsonl",
    )
    router = Router(config, "mqtt://127.0.0.1:1")
    client = router._client
    published: list[bytes] = []

    def stub_publish(topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> paho.MQTTMessageInfo:
        published.append(payload)
        return paho.MQTTMessageInfo(0)

    client._client.publish = stub_publish  # type: ignore[method-assign, assignment]
    client._subs.extend((f, router._on_message) for f in router._filters)  # as subscribe_many would
    router._plan.start(time.monotonic_ns())
    device_topic = lab_topic("device_event", device=DEV_VT)
    bodies = [
        encode(DeviceEvent(**{k: v for k, v in event_fields(f"r-{i:06d}", i, DEV_VT, USER_VT).items() if k != "v"}))
        for i in range(n)
    ]
    whole: list[int] = []
    for i, body in enumerate(bodies):
        m = paho.MQTTMessage(i + 1, device_topic.encode())
        m.payload = body
        t0 = time.perf_counter_ns()
        client._on_message(client._client, None, m)
        whole.append(time.perf_counter_ns() - t0)
    router.ledger.close()
    if len(published) != n:
        raise RuntimeError(f"the router published {len(published)} of {n} alarms in the in-process measurement")
    ledger = Ledger(work / "router-bench" / "ledger-only.jsonl")
    line = {"cid": "a1b2c3d4-s1-00000-000001", "device": DEV_VT, "centre": CENTRE_VT, "delay_ms": 0.0}
    ledger_ns = timed(lambda: ledger.write("routed", **line), n)
    ledger.close()
    device = MqttClient(MqttSettings("mqtt://127.0.0.1:1"), "bench-publish")
    device._client.publish = stub_publish  # type: ignore[method-assign, assignment]
    wrapper = timed(lambda: device.publish(device_topic, bodies[0]), n)
    return {ROUTER_WHOLE: sorted(whole), LEDGER: ledger_ns, WRAPPER: wrapper}


# --- printing ----------------------------------------------------------------------------------------
def fmt_range(values: Iterable[float], unit: float, digits: int = 3) -> str:
    v = list(values)
    return f"{statistics.median(v) / unit:.{digits}f} [{min(v) / unit:.{digits}f}..{max(v) / unit:.{digits}f}]"


def us(samples: list[int]) -> str:
    s = sorted(samples)
    if not s:
        return "n/a"
    return f"p50 {pct(s, 50) / US:7.1f}  p99 {pct(s, 99) / US:7.1f}  max {s[-1] / US:8.1f} us (n={len(s)})"


def ratio_line(label: str, num: list[RoundResult], den: list[RoundResult]) -> str:
    n50, d50 = [pct(x.latency, 50) for x in num], [pct(x.latency, 50) for x in den]
    n99, d99 = [pct(x.latency, 99) for x in num], [pct(x.latency, 99) for x in den]
    r50 = [a / b for a, b in zip(n50, d50, strict=False)]
    r99 = [a / b for a, b in zip(n99, d99, strict=False)]
    return (
        f"    {label:<32} p50 {statistics.median(n50) / statistics.median(d50):5.2f}x"
        f" (rounds {min(r50):.2f}..{max(r50):.2f})   p99 {statistics.median(n99) / statistics.median(d99):5.2f}x"
        f" (rounds {min(r99):.2f}..{max(r99):.2f})"
    )


def median_p50(rows: list[RoundResult]) -> float:
    return statistics.median(pct(x.latency, 50) for x in rows)


def report(
    results: dict[tuple[str, str], list[RoundResult]],
    loads: list[Load],
    done_rounds: int,
    paths: dict[str, AnyPath],
    apart: dict[str, list[int]],
    codec: dict[str, tuple[list[int], list[int]]],
) -> None:
    print(f"\n== latency, ms: median of the {done_rounds} per-round percentiles [min..max across rounds] ==")
    router_p50, pre_name = p50(apart[ROUTER_WHOLE]), PRE_STAMP
    for load in loads:
        rows = {name: results.get((load.label, name), []) for name in paths}
        if not all(rows.values()):
            continue
        base, labraw, vt = rows[BASELINE], rows[LAB_RAW], rows[VTLAB]
        print(f"\n{load.label}, {load.count} alarms per round per path:")
        for name, rs in rows.items():
            print(
                f"  {name:<21} p50 {fmt_range([pct(x.latency, 50) for x in rs], MS)}"
                f"   p99 {fmt_range([pct(x.latency, 99) for x in rs], MS)}   lost {sum(x.lost for x in rs)}"
                f"   p50 first/last tenth {statistics.median(x.tenth(False) for x in rs) / MS:.3f}"
                f"/{statistics.median(x.tenth(True) for x in rs) / MS:.3f}"
            )
        print("  ratios of the medians (and of each round's pair):")
        print(ratio_line("vtlab / baseline", vt, base))
        print(ratio_line("lab, raw ends / baseline", labraw, base))
        print(ratio_line("vtlab / lab, raw ends", vt, labraw))
        b50, b99 = [pct(x.latency, 50) for x in base], [pct(x.latency, 99) for x in base]
        print(
            "  machine noise, spread of the baseline rounds ((max-min)/median):"
            f" p50 {(max(b50) - min(b50)) / statistics.median(b50) * 100:.0f}%,"
            f" p99 {(max(b99) - min(b99)) / statistics.median(b99) * 100:.0f}%"
        )
        lab_diff = (median_p50(labraw) - median_p50(base)) / US
        ends_diff = (median_p50(vt) - median_p50(labraw)) / US
        ends_code = (p50(paths[VTLAB].costs.get(load.label, pre_name)) + p50(apart[WRAPPER])) / US
        print(
            f"  p50 difference of the reference lab (lab, raw ends - baseline): {lab_diff:+.1f} us;"
            f" its MQTT handler measured apart: {router_p50 / US:.1f} us"
        )
        print(
            f"  p50 difference of vtlab's ends (vtlab - lab, raw ends): {ends_diff:+.1f} us;"
            f" their code between the two stamps (pre-stamp + MqttClient.publish): {ends_code:.1f} us"
        )
        print("  CPU per alarm, us (median over rounds): " + " / ".join(rows))
        for proc in vt[0].cpu:
            cells = []
            for rs in rows.values():
                cells.append(
                    f"{statistics.median(x.cpu[proc] / x.count for x in rs) / US:6.0f}"
                    if proc in rs[0].cpu
                    else "     -"
                )
            label = proc.replace("thread:", "  thread ")
            print(f"    {label:<26} {' / '.join(cells)}")
        print("  harness code per alarm in these rounds:")
        for path_name, what in (
            (VTLAB, ENCODE),
            (VTLAB, PUBLISH),
            (LAB_RAW, PUBLISH),
            (VTLAB, STIMULUS),
            (VTLAB, PRE_STAMP),
            (VTLAB, DECODE),
            (VTLAB, TRACK),
            (LAB_RAW, RECV_RAW),
        ):
            print(f"    {path_name:<14} {what:<56} {us(paths[path_name].costs.get(load.label, what))}")

    print("\n== measured apart, in this process (paho's publish stubbed) ==")
    for name, samples in apart.items():
        print(f"  {name}: {us(samples)}")
    print("  codec harness/protocols/wire_json.py against stdlib json on the same fields, per message:")
    for name, (mine, std) in codec.items():
        m, s = p50(mine) / US, p50(std) / US
        print(
            f"    {name:<44} p50 {m:6.1f} us (p99 {pct(mine, 99) / US:6.1f})   stdlib json {s:5.1f} us   {m / s:.1f}x"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per load (default 5)")
    ap.add_argument("--count-100", type=int, default=250, help="alarms per round and path at 100/s (default 250)")
    ap.add_argument("--count-1000", type=int, default=1000, help="alarms per round and path at 1000/s (default 1000)")
    ap.add_argument("--count-serial", type=int, default=300, help="alarms per round and path, one in flight (300)")
    ap.add_argument("--max-seconds", type=float, default=110.0, help="start no round after this (default 110)")
    args = ap.parse_args(argv)
    loads = [
        Load("100/s paced", args.count_100, 100.0),
        Load("1000/s paced", args.count_1000, 1000.0),
        Load("one in flight", args.count_serial, None),
    ]
    if args.rounds < 1 or any(ld.count < 20 for ld in loads):
        ap.error("--rounds >= 1 and every count >= 20")
    paced_s = 3 * args.rounds * sum(ld.count / ld.rate for ld in loads if ld.rate)
    if paced_s > args.max_seconds - 15:
        ap.error(f"the paced sending alone takes {paced_s:.0f} s; lower the counts or rounds or raise --max-seconds")
    t_start = time.monotonic()
    deadline = t_start + args.max_seconds - 12  # time left to measure apart, close and print

    with tempfile.TemporaryDirectory(prefix="vtlab-bench-") as tmp:
        work = Path(tmp)
        broker = start_broker(work / "broker", retain=False, max_packet_bytes=LabConfig().limits.max_packet_bytes)
        conf = work / "broker" / "mosquitto.conf"
        conf_lines = conf.read_text().splitlines() if conf.exists() else []
        print(f"date:    {datetime.now(UTC).isoformat(timespec='seconds')}")
        print(
            f"machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.platform()},"
            f" Python {platform.python_version()}, paho-mqtt {version('paho-mqtt')};"
            f" load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        if broker.kind == "mosquitto":
            exe = find_mosquitto() or "mosquitto"
            out = subprocess.run([exe, "-h"], capture_output=True, text=True, check=False).stdout
            name = out.splitlines()[0] if out else "mosquitto"
        else:
            name = f"amqtt {version('amqtt')} in its own process (mosquitto is not installed; MQTT 3.1.1)"
            MQTT["version"] = "3.1.1"
        nodelay_conf = next((ln for ln in conf_lines if "nodelay" in ln), "(none)")
        print(f"broker:  {name} at {broker.url}, started by this run for all paths; its config: {nodelay_conf}")
        lab: LabProcess | None = None
        paths: dict[str, AnyPath] = {}
        results: dict[tuple[str, str], list[RoundResult]] = {}
        done_rounds = 0
        try:
            relay = Relay(
                broker.url,
                topic(RELAY_SITE, "device_event", device="+"),
                topic(RELAY_SITE, "centre_alarm", centre=CENTRE_RAW),
                work,
            )
            lab = LabProcess(
                LabConfig(
                    broker=BrokerSettings(external_url=broker.url, mqtt_version=MQTT["version"]),
                    site=LAB_SITE,
                    devices={DEV_VT: DeviceSettings(user=USER_VT), DEV_RAW: DeviceSettings(user=USER_RAW)},
                    routing={USER_VT: CENTRE_VT, USER_RAW: CENTRE_RAW},
                ),
                work / "lab",
            ).start()
            assert lab.pid is not None
            paths[BASELINE] = RawEndsPath(BASELINE, broker.url, RELAY_SITE, relay.pid)
            paths[LAB_RAW] = RawEndsPath(LAB_RAW, broker.url, LAB_SITE, lab.pid)
            paths[VTLAB] = VtlabPath(broker.url, lab.pid, work)
            sockets = {k: v for p in paths.values() for k, v in p.sockets().items()}
            print(
                "TCP_NODELAY (getsockopt): "
                + "; ".join(f"{k} {v}" for k, v in sockets.items())
                + f"; raw relay process {relay.ready.get('tcp_nodelay')}"
            )
            print(f"vtlab modules the raw relay imported: {len(relay.ready.get('vtlab_modules', []))}")
            fields = event_fields("a1b2c3d4-s1-00000-000001", 1)
            body = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
            routed = encode(
                RoutedAlarm(**{k: v for k, v in fields.items() if k != "v"}, centre=CENTRE_RAW, routed=fields["sent"])
            )
            print(
                f"MQTT {MQTT['version']}, QoS 1; payload: device event {len(body)} B on every path;"
                f" the raw relay forwards it unchanged, the lab"
                f" publishes a routed alarm of {len(routed)} B"
            )
            pids = {"broker": broker.process.pid}
            for p in paths.values():  # warm-up, not measured
                run_round(p, Load("warm-up", WARMUP, 1000.0), f"{random.getrandbits(32):08x}-s0", {})
            order = list(paths.values())
            for r in range(args.rounds):
                if time.monotonic() > deadline:
                    print(f"--max-seconds reached: {r} of {args.rounds} rounds done")
                    break
                for load in loads:
                    for p in order if r % 2 == 0 else order[::-1]:
                        res = run_round(p, load, f"{random.getrandbits(32):08x}-s{r + 1}", {**pids, **p.pids})
                        results.setdefault((load.label, p.name), []).append(res)
                done_rounds += 1
                print(f"round {r + 1}/{args.rounds} done ({time.monotonic() - t_start:.0f} s)", flush=True)
            print(f"load average after the rounds: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            apart = router_costs(work)
            codec = codec_costs()
        finally:
            for p in paths.values():
                p.close()
            if lab is not None:
                lab.stop()
            with contextlib.suppress(NameError):
                relay.close()
            broker.stop()
        if done_rounds:
            report(results, loads, done_rounds, paths, apart, codec)
    print(f"\nwall time: {time.monotonic() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
