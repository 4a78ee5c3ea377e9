"""Reference lab: SCAIP -> DC-09 path p50 against the MQTT path p50, one lab, one run (issue 8: within a few ms).

    .venv/bin/python benchmarks/lab_protocol_latency.py [--count 200] [--rounds 3]

- mqtt: a paho device publishes a wire_json event -> broker -> lab router -> broker -> a paho centre;
  latency = time.monotonic_ns() just before publish() -> the centre's on_message.
- scaip->dc09: vtlab's ScaipDevice sends an `<mrq>` (SIP MESSAGE over UDP) to the lab's SCAIP receiver ->
  the lab re-encodes as ADM-CID with its own sequence number -> vtlab's DC09Receiver (TCP) as the centre;
  latency = the device's send stamp -> the centre's arrival stamp. Matched by the zone (dco).
One alarm in flight per path, paths interleaved per alarm (A B A B ...), all stamps on one monotonic clock
in this process. Percentiles exact (nearest rank). Prints one JSON line per round (both p50s and p99s and
the round's p50 difference) and a summary: the median over rounds of each path's p50 and of the per-round
difference, and the spread (min-max over rounds) of each, which is this machine's noise; exits 0.
Figures, before and after the profiling of issue 8, with the cause of each improvement: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from lab_fixtures import Peer

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.protocols.contact_id import ContactIdEvent
from harness.protocols.dc09 import Account, Decision
from harness.transports.dc09 import DC09Receiver
from harness.transports.loop import LoopThread
from harness.transports.sip import ScaipDevice


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    io = LoopThread("bench-peers")
    arrivals: dict[str, int] = {}
    cond = threading.Condition()

    def on_dc09(decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
        if isinstance(decision.content, ContactIdEvent):
            with cond:
                arrivals[decision.content.zone] = arrived_ns
                cond.notify_all()

    rx = DC09Receiver([Account("4711")], on_dc09, host="127.0.0.1", port=0)
    io.run(rx.start())
    config = LabConfig.model_validate(
        {
            "site": "b",
            "devices": {
                "sc-1": {"centre": "rc-dc", "scaip": {"cid": "4711"}},
                "mq-1": {"centre": "rc-mq"},
            },
            "centres": ["rc-dc", "rc-mq"],
            "delivery": {"rc-dc": {"via": "dc09", "address": f"127.0.0.1:{rx.port}", "accounts": {"sc-1": "4711"}}},
        }
    )
    with tempfile.TemporaryDirectory() as tmp, LabProcess(config, Path(tmp) / "lab") as lab:
        centre = Peer(lab.broker_url, subscribe=["vtlab/b/centre/rc-mq/alarm"], v5=True)
        device = Peer(lab.broker_url, v5=True)
        dev = ScaipDevice(lab.ingress["scaip"], transport="udp", cid="4711")
        io.run(dev.start())
        medians: dict[str, list[float]] = {"mqtt": [], "scaip_dc09": [], "difference": []}
        try:
            for rnd in range(args.rounds + 1):  # round 0 warms up, unmeasured
                lat: dict[str, list[float]] = {"mqtt": [], "scaip_dc09": []}
                for i in range(args.count):
                    n = len(centre.arrivals)
                    sent = device.publish(
                        "vtlab/b/device/mq-1/event",
                        {"v": 1, "cid": f"r{rnd}-{i}", "device": "mq-1", "event": "personal_emergency", "code": "101"},
                        wait=False,
                    )
                    got = centre.wait_for(lambda a, n=n: len(a) > n, 5.0)
                    lat["mqtt"].append((got[n].at_ns - sent) / 1e6)
                    zone = f"{i % 1000:03d}"
                    with cond:
                        arrivals.pop(zone, None)
                    result = io.run(dev.send(dev.mrq(stc="0010", dco=zone), mrs_timeout=None))
                    with cond:
                        assert cond.wait_for(lambda z=zone: z in arrivals, 5.0), "no DC-09 arrival"
                        lat["scaip_dc09"].append((arrivals[zone] - result.sent_ns) / 1e6)
                if rnd == 0:
                    continue
                line = {"round": rnd, "n": args.count}
                for path, xs in lat.items():
                    line[f"{path}_p50_ms"] = round(pct(xs, 50), 3)
                    line[f"{path}_p99_ms"] = round(pct(xs, 99), 3)
                    medians[path].append(pct(xs, 50))
                difference = pct(lat["scaip_dc09"], 50) - pct(lat["mqtt"], 50)
                line["difference_p50_ms"] = round(difference, 3)
                medians["difference"].append(difference)
                print(json.dumps(line), flush=True)
        finally:
            io.run(dev.close())
            centre.close()
            device.close()
    io.run(rx.stop())
    io.close()
    m = {p: statistics.median(v) for p, v in medians.items()}
    summary: dict[str, object] = {
        "summary": True,
        "rounds": args.rounds,
        "mqtt_p50_ms": round(m["mqtt"], 3),
        "scaip_dc09_p50_ms": round(m["scaip_dc09"], 3),
        "difference_ms": round(m["difference"], 3),
    }
    for path, xs in medians.items():  # the spread over rounds: how much this machine moves the figure
        summary[f"{path}_spread_ms"] = [round(min(xs), 3), round(max(xs), 3)]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
