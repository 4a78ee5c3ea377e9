"""Load path capacity: vtlab's locust load path against raw paho on the same broker in the same run,
and a fleet of simulated devices held connected against the embedded lab.

    .venv/bin/python benchmarks/load_capacity.py [--rounds 3] [--fleet 10000] [--fleet-workers 2]

Part A (same broker: a plain mosquitto this script starts; no TLS, no ACL, no router on either path):
- raw: one paho publisher -> mosquitto -> one paho subscriber, QoS 1, ~256-byte JSON, in this process.
  Throughput: N messages flat out, N / (last arrival - first publish). Latency: paced on an absolute
  schedule, from the *intended* send time to the arrival (the same definition as the load path).
- load: `run_load` in direct mode (devices publish alarms, the probe subscribes to the devices' event
  topic: no reference-lab router in between), i.e. locust device users with the wire codec -> broker ->
  the probe with per-alarm correlation, evidence ingestion running (the probe's operator acknowledgement
  per alarm only with `--acknowledge`: with no platform in between nothing brings it back). Throughput:
  an open-model schedule far above what it can do ("blast"), delivered / (last arrival - first intended
  send). Latency: paced, p99 from the merged HdrHistogram.
Ratios: load/raw throughput, and p99 at half the raw throughput (and at half the load path's own).

Part B (the embedded lab, mqtts with per-device certificates and broker access rules): `--fleet`
devices connected and heartbeating (60 s) with a trickle of alarms; resident memory and CPU of the
locust processes per device.

Each part prints every round, the median and the spread ((max - min) / median). Exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.lab.broker import start_broker  # noqa: E402
from harness.load.runner import LoadOptions, run_load  # noqa: E402

CONTRACT = next((ROOT / "fixtures" / "contract").glob("*.yaml"))
NS = 1_000_000_000


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"median {med:.3f}, spread {(max(values) - min(values)) / med * 100:.0f}%" if med else "n/a"


# --- raw paho ---------------------------------------------------------------------------------------
class Raw:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.addr = (parts.hostname or "127.0.0.1", parts.port or 1883)
        self.lock = threading.Lock()
        self.arrivals: dict[int, int] = {}
        self.expected = 0
        self.done = threading.Event()
        self.sub = self.client("raw-sub")
        self.sub.on_message = self.on_message
        granted = threading.Event()
        self.sub.on_subscribe = lambda *_a: granted.set()
        self.sub.subscribe("bench/raw", qos=1)
        granted.wait(5)
        self.pub = self.client("raw-pub")

    def client(self, cid: str) -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
        c.max_inflight_messages_set(1000)  # as vtlab's MqttClient
        ok = threading.Event()
        c.on_connect = lambda *_a: ok.set()
        c.connect(*self.addr, keepalive=30)
        c.loop_start()
        if not ok.wait(5):
            raise RuntimeError("no CONNACK")
        return c

    def on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        t = time.monotonic_ns()
        seq = json.loads(msg.payload)["seq"]
        with self.lock:
            self.arrivals[seq] = t
            if len(self.arrivals) >= self.expected:
                self.done.set()

    @staticmethod
    def payload(seq: int) -> bytes:
        head = {"v": 1, "seq": seq, "cid": f"raw-{seq}", "device": "ld-00000", "event": "personal_emergency"}
        text = json.dumps(head)
        return (text[:-1] + ',"pad":"' + "x" * max(0, 244 - len(text)) + '"}').encode()

    def _reset(self, n: int) -> None:
        with self.lock:
            self.arrivals = {}
            self.expected = n
            self.done.clear()

    def throughput(self, n: int) -> float:
        self._reset(n)
        payloads = [self.payload(i) for i in range(n)]
        t0 = time.monotonic_ns()
        for p in payloads:
            self.pub.publish("bench/raw", p, qos=1)
        self.done.wait(60)
        with self.lock:
            got, last = len(self.arrivals), max(self.arrivals.values(), default=t0)
        return got / ((last - t0) / NS)

    def paced_p99(self, rate: float, seconds: float) -> tuple[float, int, int]:
        n = max(1, int(rate * seconds))
        self._reset(n)
        payloads = [self.payload(i) for i in range(n)]
        t0 = time.monotonic_ns() + 50_000_000
        intended = [t0 + round(i * NS / rate) for i in range(n)]
        for i, p in enumerate(payloads):
            wait = intended[i] - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / NS)
            self.pub.publish("bench/raw", p, qos=1)
        self.done.wait(30)
        with self.lock:
            lat = sorted(self.arrivals[i] - intended[i] for i in self.arrivals)
        return (lat[min(len(lat) - 1, int(0.99 * len(lat)))] / 1e6 if lat else float("nan")), len(lat), n

    def close(self) -> None:
        for c in (self.pub, self.sub):
            c.disconnect()
            c.loop_stop()


# --- the load path -----------------------------------------------------------------------------------
def persona_centres(users: Path) -> list[str]:
    """Every centre the synthetic users belong to (a lab file must list them all)."""
    import yaml

    return sorted({p["centre"] for p in yaml.safe_load(users.read_text(encoding="utf-8"))["personas"]})


def lab_file(folder: Path, url: str, devices: int) -> Path:
    users = ROOT / "fixtures" / "users" / "personas.yaml"
    lines = [
        "name: Benchmark broker",
        "platform: {kind: external}",
        f"mqtt: {{url: '{url}', version: '5'}}",
        "site: bench",
        f"users: {users}",
        "centres: {" + ", ".join(f"{c}: {{name: {c}}}" for c in persona_centres(users)) + "}",
        "probes: {response_centre: {centre: rs-vest}}",
        "devices:",
        *(f"  ld-{i:05d}: {{model: safety_alarm, user: persona/ragnhild-87, heartbeat: 60s}}" for i in range(devices)),
    ]
    path = folder / "bench-lab.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_run(
    folder: Path,
    lab: Path | None,
    *,
    devices: int,
    rate: float,
    seconds: float,
    workers: int,
    direct: bool,
    heartbeat: str = "60s",
    connect: str | None = None,
    drain: str = "3s",
    max_lag: str = "100ms",
    acknowledge: bool = True,
) -> dict[str, Any]:
    scenario = folder / f"bench-{time.monotonic_ns()}.yaml"
    extra = f", connect: {connect}" if connect else ""
    extra += "" if acknowledge else ", acknowledge: false"
    scenario.write_text(
        "title: Benchmark\ncovers: [TA-4.1]\n"
        f"load: {{shape: steady, devices: {devices}, rate: {rate:.3f}/s, duration: {seconds:g}s, "
        f"heartbeat: {heartbeat}, drain: {drain}, max_lag: {max_lag}{extra}}}\n"
        'criteria:\n  - {metric: lost, count: "== 0"}\n',
        encoding="utf-8",
    )
    lines: list[str] = []
    result = run_load(
        scenario,
        lab,
        LoadOptions(
            report_dir=folder / "runs", contract=CONTRACT, workers=workers, direct=direct, progress=lines.append
        ),
    )
    db = sqlite3.connect(result.run_dir / "evidence.sqlite")
    try:
        (first,) = db.execute("SELECT min(t_ns) FROM stimuli").fetchone()
        (last,) = db.execute("SELECT max(a.t_ns) FROM arrivals a").fetchone()
        (delivered,) = db.execute(
            "SELECT count(*) FROM matches WHERE metric = 'alarm_latency' AND outcome IN ('ok', 'late', 'altered')"
        ).fetchone()
        (sent,) = db.execute("SELECT count(*) FROM stimuli").fetchone()
    finally:
        db.close()
    merged = result.merged or {}
    capacity = json.loads((result.run_dir / "load" / "capacity.json").read_text())
    return {
        "status": result.status.value,
        "faults": result.faults,
        "sent": sent,
        "delivered": delivered,
        "throughput": delivered / ((last - first) / NS) if last and first and last > first else 0.0,
        "p99": (merged.get("alarm") or {}).get("p99"),
        "lag_p99": (merged.get("lag") or {}).get("p99"),
        "nodes": merged.get("nodes", []),
        "generator": capacity["generator"],
        "run_dir": str(result.run_dir),
    }


def part_a(args: argparse.Namespace, folder: Path) -> None:
    broker = start_broker(folder / "broker")
    try:
        lab = lab_file(folder, broker.url, args.devices)
        raw = Raw(broker.url)
        raw.throughput(2000)  # warm-up
        raw_tp, load_tp = [], []
        for r in range(args.rounds):
            raw_tp.append(raw.throughput(args.raw_count))
            blast = load_run(
                folder,
                lab,
                devices=args.devices,
                rate=3 * raw_tp[-1],
                seconds=args.blast_seconds,
                workers=args.workers,
                direct=True,
                max_lag="1h",
                acknowledge=args.acknowledge,
            )
            load_tp.append(blast["throughput"])
            print(
                f"round {r + 1}: raw {raw_tp[-1]:.0f} msg/s; load path {load_tp[-1]:.0f} alarms/s "
                f"(sent {blast['sent']}, delivered {blast['delivered']}; generator lag p99 {blast['lag_p99']} ms, "
                f"cpu {[round(n.get('cpu_mean') or 0, 2) for n in blast['nodes']]}) -> "
                f"{load_tp[-1] / raw_tp[-1] * 100:.1f}%",
                flush=True,
            )
        ratios = [a / b for a, b in zip(load_tp, raw_tp, strict=True)]
        print(
            f"THROUGHPUT raw {spread(raw_tp)} msg/s; load {spread(load_tp)} alarms/s; "
            f"load/raw {spread([x * 100 for x in ratios])} % (target >= 70 %)",
            flush=True,
        )
        raw_max, load_max = statistics.median(raw_tp), statistics.median(load_tp)
        for label, rate in (
            ("half the raw throughput", raw_max / 2),
            ("half the load path's throughput", load_max / 2),
        ):
            raw_p99, load_p99, added = [], [], []
            for r in range(args.rounds):
                p99, got, n = raw.paced_p99(rate, args.paced_seconds)
                res = load_run(
                    folder,
                    lab,
                    devices=args.devices,
                    rate=rate,
                    seconds=args.paced_seconds,
                    workers=args.workers,
                    direct=True,
                    acknowledge=args.acknowledge,
                )
                raw_p99.append(p99)
                load_p99.append(float(res["p99"] or "nan"))
                added.append(load_p99[-1] - raw_p99[-1])
                print(
                    f"round {r + 1} at {rate:.0f}/s ({label}): raw p99 {p99:.3f} ms ({got}/{n}); load p99 "
                    f"{load_p99[-1]:.3f} ms ({res['delivered']}/{res['sent']}, {res['status']}, generator lag "
                    f"p99 {res['lag_p99']} ms) -> added {added[-1]:.3f} ms",
                    flush=True,
                )
            print(
                f"P99 at {rate:.0f}/s ({label}): raw {spread(raw_p99)} ms; load {spread(load_p99)} ms; "
                f"added median {statistics.median(added):.3f} ms (target <= 1 ms)",
                flush=True,
            )
        raw.close()
    finally:
        broker.stop()


def part_b(args: argparse.Namespace, folder: Path) -> None:
    n = args.fleet
    connect = f"{2 + n // 60}s"  # the TLS handshakes of a big fleet take a while on 2 cores
    res = load_run(
        folder,
        None,
        devices=n,
        rate=1.0,
        seconds=args.fleet_seconds,
        workers=args.fleet_workers,
        direct=False,
        heartbeat="60s",
        connect=connect,
    )
    gen = res["generator"]
    by_node: dict[str, list[dict[str, Any]]] = {}
    for g in gen:
        by_node.setdefault(g["node"], []).append(g)
    rss_first = sum(g[0]["rss_mb"] or 0 for g in by_node.values())
    rss_last = sum(g[-1]["rss_mb"] or 0 for g in by_node.values())
    connected = sum(g[-1]["connected"] or 0 for g in by_node.values())
    steady = [x for g in by_node.values() for x in g[-max(1, int(args.fleet_seconds) // 2) :]]
    cpu_total = sum(
        statistics.mean(x["cpu"] for x in g[-max(1, int(args.fleet_seconds) // 2) :]) for g in by_node.values()
    )
    heartbeats = sum(g[-1]["heartbeats"] for g in by_node.values())
    print(
        f"FLEET {n} devices over {len(by_node)} locust worker(s): connected {connected}; run {res['status']} "
        f"{res['faults'] or ''}"
    )
    print(
        f"  memory: {rss_first:.0f} MB before the fleet connected, {rss_last:.0f} MB with it -> "
        f"{(rss_last - rss_first) * 1024 / max(1, connected):.1f} KB per device"
    )
    print(
        f"  cpu while heartbeating (last half of the schedule, {len(steady)} samples): {cpu_total * 100:.1f}% of a "
        f"core in all -> {cpu_total * 1e6 / max(1, connected):.1f} us of CPU per device per second"
    )
    print(
        f"  heartbeats sent {heartbeats}; alarms {res['sent']} sent, {res['delivered']} delivered; "
        f"p99 {res['p99']} ms; run folder {res['run_dir']}",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--raw-count", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=100, help="devices of the load path in part A")
    ap.add_argument("--workers", type=int, default=0, help="locust workers in part A (0: one process)")
    ap.add_argument("--blast-seconds", type=float, default=5.0)
    ap.add_argument("--paced-seconds", type=float, default=5.0)
    ap.add_argument(
        "--acknowledge",
        action="store_true",
        help="part A: the probe also acknowledges each alarm as an operator would (with no platform in "
        "between nothing brings the acknowledgement back, so each is recorded lost; off by default: the target "
        "is publish -> subscribe with correlation)",
    )
    ap.add_argument("--fleet", type=int, default=10000, help="devices in part B (0: skip)")
    ap.add_argument("--fleet-workers", type=int, default=2)
    ap.add_argument("--fleet-seconds", type=float, default=60.0)
    ap.add_argument("--skip-paths", action="store_true", help="skip part A")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}", flush=True)
    print(f"part A: the probe {'acknowledges' if args.acknowledge else 'does not acknowledge'} each alarm", flush=True)
    with tempfile.TemporaryDirectory(prefix="vtlab-bench-load-") as tmp:
        folder = Path(tmp)
        if not args.skip_paths:
            part_a(args, folder)
        if args.fleet:
            part_b(args, folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
