"""Alarm path latency: vtlab's device -> reference lab -> response-centre probe path against a raw
paho -> broker -> paho baseline, measured on one broker in one run.

    .venv/bin/python benchmarks/alarm_path_latency.py [--rate 200] [--count 2000] [--rounds 5]

Path A (raw): a paho client publishes ~256-byte JSON at QoS 1 to a broker; a paho subscriber in this
process receives it. Latency: time.monotonic_ns() just before publish() -> on_message.
Path B (vtlab): a SimulatedDevice sends safety-alarm events (docs/wire.md) through an MqttTransport;
the reference lab (LabProcess, using this broker) routes them to the centre topic, where a
ResponseCentreProbe + Tracker (with an EvidenceStore in a temp dir) record them. Latency: the device's
send stamp -> the arrival's t_ns in the evidence store.
Both are paced at --rate (never a blast), interleaved A, B, A, B ... for --rounds rounds.
Percentiles: exact, from the sorted samples of each round (no histogram bucketing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.safety_alarm import SAFETY_ALARM
from devices.simulated import SimulatedDevice
from harness.evidence import EvidenceReader, EvidenceStore
from harness.lab.broker import RunningBroker, find_mosquitto, start_broker
from harness.lab.config import BrokerSettings, DeviceSettings, LabConfig
from harness.lab.process import LabProcess
from harness.lab.router import Ledger
from harness.labfile import DEFAULT_TOPICS
from harness.probes.response_centre import ResponseCentreProbe
from harness.tracking import Tracker
from harness.transports.base import Message
from harness.transports.mqtt import MqttSettings, MqttTransport

SITE, DEVICE, USER, CENTRE = "bench", "sa-bench", "persona/bench", "rc-bench"
WARMUP = 50  # messages per path before round 1, not measured
NS_PER_MS = 1_000_000


def topic(name: str, **fill: str) -> str:
    return DEFAULT_TOPICS[name].format(site=SITE, **fill)


def percentile(sorted_ns: list[int], p: float) -> float:
    """Exact nearest-rank percentile, in milliseconds."""
    rank = max(1, -(-len(sorted_ns) * p // 100))  # ceil(n * p / 100)
    return sorted_ns[int(rank) - 1] / NS_PER_MS


def paced(rate: float, count: int, send: Callable[[int], None]) -> None:
    """Call send(i) at an absolute schedule of `rate` per second (a late send never causes a burst
    larger than the backlog; pacing jitter does not enter latency, which starts at the send)."""
    interval = 1e9 / rate
    start = time.monotonic_ns()
    for i in range(count):
        wait = start + i * interval - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        send(i)


# --- path A: raw paho -> broker -> paho -------------------------------------------------------------
class RawPath:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._addr = (parts.hostname or "127.0.0.1", parts.port or 1883)
        self._sent: dict[int, int] = {}
        self._latency: list[int] = []
        self._lock = threading.Lock()
        self._expected = 0
        self._done = threading.Event()
        self.sub = self._client("bench-raw-sub")
        self.sub.on_message = self._on_message
        granted = threading.Event()
        self.sub.on_subscribe = lambda *_a: granted.set()
        self.sub.subscribe("bench/raw", qos=1)
        if not granted.wait(5):
            raise RuntimeError("the broker did not grant the raw subscription")
        self.pub = self._client("bench-raw-pub")
        self._pad = "x" * 256

    def _client(self, client_id: str) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        connected = threading.Event()
        client.on_connect = lambda *_a: connected.set()
        client.connect(*self._addr, keepalive=30)
        client.loop_start()
        if not connected.wait(5):
            raise RuntimeError(f"no CONNACK for {client_id}")
        return client

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        arrived = time.monotonic_ns()
        seq = json.loads(msg.payload)["seq"]
        with self._lock:
            self._latency.append(arrived - self._sent[seq])
            if len(self._latency) >= self._expected:
                self._done.set()

    def payload(self, seq: int) -> bytes:
        head = {"v": 1, "seq": seq, "device": DEVICE, "event": "personal_emergency", "pad": ""}
        head["pad"] = self._pad[: 256 - len(json.dumps(head))]
        return json.dumps(head).encode()

    def round(self, rate: float, count: int) -> list[int]:
        with self._lock:
            self._sent.clear()
            self._latency = []
            self._expected = count
            self._done.clear()
        payloads = [self.payload(i) for i in range(count)]

        def send(i: int) -> None:
            self._sent[i] = time.monotonic_ns()  # stamped before the arrival can be handled
            self.pub.publish("bench/raw", payloads[i], qos=1)

        paced(rate, count, send)
        self._done.wait(10)
        with self._lock:
            return sorted(self._latency)

    def close(self) -> None:
        for client in (self.pub, self.sub):
            client.disconnect()
            client.loop_stop()


# --- path B: SimulatedDevice -> broker -> reference lab -> broker -> ResponseCentreProbe -------------
class TimedTracker(Tracker):
    """The real Tracker, counting arrivals and timing its handler on the probe's network thread."""

    def __init__(self, evidence: EvidenceStore) -> None:
        super().__init__(evidence)
        self.handler_ns: list[int] = []
        self.arrived = 0
        self.cond = threading.Condition()

    def on_message(self, probe: str, kind: str, message: Message) -> None:
        t0 = time.monotonic_ns()
        super().on_message(probe, kind, message)
        with self.cond:
            self.handler_ns.append(time.monotonic_ns() - t0)
            self.arrived += 1
            self.cond.notify_all()


class VtlabPath:
    def __init__(self, url: str, workdir: Path, *, bare: bool = False) -> None:
        config = LabConfig(
            broker=BrokerSettings(external_url=url, mqtt_version="5"),
            site=SITE,
            devices={DEVICE: DeviceSettings(user=USER)},
            routing={USER: CENTRE},
            default_centre=CENTRE,
        )
        self.lab = LabProcess(config, workdir / "lab").start()
        self.evidence = EvidenceStore.create(workdir / "run")
        self.tracker = TimedTracker(self.evidence)
        self.centre = MqttTransport(MqttSettings(url, version="5"), name="bench-centre")
        self.centre.connect()
        ResponseCentreProbe("centre", CENTRE, self.centre, topic, self.tracker).start()
        self.link = MqttTransport(MqttSettings(url, version="5"), name="bench-device")
        self.link.connect()
        self.device = SimulatedDevice(DEVICE, SAFETY_ALARM, USER, self.link, topic)
        self._spec = SAFETY_ALARM.events["button_press"]
        self._sent: dict[str, int] = {}
        self._bare: dict[str, int] = {}
        self.bare: MqttTransport | None = None
        if bare:  # --diagnose: a second subscriber that only stamps, beside the real probe
            self.bare = MqttTransport(MqttSettings(url, version="5"), name="bench-bare")
            self.bare.connect()
            self.bare.subscribe(topic("centre_alarm", centre=CENTRE), self._on_bare)

    def _on_bare(self, message: Message) -> None:
        self._bare[json.loads(message.payload)["cid"]] = message.arrived_ns

    def bare_latency(self) -> list[int]:
        """The last round's alarms as stamped by the bare subscriber (no Tracker, no evidence)."""
        return sorted(t - self._sent[cid] for cid, t in self._bare.items() if cid in self._sent)

    def round(self, rate: float, count: int, scenario: str) -> list[int]:
        self.tracker.scenario = scenario
        with self.tracker.cond:
            self.tracker.arrived = 0
        sent: dict[str, int] = {}
        self._sent, self._bare = sent, {}

        def send(i: int) -> None:
            cid = f"{scenario}-{i:06d}"
            payload, t_ns = self.device.send(self._spec, cid, i)
            sent[cid] = t_ns
            self.evidence.stimulus(scenario, cid, DEVICE, self._spec.event, i, 0, t_ns, payload)  # as a run does

        paced(rate, count, send)
        with self.tracker.cond:
            self.tracker.cond.wait_for(lambda: self.tracker.arrived >= count, timeout=10)
        self.evidence.flush()  # writes are queued to a writer thread
        reader = EvidenceReader(self.evidence.path)
        try:
            arrivals = [(r["cid"], r["t_ns"]) for r in reader.arrivals(scenario) if r["kind"] == "alarm"]
        finally:
            reader.close()
        return sorted(t - sent[cid] for cid, t in arrivals if cid in sent)

    def close(self) -> None:
        if self.bare is not None:
            self.bare.close()
        self.link.close()
        self.centre.close()
        self.lab.stop()
        self.evidence.close()


# --- reporting ----------------------------------------------------------------------------------------
def broker_version(broker: RunningBroker) -> str:
    if broker.kind == "amqtt":
        return f"amqtt {version('amqtt')}"
    exe = find_mosquitto() or "mosquitto"
    out = subprocess.run([exe, "-h"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "mosquitto (version unknown)"


def spread(values: list[float]) -> str:
    mid = statistics.median(values)
    return f"{(max(values) - min(values)) / mid * 100:5.1f}%" if mid else "n/a"


def ledger_write_cost(workdir: Path, n: int = 2000) -> list[int]:
    """What the lab router does per routed alarm before paho can write it out: one ledger line, flushed."""
    ledger = Ledger(workdir / "ledger-probe.jsonl")
    costs = []
    for i in range(n):
        t0 = time.monotonic_ns()
        ledger.write("routed", cid=f"x-{i:06d}", device=DEVICE, centre=CENTRE, delay_ms=0.0)
        costs.append(time.monotonic_ns() - t0)
    ledger.close()
    return sorted(costs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rate", type=float, default=200.0, help="messages per second, both paths (default 200)")
    ap.add_argument("--count", type=int, default=2000, help="messages per path per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=5, help="A/B rounds (default 5)")
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="also stamp each routed alarm with a bare subscriber (no Tracker/evidence) beside the probe",
    )
    args = ap.parse_args(argv)
    if args.rate <= 0 or args.count < 10 or args.rounds < 1:
        ap.error("--rate must be > 0, --count >= 10, --rounds >= 1")

    estimate = 2 * args.rounds * args.count / args.rate
    kind = "mosquitto" if find_mosquitto() else "amqtt"
    if kind == "amqtt":
        print("mosquitto is not installed: using amqtt in its own process (far slower; not comparable to mosquitto)")
    with tempfile.TemporaryDirectory(prefix="vtlab-bench-") as tmp:
        work = Path(tmp)
        broker = start_broker(work / "broker", kind=kind)
        print(
            f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
            f"paho-mqtt {version('paho-mqtt')}, {platform.platform()}"
        )
        print(f"broker:  {broker_version(broker)} at {broker.url} (started by this run)")
        print(
            f"load:    QoS 1, MQTT 5, {args.rate:g} msg/s paced, {args.count} msg per path per round, "
            f"{args.rounds} rounds A,B,A,B... (~{estimate:.0f} s of sending)"
        )
        print("percentiles: exact (sorted samples, nearest rank); latency in ms\n")
        raw: RawPath | None = None
        lab: VtlabPath | None = None
        try:
            raw = RawPath(broker.url)
            lab = VtlabPath(broker.url, work, bare=args.diagnose)
            print(
                f"payload: raw {len(raw.payload(0))} B; vtlab event "
                f"{len(json.dumps(lab.device.encode(lab._spec, 'r1-000000', 0)))} B (+ centre, routed from the lab)"
            )
            raw.round(args.rate, WARMUP)
            lab.round(args.rate, WARMUP, "warmup")
            results: dict[str, list[tuple[float, float]]] = {"raw": [], "vtlab": [], "bare": []}
            print(f"{'round':>5}  {'raw p50':>8} {'raw p99':>8}  {'vtlab p50':>9} {'vtlab p99':>9}  lost raw/vtlab")
            for r in range(1, args.rounds + 1):
                a = raw.round(args.rate, args.count)
                b = lab.round(args.rate, args.count, f"round-{r}")
                for name, lat in (("raw", a), ("vtlab", b), ("bare", lab.bare_latency())):
                    if lat:
                        results[name].append((percentile(lat, 50), percentile(lat, 99)))
                (ra50, ra99), (vb50, vb99) = results["raw"][-1], results["vtlab"][-1]
                bare = "  (bare subscriber p50 {:.3f} p99 {:.3f})".format(*results["bare"][-1]) if args.diagnose else ""
                lost = f"{args.count - len(a)}/{args.count - len(b)}"
                print(f"{r:>5}  {ra50:8.3f} {ra99:8.3f}  {vb50:9.3f} {vb99:9.3f}  {lost:>14}{bare}")
            handler = sorted(lab.tracker.handler_ns)
        finally:
            if lab is not None:
                lab.close()
            if raw is not None:
                raw.close()
            broker.stop()

        print("\nmedian across rounds (spread = (max-min)/median across rounds):")
        med: dict[str, tuple[float, float]] = {}
        for name, rows in results.items():
            if not rows:
                continue
            p50s, p99s = [x[0] for x in rows], [x[1] for x in rows]
            med[name] = (statistics.median(p50s), statistics.median(p99s))
            print(
                f"  {name:<6} p50 {med[name][0]:7.3f} ms (spread {spread(p50s)})   "
                f"p99 {med[name][1]:7.3f} ms (spread {spread(p99s)})"
            )
        (r50, r99), (v50, v99) = med["raw"], med["vtlab"]
        print(f"  ratio vtlab/raw: p50 {v50 / r50:.2f}x   p99 {v99 / r99:.2f}x")

        ledger = ledger_write_cost(work)
        print("\nwhere the vtlab path's extra time goes:")
        print("  two broker hops instead of one: device -> broker -> lab router -> broker -> probe, i.e. about")
        print("  2x the raw path, plus the router's handling (JSON parse, routing, JSON dump, ledger line).")
        print(
            f"  probe handler (Tracker: JSON parse + one SQLite evidence insert, on paho's network thread):"
            f" p50 {percentile(handler, 50):.3f} ms, p99 {percentile(handler, 99):.3f} ms,"
            f" max {handler[-1] / NS_PER_MS:.1f} ms, {sum(h > 5 * NS_PER_MS for h in handler)} calls over 5 ms;"
        )
        print("    it runs after the arrival stamp, but alarms arriving while it runs wait in the socket and are")
        print("    stamped late (compare the bare subscriber with --diagnose).")
        print(
            f"  lab ledger line (write + flush, measured here with the lab's Ledger):"
            f" p50 {percentile(ledger, 50):.3f} ms, p99 {percentile(ledger, 99):.3f} ms;"
        )
        print("    the router writes it inside paho's on_message, before paho's loop sends the routed alarm.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
