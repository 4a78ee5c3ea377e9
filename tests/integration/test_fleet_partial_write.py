"""A fleet device whose alarm does not fit in the socket's send buffer (a broker that reads slowly)
finishes writing it as soon as the broker reads again, not at its connection's next idle wake-up:
otherwise the wait was counted in the alarm's latency and charged to the platform (issue 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from helpers import ROOT, free_port, start_mosquitto
from lab_fixtures import require_mosquitto

from harness.lab.broker import find_mosquitto

IDLE_WAKE_S = 20.0  # the connection's housekeeping wake-up, long here so that waiting for it shows
PAYLOAD = 32 * 1024 * 1024  # more than loopback's socket buffers hold while the broker is frozen


def test_a_half_written_alarm_is_finished_when_the_broker_reads_again(tmp_path: Path) -> None:
    require_mosquitto()
    port = free_port()
    broker = start_mosquitto(str(find_mosquitto()), port, tmp_path)
    got = threading.Event()
    arrived: list[float] = []

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        arrived.append(time.monotonic())
        got.set()

    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="partial-observer")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("vtlab/partial/event", qos=1)
    sub.loop_start()
    device = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("fleet_publisher_under_gevent.py")),
            f"mqtt://127.0.0.1:{port}",
            str(IDLE_WAKE_S),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert device.stdin is not None and device.stdout is not None
        assert json.loads(device.stdout.readline()) == {"connected": True}
        time.sleep(0.3)  # the observer's subscription is in place
        broker.send_signal(signal.SIGSTOP)  # the broker reads nothing now
        device.stdin.write(f"publish {PAYLOAD}\n")
        device.stdin.flush()
        assert json.loads(device.stdout.readline()) == {"left_unwritten": True}, "the alarm fitted: no partial write"
        time.sleep(0.3)
        resumed = time.monotonic()
        broker.send_signal(signal.SIGCONT)
        assert got.wait(IDLE_WAKE_S * 2), "the alarm never reached the broker"
        took = arrived[0] - resumed
        # written as the socket drains: well under the idle wake-up it used to wait for
        assert took < IDLE_WAKE_S / 4, f"the rest of the alarm waited {took:.1f}s (idle wake-up {IDLE_WAKE_S}s)"
        device.stdin.write("close\n")
        device.stdin.flush()
        device.wait(10)
    finally:
        broker.send_signal(signal.SIGCONT)
        device.kill()
        sub.loop_stop()
        broker.kill()
        broker.wait(5)
