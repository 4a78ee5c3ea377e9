"""The reference lab's memory under a flood of hostile MQTT input, as a ratio against its own idle RSS.

    .venv/bin/python benchmarks/lab_memory_under_flood.py [--count 6000] [--cid-bytes 100000] [--max-seconds 120]

One run: a LabProcess (its own broker on loopback, plain MQTT: mosquitto, or amqtt when absent) with
one known device. After 50 valid alarms (warm-up) the lab's idle RSS is read from /proc. Then one paho
client floods it with `--count` messages, a mix of
  - events with a `--cid-bytes` correlation id (the case that grew the lab to 911 MB before),
  - events with bad field types (priority "x", seq -1),
  - events and heartbeats from devices the lab does not know (random ids),
  - heartbeats with an absurd interval (1e9 s),
  - one message in 500 of 1 MB, each from a short-lived client of its own (mosquitto's max_packet_size
    refuses it and drops that client; amqtt passes it to the lab, whose codec refuses it),
paced only by QoS 1 acknowledgements, and bounded by --max-seconds. Then it waits for the lab's
ledger to account for every message, sends one valid alarm and checks it is routed.

Printed: idle RSS, peak RSS (VmHWM) and final RSS of the lab process, the ratios peak/idle and
final/idle, the count of rejected ledger lines, and whether the valid alarm after the flood arrived.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess

SITE = "bench"


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def event(cid: str, device: str = "sa-1", **extra: object) -> bytes:
    body = {"v": 1, "cid": cid, "device": device, "event": "personal_emergency", "code": "101", **extra}
    return json.dumps(body).encode()


class Client:
    """A paho client that reconnects after the broker drops it (oversized packets) and counts PUBACKs."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 1883
        self.c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.c.max_inflight_messages_set(50)
        self.c.reconnect_delay_set(min_delay=1, max_delay=1)
        self.connected = threading.Event()
        self.arrived = threading.Event()
        self.disconnects = 0
        self.c.on_connect = lambda *_a: self.connected.set()
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda _c, _u, m: self.arrived.set() if b'"after-flood"' in m.payload else None
        self.c.connect(self.host, self.port)
        self.c.loop_start()
        if not self.connected.wait(10):
            raise SystemExit("no connection to the lab's broker")

    def _on_disconnect(self, *_a: object) -> None:
        self.connected.clear()
        self.disconnects += 1

    def publish(self, topic: str, payload: bytes) -> None:
        self.connected.wait(10)
        info = self.c.publish(topic, payload, qos=1)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            info.wait_for_publish(timeout=10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def one_megabyte(url: str, topic: str, payload: bytes) -> bool:
    """Publish once from a client of its own; True when the broker dropped that client for it."""
    c = Client(url)
    info = c.c.publish(topic, payload, qos=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and c.disconnects == 0 and not info.is_published():
        time.sleep(0.01)
    dropped = c.disconnects > 0
    c.close()
    return dropped


def rejected_count(lab: LabProcess) -> int:
    return sum(1 for x in lab.ledger() if x["action"] == "rejected")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=6000)
    ap.add_argument("--cid-bytes", type=int, default=100_000)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    config = LabConfig.model_validate(
        {
            "site": SITE,
            "broker": {"mqtt_version": "3.1.1"},
            "devices": {"sa-1": {"user": "persona/a", "heartbeat_interval_s": 60}},
            "centres": ["rc-a"],
            "routing": {"persona/a": "rc-a"},
        }
    )
    ev_topic = f"vtlab/{SITE}/device/{{}}/event"
    hb_topic = f"vtlab/{SITE}/device/{{}}/heartbeat"
    with tempfile.TemporaryDirectory(prefix="vtlab-bench-") as tmp, LabProcess(config, Path(tmp) / "lab") as lab:
        assert lab.pid is not None
        print(f"lab pid {lab.pid}, broker {lab.broker_kind} at {lab.broker_url}")
        client = Client(lab.broker_url)
        client.c.subscribe(f"vtlab/{SITE}/centre/+/alarm", qos=1)
        for i in range(50):
            client.publish(ev_topic.format("sa-1"), event(f"warm-{i}"))
        deadline = time.monotonic() + 10
        while sum(1 for x in lab.ledger() if x["action"] == "routed") < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        idle = rss_kib(lab.pid)["VmRSS"]
        pad = "c" * args.cid_bytes
        kinds = {"big_cid": 0, "bad_fields": 0, "unknown_device": 0, "absurd_heartbeat": 0, "one_megabyte": 0}
        t0 = time.monotonic()
        sent = 0
        dropped_for_size = 0
        for i in range(args.count):
            if time.monotonic() - t0 > args.max_seconds:
                print(f"stopped at the time bound after {sent} messages")
                break
            r = i % 10
            if i % 500 == 499:
                dropped_for_size += one_megabyte(
                    lab.broker_url, ev_topic.format("sa-1"), event("m", pad="x" * 1_000_000)
                )
                kinds["one_megabyte"] += 1
            elif r < 6:
                client.publish(ev_topic.format("sa-1"), event(f"{i}-{pad}"))
                kinds["big_cid"] += 1
            elif r < 8:
                client.publish(ev_topic.format("sa-1"), event(f"b-{i}", priority="x", seq=-1))
                kinds["bad_fields"] += 1
            elif r < 9:
                ghost = f"ghost-{rnd.getrandbits(64):x}"
                client.publish(ev_topic.format(ghost), event(f"g-{i}", ghost))
                client.publish(hb_topic.format(ghost), json.dumps({"v": 1, "device": ghost, "interval_s": 1}).encode())
                kinds["unknown_device"] += 1
            else:
                client.publish(
                    hb_topic.format("sa-1"), json.dumps({"v": 1, "device": "sa-1", "interval_s": 1e9}).encode()
                )
                kinds["absurd_heartbeat"] += 1
            sent += 1
        flood_s = time.monotonic() - t0
        passed_1mb = kinds["one_megabyte"] - dropped_for_size  # these reach the lab, which refuses them
        expected = sent - dropped_for_size + kinds["unknown_device"] - kinds["absurd_heartbeat"]
        # absurd heartbeats of a device with a configured interval are accepted (the config's interval wins)
        deadline = time.monotonic() + 60
        while rejected_count(lab) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        client.publish(ev_topic.format("sa-1"), event("after-flood"))
        routed_after = client.arrived.wait(10)
        after = rss_kib(lab.pid)
        rejected = rejected_count(lab)
        client.close()
    print(
        f"flood: {sent} messages in {flood_s:.1f} s ({', '.join(f'{k} {v}' for k, v in kinds.items())}); "
        f"1 MB messages refused by the broker {dropped_for_size}, passed to the lab {passed_1mb}"
    )
    print(f"rejected ledger lines: {rejected} (expected {expected})")
    print(
        f"lab RSS idle {idle / 1024:.1f} MiB, peak {after['VmHWM'] / 1024:.1f} MiB, "
        f"after {after['VmRSS'] / 1024:.1f} MiB"
    )
    print(f"ratio peak/idle {after['VmHWM'] / idle:.2f}x, after/idle {after['VmRSS'] / idle:.2f}x")
    print(f"valid alarm after the flood routed: {'yes' if routed_after else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
